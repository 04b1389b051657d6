"""Anomaly detection benchmark: labelled scenarios from the demo generator, scored.

    .venv/bin/python bench/anomalies.py [--seeds 1 2 3 4 5] [--speed-series 1000]
    .venv/bin/python bench/anomalies.py --gap-diagnostic 30 [--gap-growth]

Each scenario type is generated at several seeds with ``costs.demo.generate`` (no random
spikes of its own), aggregated to daily series per (provider, service), and labelled
events are injected on top. The detector (``costs.services.anomalies.detect_arrays``,
the same code the service runs) judges every day from the 120th on with the default
thresholds. Scoring is per event:

* a spike is one (series, day); it is found when that day is flagged;
* a level shift is found when its first day is flagged; flags in its first 14 days are
  the event, not false positives (the baseline needs about a week to follow a new level);
* a provider total carrying an injected service event is labelled positive when the
  extra is at least 30% of that day's total and ignored otherwise; the services under a
  provider-total spike are ignored that day (the total is what is scored);
* every other flag is a false positive.

"sync gaps" (days a provider never synced, NaN) is scored by the same rules and printed
after "all", outside it: "all" stays comparable with earlier runs, whose series were all
fully synced, and a spike the detector cannot judge yet after a long gap is a miss.
``--gap-diagnostic N`` runs only that scenario, on seeds 1..N, twice: with its gaps and
with the gaps' days filled in (what the missing days cost), by gap length, and lists
every false positive; ``--gap-growth`` gives its providers the demo's growth.

Then the speed run: the pure detector over N service series of 400 days.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infraaudit.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")

import django  # noqa: E402

django.setup()

from costs import demo  # noqa: E402
from costs.services.anomalies import (  # noqa: E402
    MIN_HISTORY_DAYS,
    Thresholds,
    detect_arrays,
    expected_range,
)

DAYS = 400
END = date(2024, 6, 30)
SHIFT_WINDOW = 14
TOTAL_SHARE = 0.30
SERVICE_SPIKES = (1.5, 2.0, 3.0, 5.0)
TOTAL_SPIKES = (1.3, 1.5, 2.0, 3.0)
SHIFTS = (1.5, 2.0, 3.0)
GAP_LENGTHS = (5, 20, 60)
GAP_SPIKE = 3.0
GAP_SPIKE_AFTER = (7, 14)  # the spike falls on one of these days after the gap (1 = the first)
GAP_JUDGED_AFTER = 100  # days after a gap left in the series (over 14 weeks: judged from ~64)
TOTAL = ""


@dataclass
class Scenario:
    start: date
    # provider -> {"": total, service: series}
    series: dict[str, dict[str, np.ndarray]]
    # (provider, series, first day index, last day index of the event window)
    events: list[tuple[str, str, int, int]] = field(default_factory=list)
    ignored: set[tuple[str, str, int]] = field(default_factory=set)
    # provider -> (first, last) day index of its never-synced gap (sync gaps only)
    gaps: dict[str, tuple[int, int]] = field(default_factory=dict)


def _series(dataset: demo.DemoDataset) -> dict[str, dict[str, np.ndarray]]:
    n = (dataset.end - dataset.start).days + 1
    out: dict[str, dict[str, np.ndarray]] = {}
    for row in dataset.rows:
        services = out.setdefault(row.provider, {TOTAL: np.zeros(n)})
        values = services.setdefault(row.service, np.zeros(n))
        index = (row.day - dataset.start).days
        amount = float(row.billed)
        values[index] += amount
        services[TOTAL][index] += amount
    return out


def _generate(seed: int, providers=demo.DEFAULT_PROVIDERS) -> Scenario:
    dataset = demo.generate(seed=seed, end=END, days=DAYS, providers=providers, spikes=0)
    return Scenario(start=dataset.start, series=_series(dataset))


def _usage_services(scenario: Scenario, min_mean: float = 10.0) -> list[tuple[str, str]]:
    """(provider, service) pairs with material daily usage (not monthly charges)."""
    pairs = []
    for provider, services in scenario.series.items():
        for name, values in services.items():
            if name == TOTAL:
                continue
            if np.count_nonzero(values) > len(values) * 0.9 and values.mean() >= min_mean:
                pairs.append((provider, name))
    return sorted(pairs)


def _event_day(rng: random.Random) -> int:
    return rng.randrange(MIN_HISTORY_DAYS + 14, DAYS - 1)


def _label_total(scenario, provider, first, last, extra_on_first):
    total = scenario.series[provider][TOTAL]
    before = total[first] - extra_on_first
    if extra_on_first >= TOTAL_SHARE * before:
        scenario.events.append((provider, TOTAL, first, last))
    else:
        for day in range(first, last + 1):
            scenario.ignored.add((provider, TOTAL, day))


def scenario_service_spikes(seed: int) -> Scenario:
    scenario = _generate(seed)
    rng = random.Random(seed * 7919)
    pairs = _usage_services(scenario)
    for i in range(12):
        provider, service = rng.choice(pairs)
        day = _event_day(rng)
        factor = SERVICE_SPIKES[i % len(SERVICE_SPIKES)]
        values = scenario.series[provider][service]
        extra = values[day] * (factor - 1)
        values[day] += extra
        scenario.series[provider][TOTAL][day] += extra
        scenario.events.append((provider, service, day, day))
        _label_total(scenario, provider, day, day, extra)
    return scenario


def scenario_total_spikes(seed: int) -> Scenario:
    scenario = _generate(seed)
    rng = random.Random(seed * 104729)
    providers = sorted(scenario.series)
    for i in range(9):
        provider = rng.choice(providers)
        day = _event_day(rng)
        factor = TOTAL_SPIKES[i % len(TOTAL_SPIKES)]
        services = scenario.series[provider]
        extra_total = 0.0
        for name, values in services.items():
            if name == TOTAL or np.count_nonzero(values) < len(values) * 0.9:
                continue  # monthly charges are not usage
            extra = values[day] * (factor - 1)
            values[day] += extra
            extra_total += extra
            scenario.ignored.add((provider, name, day))
        services[TOTAL][day] += extra_total
        scenario.events.append((provider, TOTAL, day, day))
    return scenario


def scenario_level_shifts(seed: int) -> Scenario:
    scenario = _generate(seed)
    rng = random.Random(seed * 15485863)
    pairs = _usage_services(scenario)
    rng.shuffle(pairs)
    for i, (provider, service) in enumerate(pairs[:6]):
        day = rng.randrange(MIN_HISTORY_DAYS + 14, DAYS - SHIFT_WINDOW)
        factor = SHIFTS[i % len(SHIFTS)]
        values = scenario.series[provider][service]
        extra = values[day:] * (factor - 1)
        values[day:] += extra
        scenario.series[provider][TOTAL][day:] += extra
        last = day + SHIFT_WINDOW - 1
        scenario.events.append((provider, service, day, last))
        _label_total(scenario, provider, day, last, extra[0])
    return scenario


def _with_services(transform) -> tuple[demo.ProviderSpec, ...]:
    return tuple(
        replace(p, services=tuple(transform(p, s) for s in p.services)) for p in demo.DEFAULT_PROVIDERS
    )


def scenario_weekly(seed: int) -> Scenario:
    """Strong weekly patterns: quiet weekends (x0.25) and weekend-heavy batch services (x2)."""
    rng = random.Random(seed)

    def weekly(_provider, spec):
        if spec.monthly_charge:
            return spec
        return replace(spec, weekend_factor=rng.choice((0.25, 0.4, 1.8, 2.0)))

    return _generate(seed, _with_services(weekly))


def scenario_month_start(seed: int) -> Scenario:
    """Many recurring charges on the 1st, some larger than a whole day of usage."""
    providers = tuple(
        replace(
            p,
            services=(
                *p.services,
                demo.ServiceSpec("Marketplace subscription", ("global",), 0.0, monthly_charge=3200.0),
                demo.ServiceSpec("Reserved capacity", ("global",), 0.0, monthly_charge=750.0),
                demo.ServiceSpec("Premium support", ("global",), 0.0, monthly_charge=120.0),
            ),
        )
        for p in demo.DEFAULT_PROVIDERS
    )
    return _generate(seed, providers)


def scenario_growth(seed: int) -> Scenario:
    """Fast growth: 150% to 300% a year on every usage service."""
    rng = random.Random(seed)

    def grow(_provider, spec):
        if spec.monthly_charge:
            return spec
        return replace(spec, growth_per_year=rng.uniform(1.5, 3.0))

    return _generate(seed, _with_services(grow))


def scenario_noisy_small(seed: int) -> Scenario:
    """Small services with heavy noise (log-normal sigma 0.3 to 0.5, $1 to $12 a day)."""
    rng = random.Random(seed)
    providers = tuple(
        replace(
            p,
            services=(
                *p.services,
                *(
                    demo.ServiceSpec(
                        f"Small service {i}", ("global",), rng.uniform(1.0, 12.0),
                        rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.5), rng.uniform(0.3, 0.5),
                    )
                    for i in range(8)
                ),
            ),
        )
        for p in demo.DEFAULT_PROVIDERS
    )
    return _generate(seed, providers)


def scenario_sync_gaps(seed: int, *, filled: bool = False, growth: bool = False) -> Scenario:
    """Days a provider never synced: every provider at a steady level (no growth), twice,
    each copy with its own gap of 5, 20 or 60 days (by provider and seed) in all of its
    series, NaN as ``provider_series`` makes them. One copy has nothing else; the other a
    3x spike on one of its usage services 7 to 14 days after the gap. Any other flag (the
    days after the gap, a charge on the 1st whose earlier months fell in the gap) is a
    false positive. ``filled``: the same series and events with the gaps' days left in
    (the control); ``growth``: the demo's own growth (5-60% a year) instead of none."""
    if growth:
        steady = _generate(seed)
    else:
        steady = _generate(seed, _with_services(lambda _p, spec: replace(spec, growth_per_year=0.0)))
    rng = random.Random(seed * 32452843)
    scenario = Scenario(start=steady.start, series={})
    usage = _usage_services(steady)
    for number, (provider, services) in enumerate(sorted(steady.series.items())):
        length = GAP_LENGTHS[(number + seed) % len(GAP_LENGTHS)]
        for spiked in (False, True):
            name = f"{provider}, {length}-day gap{' + spike' if spiked else ''}"
            series = {key: values.copy() for key, values in services.items()}
            first = rng.randrange(MIN_HISTORY_DAYS + 14, DAYS - length - GAP_JUDGED_AFTER)
            for values in series.values():
                if not filled:
                    values[first : first + length] = np.nan
            scenario.series[name] = series
            scenario.gaps[name] = (first, first + length - 1)
            if spiked:
                service = rng.choice([s for p, s in usage if p == provider])
                day = first + length - 1 + rng.randint(*GAP_SPIKE_AFTER)
                extra = series[service][day] * (GAP_SPIKE - 1)
                series[service][day] += extra
                series[TOTAL][day] += extra
                scenario.events.append((name, service, day, day))
                _label_total(scenario, name, day, day, extra)
    return scenario


def _gap_length_subsets(scenario: Scenario) -> dict[int, Scenario]:
    """``scenario_sync_gaps``'s providers grouped by the length of their gap."""
    subsets: dict[int, Scenario] = {}
    for length in GAP_LENGTHS:
        names = {name for name in scenario.series if f", {length}-day gap" in name}
        subsets[length] = Scenario(
            start=scenario.start,
            series={name: scenario.series[name] for name in names},
            events=[e for e in scenario.events if e[0] in names],
            ignored={i for i in scenario.ignored if i[0] in names},
            gaps={name: gap for name, gap in scenario.gaps.items() if name in names},
        )
    return subsets


SCENARIOS = {
    "service spikes": scenario_service_spikes,
    "provider-total spikes": scenario_total_spikes,
    "level shifts": scenario_level_shifts,
    "weekly seasonality": scenario_weekly,
    "month-start charges": scenario_month_start,
    "growth": scenario_growth,
    "noisy small services": scenario_noisy_small,
}
GAP_SCENARIO = "sync gaps"


@dataclass
class Score:
    flags: int = 0
    true_flags: int = 0
    false_positives: int = 0
    events: int = 0
    found: int = 0
    series: int = 0
    days_judged: int = 0
    # (provider, series, day index, actual, upper) of each false positive
    false_flags: list = field(default_factory=list)


def score(scenario: Scenario, thresholds: Thresholds) -> Score:
    result = Score()
    windows: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for provider, name, first, last in scenario.events:
        windows.setdefault((provider, name), []).append((first, last))
    flagged: set[tuple[str, str, int]] = set()
    for provider, services in scenario.series.items():
        usage = {k: v for k, v in services.items() if k != TOTAL}
        findings = detect_arrays(
            start=scenario.start,
            total=services[TOTAL],
            services=usage,
            window=(MIN_HISTORY_DAYS, DAYS - 1),
            thresholds=thresholds,
        )
        result.series += len(services)
        result.days_judged += sum(
            int(np.count_nonzero(~np.isnan(values[MIN_HISTORY_DAYS:]))) for values in services.values()
        )
        for finding in findings:
            key = (provider, finding.service, finding.index)
            flagged.add(key)
            if key in scenario.ignored:
                continue
            result.flags += 1
            inside = any(
                first <= finding.index <= last
                for first, last in windows.get((provider, finding.service), [])
            )
            if inside:
                result.true_flags += 1
            else:
                result.false_positives += 1
                result.false_flags.append(
                    (provider, finding.service, finding.index, finding.actual, finding.upper)
                )
    for provider, name, first, _last in scenario.events:
        result.events += 1
        result.found += (provider, name, first) in flagged
    return result


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "—"


def _add(total: Score, part: Score) -> None:
    for attr in vars(total):
        setattr(total, attr, getattr(total, attr) + getattr(part, attr))


def _row(name: str, total: Score) -> str:
    return (
        f"| {name:<22} | {total.series:>6} | {total.events:>6} | {total.found:>5} | "
        f"{total.flags:>5} | {total.false_positives:>2} | "
        f"{_ratio(total.true_flags, total.flags):>9} | {_ratio(total.found, total.events):>6} |"
    )


def run_quality(seeds: list[int], thresholds: Thresholds) -> tuple[float, float]:
    print(
        f"Quality: {len(SCENARIOS)} scenario types x seeds {seeds}, {DAYS} days each "
        f"(and {GAP_SCENARIO}, outside all)\n"
    )
    header = f"| {'scenario':<22} | series | events | found | flags | FP | precision | recall |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    overall = Score()
    for name, build in SCENARIOS.items():
        total = Score()
        for seed in seeds:
            _add(total, score(build(seed), thresholds))
        _add(overall, total)
        print(_row(name, total))
    precision = overall.true_flags / overall.flags if overall.flags else 1.0
    recall = overall.found / overall.events if overall.events else 1.0
    print(
        f"| {'all':<22} | {overall.series:>6} | {overall.events:>6} | {overall.found:>5} | "
        f"{overall.flags:>5} | {overall.false_positives:>2} | {precision:>9.3f} | {recall:>6.3f} |"
    )
    gaps, by_length = Score(), {length: Score() for length in GAP_LENGTHS}
    for seed in seeds:
        for length, subset in _gap_length_subsets(scenario_sync_gaps(seed)).items():
            part = score(subset, thresholds)
            _add(by_length[length], part)
            _add(gaps, part)
    print(_row(GAP_SCENARIO, gaps))
    print(f"\n{overall.days_judged:,} series-days judged ({gaps.days_judged:,} with data in {GAP_SCENARIO}).")
    print(
        f"{GAP_SCENARIO} by gap length: "
        + "; ".join(
            f"{length} days: found {s.found}/{s.events}, {s.false_positives} FP"
            for length, s in by_length.items()
        )
    )
    return precision, recall


def run_gap_diagnostic(seeds: list[int], thresholds: Thresholds, *, growth: bool) -> None:
    """``sync gaps`` on many seeds, each with its gaps and with the gaps' days filled in:
    what the missing days cost (spikes missed, false positives), by gap length."""
    level = "the demo's growth" if growth else "steady level"
    print(f"Sync gaps diagnostic: seeds {seeds[0]}-{seeds[-1]} ({len(seeds)}), {level}\n")
    header = "| gap      | events | found, gaps | found, filled | FP, gaps | FP, filled |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    runs = {filled: {length: Score() for length in GAP_LENGTHS} for filled in (False, True)}
    gaps: dict[tuple[int, str], tuple[int, int]] = {}
    for seed in seeds:
        for filled in (False, True):
            scenario = scenario_sync_gaps(seed, filled=filled, growth=growth)
            gaps.update({(seed, name): gap for name, gap in scenario.gaps.items()})
            for length, subset in _gap_length_subsets(scenario).items():
                part = score(subset, thresholds)
                part.false_flags = [(seed, *flag) for flag in part.false_flags]
                _add(runs[filled][length], part)
    for length in (*GAP_LENGTHS, None):
        gapped, filled = (
            (by_length[length] if length else _sum(by_length.values()))
            for by_length in (runs[False], runs[True])
        )
        label = f"{length} days" if length else "all"
        print(
            f"| {label:<8} | {gapped.events:>6} | {gapped.found:>11} | {filled.found:>13} | "
            f"{gapped.false_positives:>8} | {filled.false_positives:>10} |"
        )
    for filled, by_length in runs.items():
        for flag in _sum(by_length.values()).false_flags:
            seed, provider, service, index, actual, upper = flag
            _first, last = gaps[(seed, provider)]
            print(
                f"FP{' (filled)' if filled else ''}: seed {seed}, {provider}, "
                f"{service or 'total'}, day {index - last} after the gap: {actual:.1f} > {upper:.1f}"
            )


def _sum(scores) -> Score:
    total = Score()
    for part in scores:
        _add(total, part)
    return total


def run_speed(series: int, days: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    start = END - timedelta(days=days - 1)
    t = np.arange(days)
    weekday = (np.datetime64(start) + t).astype("datetime64[D]").view("int64")
    weekend = ((weekday + 3) % 7) >= 5  # 1970-01-01 was a Thursday
    base = rng.uniform(5, 500, size=(series, 1))
    values = base * (1 + 0.3 * t / 365) * np.where(weekend, 0.75, 1.0) * np.exp(
        rng.normal(0, 0.08, size=(series, days))
    )
    started = time.perf_counter()
    bands = expected_range(values, start)
    elapsed = time.perf_counter() - started
    judged = int(bands.evaluated.sum())
    print(
        f"\nSpeed: expected_range over {series:,} series x {days} days "
        f"({judged:,} days judged): {elapsed:.2f} s"
    )
    # The same series through the full per-provider pipeline, 50 services per provider.
    started = time.perf_counter()
    for first in range(0, series, 50):
        block = values[first : first + 50]
        detect_arrays(
            start=start,
            total=block.sum(axis=0),
            services={f"s{i}": row for i, row in enumerate(block)},
            window=(0, days - 1),
            thresholds=Thresholds(),
        )
    pipeline = time.perf_counter() - started
    print(f"Speed: detect_arrays (providers of 50 services + their totals): {pipeline:.2f} s")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--speed-series", type=int, default=1000)
    parser.add_argument("--speed-days", type=int, default=400)
    parser.add_argument("--sensitivity", type=float, default=Thresholds().sensitivity)
    parser.add_argument(
        "--gap-diagnostic", type=int, metavar="SEEDS",
        help="only the sync gaps scenario on seeds 1..SEEDS, with and without its gaps",
    )
    parser.add_argument("--gap-growth", action="store_true", help="the diagnostic with growth")
    args = parser.parse_args()
    thresholds = Thresholds(sensitivity=args.sensitivity)
    if args.gap_diagnostic:
        run_gap_diagnostic(list(range(1, args.gap_diagnostic + 1)), thresholds, growth=args.gap_growth)
        return 0
    started = time.perf_counter()
    precision, recall = run_quality(args.seeds, thresholds)
    print(f"(quality run {time.perf_counter() - started:.1f} s)")
    run_speed(args.speed_series, args.speed_days)
    ok = precision >= 0.9 and recall >= 0.9
    print(f"\nTargets precision >= 0.9 and recall >= 0.9: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
