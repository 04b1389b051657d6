"""Rolling-origin backtests of the cost forecast against two baselines, and its speed.

    python manage.py backtest_forecast [--seeds 1 2 3] [--origins 30] [--spacing 10]
                                       [--offset 0] [--levels 0.8] [--tune] [--peyton PATH]
                                       [--jobs 2] [--skip-speed]

Datasets: the demo generator (``costs.demo``) at each seed, 1,100 days, forecast from
its (provider, service) components like the service does; and, when the file is there,
Prophet's Peyton Manning series (``../shared/data/wp-log-peyton-manning.csv``) turned
into a spend-like series with exp(y) (real data: yearly seasons, regime changes, gaps).

From each origin (the last one 90 + ``--offset`` days before the end, then every
``--spacing`` days back) the model sees only the days up to the origin, exactly as in production
(``fit_forecast`` with its own inner calibration backtests), and is scored on the next
30, 60 and 90 days, with two baselines on the same origins:

* seasonal naive: the last observed week repeated; 80% band from the spread of weekly
  differences, widening with each further week; the total's band adds the daily bounds;
* Koku's linear forecast: ordinary least squares on the last 30 days after dropping
  1.5 IQR outliers, 95% prediction band (clamped at 0); the total's band adds the daily
  bounds.

``--levels 0.8 0.95 0.99`` scores the model's and the seasonal naive's intervals at each
level from the same fits (rows "model, 95%"; Koku's band stays at its own 95%).

Columns: MAPE of daily amounts (days with spend), mean absolute error of the projected
total, empirical coverage of the daily bands and of the total's band (origins whose
holdout has no missing day), against each method's nominal level, each with its
binomial standard error sqrt(p (1 - p) / n). That SE treats the n origins (days) as
independent draws; neighbouring origins share most of their holdout and calibration
history, so the real uncertainty is larger. The total's coverage also gets a 90%
circular block bootstrap interval: the origins of each dataset resampled in runs of a
holdout's length (``block_bootstrap_interval``), still a lower bound on the uncertainty
(it only redraws the origins of the stretch that ran). The model's rows also give what
a perfectly specified model covers on the same origins (``perfect_model_coverage``:
mean and 5th-95th percentile of simulated runs), and each dataset the share of those
runs whose three 80% total cells all fall within 75-85%: a cell outside that range
says something about the model, one inside it does not, however far from the level.

Tuning mode (``--tune``): the candidate rules for choosing the calibration origins
(``TUNE_SHARES`` x ``TUNE_COUNTS`` of ``model._calibration_leads``, and session 2's
fixed leads) are compared on identical fits: each origin is fitted once with the union
of every candidate's calibration origins, and each candidate is scored with only its own
(``Calibration.only``), at the levels ``TUNE_LEVELS``. Same fits, so differences between
candidates are not random draws; the warm starts of the capped calibration fits follow
the union's order, which moves a forecast by well under 0.1%. One table: per candidate,
pooled demo and Peyton Manning coverage, cells outside level +-5 points and the mean
distance from the level. No baselines, no speed.

Speed (unless ``--skip-speed``; ``--origins 0`` runs only this part): the demo's three
providers with 730 days of history in this database, the first forecast of the
organization (fit and calibration, 3 times with the cache cleared) and cached
forecasts, through the service and through the HTTP API. Measure with the load average
under 0.5: on 2 cores, anything else running shows up directly in the first forecast.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from costs.demo import generate
from costs.services.forecast import model
from costs.services.forecast.calibration import (
    TotalSpread,
    conformal_between,
    conformal_position,
    normal_quantile,
)

HORIZONS = (30, 60, 90)
DEMO_DAYS = 1100
DEMO_END = date(2025, 6, 30)
PEYTON = Path(settings.BASE_DIR).parent / "shared" / "data" / "wp-log-peyton-manning.csv"
PEYTON_NAME = "Peyton Manning exp(y)"
LEVEL = 0.8
KOKU_LEVEL = 0.95
FIRST_REPEATS = 3
BOOTSTRAP_RESAMPLES = 4000
PERFECT_REPEATS = 1000

_DATASETS: dict[str, tuple[pd.Series, dict[str, pd.Series] | None]] = {}
_TUNING: list[bool] = []  # [True] in tuning mode (read by the forked workers)
_LEVELS: list[float] = [LEVEL]  # the report's interval levels (read by the workers)
TUNE_SHARES = (0.5, 0.55, 0.6, 0.65, 0.7)
TUNE_COUNTS = (9, 12, 14, 16)
TUNE_LEVELS = (0.8, 0.95)
# Session 5: the nearest origin 3 or 4 weeks back instead of 2 (a 14-day holdout's total
# says least about a 90-day one), for the shares around the production one.
TUNE_FIRST_SHARES = (0.55, 0.6, 0.65)
TUNE_FIRST_LEADS = (21, 28)
# Session 2's calibration origins: 12 in the last half year, for comparison.
SESSION_2_LEADS = (14, 28, 49, 70, 91, 119, 147, 182, 35, 105, 21, 63)


def tune_candidates(n: int) -> dict[str, list[int]]:
    """Each candidate rule's calibration origins for a history of ``n`` days."""
    rules = {
        "session 2: 12 in the last half year": [
            lead for lead in SESSION_2_LEADS if n - lead >= model.CALIBRATION_MIN_TRAIN_DAYS
        ]
    }
    for share in TUNE_SHARES:
        for count in TUNE_COUNTS:
            rules[f"share {share:.2f}, {count} origins"] = model._calibration_leads(
                n, count, share
            )
    for share in TUNE_FIRST_SHARES:
        for first in TUNE_FIRST_LEADS:
            rules[f"share {share:.2f}, 9 origins, first {first} days"] = (
                model._calibration_leads(n, 9, share, first)
            )
    return rules


# -- datasets ----------------------------------------------------------------------------


def demo_dataset(seed: int, days: int = DEMO_DAYS, end: date = DEMO_END):
    """The demo organization's daily total and its (provider, service) components."""
    dataset = generate(seed=seed, days=days, end=end)
    frame = pd.DataFrame(
        [(row.day, f"{row.provider}|{row.service}", float(row.billed)) for row in dataset.rows],
        columns=["day", "component", "amount"],
    )
    table = frame.pivot_table(index="day", columns="component", values="amount", aggfunc="sum")
    table.index = pd.DatetimeIndex(table.index)
    table = table.reindex(pd.date_range(dataset.start, dataset.end)).fillna(0.0)
    return table.sum(axis=1), {name: table[name] for name in table.columns}


def peyton_dataset(path: Path):
    try:
        frame = pd.read_csv(path, parse_dates=["ds"])
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise CommandError(f"--peyton {path}: not a Prophet example CSV with ds,y ({exc})") from None
    if "y" not in frame.columns:
        raise CommandError(f"--peyton {path}: not a Prophet example CSV with ds,y (no y column)")
    series = np.exp(frame.set_index("ds")["y"])
    return series.reindex(pd.date_range(series.index[0], series.index[-1])), None


# -- baselines ---------------------------------------------------------------------------


def _t_quantile(p: float, dof: int) -> float:
    """Student t quantile (Cornish-Fisher expansion around the normal; fine for dof > 5)."""
    z = normal_quantile(p)
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def seasonal_naive(history: pd.Series, horizon: int, level: float = LEVEL):
    """The last observed value of each weekday, repeated; normal band from the spread of
    the weekly differences, sd x sqrt(weeks ahead)."""
    observed = history.dropna()
    last = {day.weekday(): value for day, value in observed.iloc[-7:].items()}
    start = history.index[-1] + pd.Timedelta(days=1)
    days = pd.date_range(start, periods=horizon)
    point = np.array([last.get(day.weekday(), observed.iloc[-1]) for day in days])
    diffs = (history - history.shift(7)).iloc[-365:].dropna()
    sigma = float(diffs.std()) if len(diffs) > 1 else 0.0
    steps = np.arange(horizon) // 7 + 1
    half = normal_quantile(0.5 + level / 2) * sigma * np.sqrt(steps)
    lower, upper = np.clip(point - half, 0, None), point + half
    return point, lower, upper, lower.sum(), upper.sum()


def koku_linear(history: pd.Series, horizon: int, level: float = KOKU_LEVEL):
    """Koku's forecast: OLS on the last 30 days (1.5 IQR outliers dropped) with its
    prediction band, clamped at zero."""
    window = history.iloc[-30:]
    x = np.arange(len(window), dtype=float)[window.notna().to_numpy()]
    y = window.dropna().to_numpy()
    q1, q3 = np.percentile(y, [25, 75])
    keep = (y >= q1 - 1.5 * (q3 - q1)) & (y <= q3 + 1.5 * (q3 - q1))
    x, y = x[keep], y[keep]
    design = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = max(len(y) - 2, 1)
    s2 = float(np.sum((y - design @ beta) ** 2)) / dof
    future = np.column_stack([np.ones(horizon), np.arange(len(window), len(window) + horizon)])
    leverage = np.einsum("ij,jk,ik->i", future, np.linalg.pinv(design.T @ design), future)
    half = _t_quantile(0.5 + level / 2, dof) * np.sqrt(s2 * (1 + leverage))
    point = future @ beta
    lower, upper = np.clip(point - half, 0, None), np.clip(point + half, 0, None)
    return np.clip(point, 0, None), lower, upper, lower.sum(), upper.sum()


# -- backtest ----------------------------------------------------------------------------


def _label(method: str, level: float) -> str:
    return method if level == LEVEL else f"{method}, {level:.0%}"


def _score(actual: np.ndarray, point, lower, upper, total_low, total_high, level) -> dict:
    spend = np.isfinite(actual) & (actual > 0)
    out = {
        "level": level,
        "ape": list(np.abs(point[spend] - actual[spend]) / actual[spend]),
        "covered": list((actual[spend] >= lower[spend]) & (actual[spend] <= upper[spend])),
    }
    if np.isfinite(actual).all():
        total = actual.sum()
        out["total_error"] = abs(point.sum() - total) / total
        out["total_covered"] = bool(total_low <= total <= total_high)
    return out


def backtest_origin(task: tuple[str, str]) -> tuple[str, dict, float]:
    """One origin: the model (one fit answers every horizon) and both baselines."""
    name, origin = task
    series, components = _DATASETS[name]
    cut = pd.Timestamp(origin)
    history = series.loc[:cut]
    parts = {key: part.loc[:cut] for key, part in components.items()} if components else None
    started = time.perf_counter()
    if _TUNING:
        candidates = tune_candidates(len(model._as_series(history)))
        union = sorted({lead for leads in candidates.values() for lead in leads})
        fit = model.fit_forecast(history, components=parts, calibration_leads=union)
        fits = {
            (rule, level): replace(fit, calibration=fit.calibration.only(leads))
            for rule, leads in candidates.items()
            for level in TUNE_LEVELS
        }
    else:
        fit = model.fit_forecast(history, components=parts)
        fits = {(_label("model", level), level): fit for level in _LEVELS}
    elapsed = time.perf_counter() - started
    result: dict = {}
    for horizon in HORIZONS:
        actual = series.loc[cut + pd.Timedelta(days=1) : cut + pd.Timedelta(days=horizon)]
        actual = actual.to_numpy()
        result[horizon] = {}
        for (method, level), one in fits.items():
            ours = model.forecast_from_fit(one, horizon=horizon, level=level)
            score = _score(
                actual, ours.amount, ours.lower, ours.upper, ours.total_low, ours.total_high,
                level,
            )
            # Where the origin sits and its calibration leads: the perfect model's column.
            leads = tuple(int(lead) for lead in one.calibration.leads)
            score["origin"] = (series.index.get_loc(cut), leads)
            result[horizon][method if not _TUNING else (method, level)] = score
        if not _TUNING:
            for level in _LEVELS:
                result[horizon][_label("seasonal naive", level)] = _score(
                    actual, *seasonal_naive(history, horizon, level), level
                )
            result[horizon]["Koku linear"] = _score(
                actual, *koku_linear(history, horizon), KOKU_LEVEL
            )
    return name, result, elapsed


def _coverage(hits: list) -> str:
    """Coverage in percent with its binomial standard error in points."""
    p = float(np.mean(hits))
    return f"{100 * p:.1f}% ± {100 * np.sqrt(p * (1 - p) / len(hits)):.1f}"


def block_bootstrap_interval(
    hits: list, strata: list, block: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """The 90% interval (5th and 95th percentiles) of a coverage under a circular block
    bootstrap: within each stratum (a dataset; the pooled demo keeps its seeds apart),
    the origins' hits, in origin order, are resampled as runs of ``block`` consecutive
    origins, wrapping around at the end so that the first and last origins are drawn as
    often as the others (Politis and Romano's circular blocks). Origins closer than a
    holdout share most of their outcome days, so they hit or miss together: resampled
    one by one (what the binomial SE assumes) they show less spread than the data has.
    The blocks only resample the origins that ran: they say how much the coverage of
    this stretch of history depends on which of its origins were drawn, not how another
    stretch would come out (the origins of one stretch share their calibration years),
    so this too is a lower bound on the real uncertainty. A stratum no longer than one
    block contributes its coverage unchanged."""
    rng = np.random.default_rng(seed)
    hits_array, strata_array = np.asarray(hits, dtype=float), np.asarray(strata)
    covered = np.zeros(resamples)
    for stratum in dict.fromkeys(strata):  # in order of first appearance
        run = hits_array[strata_array == stratum]
        if len(run) <= block:
            covered += run.sum()
            continue
        starts = rng.integers(0, len(run), size=(resamples, math.ceil(len(run) / block)))
        index = (starts[:, :, None] + np.arange(block)).reshape(resamples, -1) % len(run)
        covered += run[index[:, : len(run)]].sum(axis=1)
    low, high = np.percentile(covered / len(hits_array), [5, 95])
    return float(low), float(high)


def longest_total(lead: int, horizon: int) -> int | None:
    """The longest backtest total ``model._calibrate`` scores for ``horizon`` from a
    calibration origin ``lead`` days back (None: it has none)."""
    reach = min(lead, model.HORIZON_MAX, horizon)
    lengths = {*range(model.TOTAL_SCORE_STEP, reach + 1, model.TOTAL_SCORE_STEP),
               *(length for length in model.HORIZONS if length <= reach)}
    return max(lengths, default=None)


def perfect_model_widths(ordered: np.ndarray, level: float) -> np.ndarray:
    """Per row of sorted scores, the total's half-width in units of its sd, as
    ``TotalSpread.log_half_width`` takes it (kappa 1, no level error): the
    split-conformal quantile, or past what the scores show, the largest grown as a
    Student t(2) tail."""
    count = ordered.shape[1]
    spread = TotalSpread(1.0, 0.0, ordered[0])
    if not spread.shows(level):
        return ordered[:, -1] * spread.tail_growth(level)
    i, share = conformal_position(np.arange(1.0, count + 1), level)
    if share == 0:
        return ordered[:, i]
    return conformal_between(ordered[:, i - 1], ordered[:, i], share)


def perfect_model_coverage(
    origins: dict[int, list], strata: dict[int, list], levels, repeats: int = PERFECT_REPEATS,
    seed: int = 0,
) -> dict[tuple[int, float], np.ndarray]:
    """Per (horizon, level), the total coverage of ``repeats`` simulated runs of these
    backtest origins with a perfectly specified model: every day's standardized log
    miss is an independent N(0, 1), so every total misses by N(0, 1) in units of its
    sd, with no level error, no change between years and no misfit. ``origins[h]`` are
    the origins scored at horizon h, each (position of its last day in its series, its
    calibration leads), and ``strata[h]`` their series. Each series is simulated once
    per run for every horizon, as a real run scores all horizons on the same days. Each
    origin scores its calibration origins on the totals production scores
    (``longest_total``, on the same simulated days, so overlapping holdouts miss
    together as they do in the real backtests), takes the width of
    ``perfect_model_widths`` and checks its own total. What a run of the real backtest
    can show when nothing is wrong with the model: how far one stretch of origins
    strays from the level (neighbours share outcomes and calibration origins), and
    where the method's own mean lies."""
    rng = np.random.default_rng(seed)
    hits: dict[tuple[int, float], list] = {}
    for stratum in dict.fromkeys(name for names in strata.values() for name in names):
        groups = {
            horizon: [
                origin
                for origin, name in zip(origins[horizon], strata[horizon], strict=True)
                if name == stratum
            ]
            for horizon in origins
        }
        for key, rows in _stretch_hits(rng, groups, levels, repeats).items():
            hits.setdefault(key, []).extend(rows)
    return {key: 100 * np.mean(np.column_stack(rows), axis=1) for key, rows in hits.items()}


def _stretch_hits(rng, groups: dict[int, list], levels, repeats: int) -> dict[tuple, list]:
    """``perfect_model_coverage`` of one series: per (horizon, level), each origin's
    hits in every simulated run."""
    scored = [(origin, horizon) for horizon, group in groups.items() for origin in group]
    if not scored:
        return {}
    first = min(position - max(leads, default=0) for (position, leads), _ in scored)
    days = max(position + horizon for (position, _), horizon in scored) - first + 1
    sums = np.zeros((repeats, days + 1))
    np.cumsum(rng.standard_normal((repeats, days)), axis=1, out=sums[:, 1:])

    def miss(start: int, length: int) -> np.ndarray:  # the days start, start + 1, ...
        begin = start - first
        return np.abs(sums[:, begin + length] - sums[:, begin]) / math.sqrt(length)

    hits: dict[tuple, list] = {}
    for (position, leads), horizon in scored:
        lengths = [(lead, longest_total(lead, horizon)) for lead in leads]
        lengths = [(lead, length) for lead, length in lengths if length]
        if not lengths:  # uncalibrated: not what this simulates
            continue
        ordered = np.sort(
            np.column_stack([miss(position + 1 - lead, length) for lead, length in lengths]),
            axis=1,
        )
        own = miss(position + 1, horizon)
        for level in levels:
            hits.setdefault((horizon, level), []).append(
                own <= perfect_model_widths(ordered, level)
            )
    return hits


def in_range_share(runs: dict[tuple[int, float], np.ndarray], level: float = LEVEL) -> float:
    """The share of simulated runs whose every horizon's ``level`` cell is within
    ``level`` +-5 points (the issue's 75-85% for 80%)."""
    cells = [coverage for (_, at), coverage in runs.items() if at == level]
    inside = np.all([np.abs(coverage - 100 * level) <= 5 for coverage in cells], axis=0)
    return 100 * float(np.mean(inside))


def _perfect_model_runs(by_horizon: dict) -> tuple[dict, dict]:
    """The simulated runs of a dataset's origins (``perfect_model_coverage``) and,
    per (horizon, method) of the model's rows, their mean and 5th-95th percentile."""
    origins, strata, levels = {}, {}, set()
    for horizon, methods in by_horizon.items():
        scored = [acc for acc in methods.values() if acc.get("origins")]
        if scored:  # every level of the model scores the same origins
            origins[horizon], strata[horizon] = scored[0]["origins"], scored[0]["strata"]
            levels |= {acc["level"] for acc in scored}
    if not origins:
        return {}, {}
    runs = perfect_model_coverage(origins, strata, sorted(levels))
    cells = {}
    for horizon, methods in by_horizon.items():
        for method, acc in methods.items():
            if acc.get("origins") and (horizon, acc["level"]) in runs:
                coverage = runs[horizon, acc["level"]]
                low, high = np.percentile(coverage, [5, 95])
                cells[horizon, method] = f"{coverage.mean():.1f}% ({low:.1f}-{high:.1f})"
    return runs, cells


def _table(rows: list[tuple[str, dict]], spacing: int) -> list[str]:
    """The report: one row per (dataset, horizon, method). The total's coverage carries
    its binomial SE and its block-bootstrap 90% interval (blocks of a holdout's length,
    ``ceil(horizon / spacing)`` origins; see ``block_bootstrap_interval``); the model's
    rows also the mean and the 5th-95th percentile of what a perfectly specified model
    covers on the same origins (``perfect_model_coverage``)."""
    lines = [
        "| dataset | horizon | method | daily MAPE | total error | daily coverage "
        "| total coverage | total coverage, block bootstrap 90% "
        "| perfect model's total coverage, mean (5-95%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    shares = []
    for name, by_horizon in rows:
        runs, perfect = _perfect_model_runs(by_horizon)
        if any(level == LEVEL for _, level in runs):
            shares.append(f"- {name}: {in_range_share(runs):.0f}%")
        for horizon in HORIZONS:
            for method, acc in by_horizon[horizon].items():
                nominal = f"{acc['level']:.0%}"
                low, high = block_bootstrap_interval(
                    acc["total_covered"], acc["strata"], math.ceil(horizon / spacing)
                )
                lines.append(
                    f"| {name} | {horizon} | {method} "
                    f"| {100 * np.mean(acc['ape']):.2f}% "
                    f"| {100 * np.mean(acc['total_error']):.2f}% "
                    f"| {_coverage(acc['covered'])} of {nominal} "
                    f"| {_coverage(acc['total_covered'])} of {nominal} "
                    f"(n={len(acc['total_covered'])}) "
                    f"| {100 * low:.1f}-{100 * high:.1f}% "
                    f"| {perfect.get((horizon, method), '-')} |"
                )
    if shares:
        lines += ["", f"Runs of a perfectly specified model on the same origins ({PERFECT_REPEATS}) "
                  f"whose {LEVEL:.0%} total cells all fall within {LEVEL:.0%} +-5 points:", *shares]
    return lines


def _tune_table(groups: dict[str, dict]) -> list[str]:
    """One row per (candidate, level): coverage of each dataset group, cells outside
    the level +-5 points and the mean distance from the level (daily and total, every
    group and horizon)."""
    header = " | ".join(
        f"{group} {kind} 30 / 60 / 90" for group in groups for kind in ("daily", "total")
    )
    lines = [f"| candidate | level | {header} | outside | distance |",
             "|---|---|" + "---|" * (2 * len(groups)) + "---|---|"]
    keys = next(iter(groups.values()))[HORIZONS[0]].keys()
    for rule, level in keys:
        cells, values = [], []
        for by_horizon in groups.values():
            for kind in ("covered", "total_covered"):
                row = [100 * float(np.mean(by_horizon[h][(rule, level)][kind])) for h in HORIZONS]
                values += row
                cells.append(" / ".join(f"{value:.1f}" for value in row))
        outside = sum(abs(value - 100 * level) > 5 for value in values)
        distance = float(np.mean([abs(value - 100 * level) for value in values]))
        lines.append(
            f"| {rule} | {level:.0%} | {' | '.join(cells)} | {outside} | {distance:.2f} |"
        )
    return lines


def _accumulate(target: dict, result: dict, stratum: str = "") -> None:
    """Add one origin's scores (``stratum``: its dataset, for the bootstrap)."""
    for horizon, methods in result.items():
        for method, score in methods.items():
            acc = target.setdefault(horizon, {}).setdefault(
                method,
                {"ape": [], "covered": [], "total_error": [], "total_covered": [], "strata": [],
                 "origins": []},
            )
            acc["level"] = score["level"]
            acc["ape"] += score["ape"]
            acc["covered"] += score["covered"]
            if "total_error" in score:
                acc["total_error"].append(score["total_error"])
                acc["total_covered"].append(score["total_covered"])
                acc["strata"].append(stratum)
                if "origin" in score:
                    acc["origins"].append(score["origin"])


# -- speed -------------------------------------------------------------------------------


def _speed_scope(stdout):
    """The demo's three providers with 730 days of history up to yesterday, in the
    database as a sync would leave them; returns (membership, providers by name)."""
    from accounts.models import Membership
    from accounts.services import membership_ensure
    from costs.models import CostRecord
    from costs.selectors import utc_today
    from providers.models import Provider

    membership = membership_ensure(
        org_name="bench-forecast", username="bench-forecast", role=Membership.Role.ADMIN
    )
    org = membership.organization
    dataset = generate(seed=7, days=730, end=utc_today() - timedelta(days=1))
    CostRecord.objects.filter(organization=org).delete()
    providers = {}
    for spec_name in sorted({row.provider for row in dataset.rows}):
        provider, _ = Provider.objects.update_or_create(
            organization=org, name=spec_name, defaults={"kind": Provider.Kind.FOCUS}
        )
        provider.coverage_start, provider.coverage_end = dataset.start, dataset.end
        provider.data_version += 1  # what a sync that writes these records does
        provider.save()
        providers[spec_name] = provider
    CostRecord.objects.bulk_create(
        (
            CostRecord(
                organization=org, provider=providers[row.provider], day=row.day,
                service=row.service, region=row.region, account=row.account,
                currency=row.currency, billed_amount=row.billed,
                effective_amount=row.effective,
            )
            for row in dataset.rows
        ),
        batch_size=5000,
    )
    stdout.write(f"speed: {len(dataset.rows)} records, 3 providers, 730 days of history")
    return membership, providers


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _first_forecasts(org) -> tuple[list[float], int]:
    """First forecasts of the organization (the cache cleared before each) and the
    Prophet fits one of them takes."""
    from django.core.cache import cache

    from costs.services.forecast import cost_forecast

    firsts, fits = [], 0
    for _ in range(FIRST_REPEATS):
        cache.clear()
        fits_before = model.FIT_COUNTER["fits"]
        firsts.append(_timed(lambda: cost_forecast(organization=org, days=30)))
        fits = model.FIT_COUNTER["fits"] - fits_before
    return firsts, fits


def _http_forecasts(membership) -> tuple[float, list[float]]:
    """The process's first (warm-up) request and 21 cached ones through the API."""
    from django.test import Client

    from accounts.services import api_key_create

    _, raw_key = api_key_create(membership=membership, name="bench")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}", HTTP_HOST="localhost")

    def get(days):
        response = client.get(f"/api/v1/costs/forecast?days={days}")
        assert response.status_code == 200, response.content

    warm_up = _timed(lambda: get(30))  # loads the URL conf and middleware
    return warm_up, [_timed(lambda d=days: get(d)) for days in (30, 60, 90) * 7]


def _speed(stdout) -> list[str]:
    """Speed rows: first and cached forecasts of a 2-year organization scope."""
    from costs.services.forecast import cost_forecast

    membership, providers = _speed_scope(stdout)
    org = membership.organization
    import_seconds = _timed(model._prophet_class)
    load = os.getloadavg()[0]
    firsts, fits = _first_forecasts(org)
    cached = [_timed(lambda d=days: cost_forecast(organization=org, days=d))
              for days in (30, 60, 90) * 7]
    warm_up, http = _http_forecasts(membership)
    one_provider = next(iter(providers.values()))
    first_provider = _timed(
        lambda: cost_forecast(organization=org, provider=one_provider, days=30)
    )
    return [
        "| measurement | time |",
        "|---|---|",
        f"| Prophet import and model load (once per process) | {import_seconds:.2f} s |",
        f"| first forecast, organization (3 providers, 730 days, {fits} Prophet fits), "
        f"median / max of {len(firsts)}, load average {load:.2f} at the start "
        f"| {statistics.median(firsts):.2f} s / {max(firsts):.2f} s "
        f"({', '.join(f'{t:.2f}' for t in firsts)}) |",
        f"| first forecast, one provider | {first_provider:.2f} s |",
        f"| cached forecast, service (median of {len(cached)}) "
        f"| {1000 * statistics.median(cached):.1f} ms |",
        f"| cached forecast, HTTP GET /api/v1/costs/forecast (median / max of {len(http)}) "
        f"| {1000 * statistics.median(http):.1f} ms / {1000 * max(http):.1f} ms |",
        f"| the process's first HTTP request (loads URL conf and middleware, cached fit) "
        f"| {1000 * warm_up:.1f} ms |",
    ]


# -- command -----------------------------------------------------------------------------


def _check_arguments(*, origins, spacing, offset, levels, jobs) -> None:
    problems = [
        f"--{name}: {rule}"
        for name, bad, rule in (
            ("origins", origins < 0, "must be 0 or more"),
            ("spacing", spacing < 1, "must be 1 or more (days between origins)"),
            ("offset", offset < 0, "must be 0 or more"),
            ("levels", any(not 0 < level < 1 for level in levels), "each between 0 and 1"),
            ("jobs", jobs < 1, "must be 1 or more"),
        )
        if bad
    ]
    if problems:
        raise CommandError("; ".join(problems))


class Command(BaseCommand):
    help = "Backtest the cost forecast against seasonal-naive and Koku's linear forecast."

    def add_arguments(self, parser):
        parser.add_argument(
            "--seeds", type=int, nargs="*", default=[1, 2, 3],
            help="demo generator seeds (none: only Peyton Manning)",
        )
        parser.add_argument("--origins", type=int, default=30, help="origins per dataset")
        parser.add_argument("--spacing", type=int, default=10, help="days between origins")
        parser.add_argument(
            "--offset", type=int, default=0, help="extra days between the last origin and the end"
        )
        parser.add_argument(
            "--levels", type=float, nargs="+", default=[LEVEL],
            help="interval levels to score (the same fits; default 0.8)",
        )
        parser.add_argument(
            "--tune", action="store_true",
            help="tuning mode: compare the candidate rules for the calibration origins",
        )
        parser.add_argument("--peyton", type=Path, default=PEYTON)
        parser.add_argument("--jobs", type=int, default=2)
        parser.add_argument("--skip-speed", action="store_true")

    def handle(self, *args, seeds, origins, spacing, offset, levels, tune, peyton, jobs,
               skip_speed, **options):
        _check_arguments(origins=origins, spacing=spacing, offset=offset, levels=levels,
                         jobs=jobs)
        started = time.perf_counter()
        _TUNING[:] = [True] if tune else []
        _LEVELS[:] = sorted(set(levels))
        for seed in seeds:
            _DATASETS[f"demo seed {seed}"] = demo_dataset(seed)
        if peyton.exists():
            _DATASETS[PEYTON_NAME] = peyton_dataset(peyton)
        else:
            self.stdout.write(f"{peyton} not found: skipping the Peyton Manning dataset")
        tasks = []
        for name, (series, _) in _DATASETS.items():
            last = series.index[-1] - pd.Timedelta(days=max(HORIZONS) + offset)
            tasks += [(name, str((last - pd.Timedelta(days=spacing * i)).date()))
                      for i in range(origins)]
        if tasks:
            self._backtests(tasks, jobs, seeds, spacing, started)
        if not skip_speed:
            self.stdout.write("\n" + "\n".join(_speed(self.stdout)))

    def _backtests(self, tasks, jobs, seeds, spacing, started):
        connections.close_all()  # the workers are forked and never touch the database
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(backtest_origin, tasks, chunksize=1)

        by_dataset: dict[str, dict] = {}
        pooled: dict = {}
        for name, result, _ in results:
            _accumulate(by_dataset.setdefault(name, {}), result, name)
            if name.startswith("demo"):
                _accumulate(pooled, result, name)
        fit_seconds = [elapsed for _, _, elapsed in results]
        if _TUNING:
            groups = {"demo": pooled} if pooled else {}
            if PEYTON_NAME in by_dataset:
                groups["Peyton"] = by_dataset[PEYTON_NAME]
            self.stdout.write("\n".join(_tune_table(groups)))
        else:
            rows = list(by_dataset.items())
            if len(seeds) > 1:
                rows.append(("demo, all seeds", pooled))
            self.stdout.write("\n".join(_table(rows, spacing)))
        self.stdout.write(
            f"\n{len(tasks)} origins, {jobs} processes, {time.perf_counter() - started:.0f} s; "
            f"one fit with its calibration backtests: median {statistics.median(fit_seconds):.2f} s"
        )
