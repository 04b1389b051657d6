"""How far a coverage cell can stray: a block bootstrap of the origins that ran, and
what a perfectly specified model covers on the same origins."""

from __future__ import annotations

import math

import numpy as np

from costs.backtests.baselines import LEVEL
from costs.services.forecast import model
from costs.services.forecast.calibration import (
    TotalSpread,
    conformal_between,
    conformal_position,
)

BOOTSTRAP_RESAMPLES = 4000
PERFECT_REPEATS = 1000


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


def perfect_model_runs(by_horizon: dict) -> tuple[dict, dict]:
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
