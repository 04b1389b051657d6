"""The anomaly detector core: pure, vectorised functions over daily series (no ORM).

The core (``expected_range``) is a pure, vectorised function over daily series; the
service (``anomalies_detect``) reads a provider's daily totals through selectors, runs it
for the provider's total and for each of its services with material spend, and upserts
``Anomaly`` rows. ``anomaly_dismiss`` / ``anomaly_reopen`` are the review decisions.

The expected range of day *t* of a series (all statistics robust, so earlier anomalies
cannot drag the baseline upward: a spike is one sample among many, never the median):

* **Weekly seasonality + trend** (log space, so noise is multiplicative): the level now,
  ``median(y[t-7 … t-1])`` (a whole week), plus the weekday effect, the median over the
  previous 8 same weekdays of ``y[u] - median(y[u-3 … u+3])``. The level carries growth
  and follows a level shift within 4 days; the weekday effect is relative to the level
  of its own week, so neither trend nor a level shift biases it.
* **Band**: ``sigma`` = the 10%-trimmed standard deviation of week-over-week differences
  ``y[u] - y[u-7]`` over the previous 112 days (weekly pattern cancelled, spikes
  trimmed), ``/sqrt(2)``, floored at ``SIGMA_FLOOR`` (3%) and inflated by
  ``PREDICTION_INFLATION`` for the error of the baseline itself;
  ``upper = base*exp(k*sigma)``, ``lower = base*exp(-k*sigma)``, ``k`` = the policy's
  sensitivity (default 4.4).
* **Recurring day-of-month charges** (support plans, reservations billed on the 1st):
  for the same day of the month in each of the previous 3 months (the last day for a
  month's last day), the excess over that day's own same-weekday neighbours (±7, ±14
  days). When at least 2 of those months had a significant excess (above the band
  half-width), the day is a recurring-charge day: the median excess is added to the
  expectation and the band widened to the range of the excesses ±10%. A new recurring
  charge is therefore flagged on its first two billings and expected from its third
  (for days never synced among those months, see below).
* **Minimum history**: a day is judged only when its series has ``MIN_HISTORY_DAYS``
  (119 days, 17 weeks) of data before it — the 112-day noise window plus a week; days
  inside the provider's synced coverage without records count as zero spend.
* **Days never synced** (outside the provider's coverage and without records: a gap
  between sync windows, the days after the last sync) are missing (NaN), not zero: read
  as zero spend, a gap made the first days after it look anomalous (a baseline of
  zeros) and its zeros counted in the noise scale. Every statistic above is taken over
  the days present: a week's centred level only over a whole week (the weekday effect
  is relative to its own week), the level now over at least ``MIN_WEEK_PRESENT`` of the
  last 7 days, a recurring charge's neighbours over at least ``MIN_NEIGHBOURS_PRESENT``
  of 4, the material-spend mean over the days present. Where some of its usual samples
  are missing, a statistic looks further back for as many present ones, so the days
  after a gap are judged with the weekly pattern, noise and billings of the weeks before
  it rather than a window cut off at it: the weekday effect takes the 8 most recent same
  weekdays with an effect among the previous ``WEEKS_REACH`` (22, at least
  ``MIN_WEEKS_PRESENT``); the noise scale the 112 most recent week-over-week differences
  present among the previous ``SCALE_REACH`` days (161; 10% of them trimmed at each end,
  at least half of 112); a recurring charge the 3 most recent months with the day present
  among the previous ``RECURRING_REACH`` (5), and when only one of them is left (the
  others never synced) its significant excess alone makes the charge recurring. A day
  short of those, or missing itself, is not judged: after a gap of up to 14 weeks (98
  days) days are judged again from the fifth day after it, after a longer one from about
  the 64th (the noise scale is learnt again). Cut off at the gap, as they were, the
  statistics judged no day until about the 36th after a gap of four to seven weeks (too
  few same weekdays) and the 64th after a longer one (too few differences). Without
  missing days every statistic is exactly the plain one and looks no further back.

Dips are never anomalies: a day is anomalous only when ``actual > upper``, and it is
recorded only when its impact (``actual - expected``) and deviation percent reach the
organization's ``AnomalyPolicy`` minimums. A service is analysed on a day only when its
spend is material: mean daily spend over the previous 56 days of at least
``policy.material_daily_spend`` (default 5.00) and at least ``MATERIAL_SHARE`` (1%) of
the provider's mean daily total over the same days. Smaller services still count in the
provider total and in its ``top_services``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WEEKS = 8  # same-weekday samples of the baseline
MIN_HISTORY_DAYS = 119  # 17 weeks of data before a day can be judged
SCALE_DAYS = 112  # week-over-week differences the noise scale is measured on
SIGMA_FLOOR = 0.03  # even a flat series may move 3% a day without notice
PREDICTION_INFLATION = 1.2  # sqrt(1 + variance of the baseline's error / noise variance)
DEFAULT_SENSITIVITY = 4.4  # k: band half-width in noise standard deviations
RECURRING_MONTHS = 3
RECURRING_MIN_MONTHS = 2
RECURRING_TOLERANCE = 0.10
MATERIAL_DAYS = 56
MATERIAL_SHARE = 0.01
TOP_SERVICES = 5
# Days present that a statistic needs where the rest of its window was never synced.
MIN_WEEK_PRESENT = 4  # of the last 7 days, for the level now
MIN_WEEKS_PRESENT = 4  # of the 8 same weekdays, for the weekday effect
MIN_NEIGHBOURS_PRESENT = 2  # of the 4 same-weekday neighbours of a recurring charge
# How far back a statistic looks past days never synced for its usual number of samples
# (fully synced, those are the most recent ones and it looks no further). After a gap of
# up to 14 weeks the days after it have the weekday effect, noise scale and recurring
# charges of the weeks before it from the fifth day; cut off at the gap, a two-month gap
# left no day judged for 63 days (docs/benchmarks.md, "sync gaps").
WEEKS_REACH = 22  # same weekdays back, for the 8 most recent with a weekday effect
SCALE_REACH = 161  # days back, for the 112 most recent week-over-week differences
RECURRING_REACH = 5  # months back, for the 3 most recent with the day present
# Days read before the detection window: the furthest back a statistic of a day reaches
# (the noise scale: 161 days and the week before them; the weekday effect: 22 weeks back
# from the level's first day, plus 3 for that week's centred level: 164; a recurring
# charge: up to 153 days back, plus 14 for its neighbours: 167; the minimum history: 119).
# A changed day shapes the days up to this far after it (costs.services.jobs).
HISTORY_DAYS = SCALE_REACH + 7

_TRIM = 0.10
_TRIMMED_STD = 0.6616  # std of a standard normal trimmed by 10% at each end
_EPS_MIN = 0.01


# --------------------------------------------------------------------------------------
# The pure core
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bands:
    """Per-day expectation of each series (shape ``(series, days)``); NaN where the day
    could not be judged (not enough history, or the day itself missing)."""

    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @property
    def evaluated(self) -> np.ndarray:
        return np.isfinite(self.upper)


def _previous_month_indices(
    start: date, n: int, months: int, *, billed_on: int | None = None
) -> np.ndarray:
    """``idx[m-1, t]``: index of the same day of the month ``m`` months before day ``t``
    (the last day when the day does not exist); -1 when before the series. For ``t`` a
    month's last day: by default the last day of the month before, or, with
    ``billed_on`` (28-31), the day a charge billed on that day of the month landed on
    (the 30th lands on a 31-day month's 30th and on February's last day)."""
    days = np.datetime64(start, "D") + np.arange(n)
    month = days.astype("datetime64[M]")
    dom = (days - month).astype(int)  # 0-based day of month
    is_last = (days + 1).astype("datetime64[M]") != month
    idx = np.full((months, n), -1, dtype=np.int64)
    for m in range(1, months + 1):
        prev_month = month - m
        prev_len = ((prev_month + 1).astype("datetime64[D]") - prev_month.astype("datetime64[D]")).astype(int)
        if billed_on is None:
            prev_dom = np.where(is_last, prev_len - 1, np.minimum(dom, prev_len - 1))
        else:
            landed = np.minimum(billed_on, prev_len) - 1
            prev_dom = np.where(is_last & (dom < billed_on), landed, np.minimum(dom, prev_len - 1))
        target = (prev_month.astype("datetime64[D]") + prev_dom - days[0]).astype(np.int64)
        idx[m - 1] = np.where(target >= 0, target, -1)
    return idx


def expected_range(
    values, start: date, *, sensitivity: float = DEFAULT_SENSITIVITY
) -> Bands:
    """Expected value and band of every day of one or many daily series.

    ``values``: shape ``(days,)`` or ``(series, days)``, consecutive days from ``start``
    (zero for a day without spend, NaN for a day never synced). Only days before ``t``
    shape the range of day ``t``. Vectorised over series and days; no Python loop over
    either."""
    x = np.atleast_2d(np.asarray(values, dtype=float))
    m, n = x.shape
    nan = np.full((m, n), np.nan)
    if n <= MIN_HISTORY_DAYS:
        return Bands(nan, nan.copy(), nan.copy())

    positive = np.where(x > 0, x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        typical = np.nan_to_num(np.nanmedian(positive, axis=1), nan=0.0)
    eps = np.maximum(_EPS_MIN, 1e-3 * typical)[:, None]
    y = np.log(np.maximum(x, 0.0) + eps)

    t = np.arange(MIN_HISTORY_DAYS, n)  # the days that can be judged
    # Level: median of a whole week (centred for the past, the last 7 days for now).
    level = np.full((m, n), np.nan)
    level[:, 3 : n - 3] = _median(sliding_window_view(y, 7, axis=1), min_present=7)
    weekday_effect = y - level
    # The weekday effect of day u: the median of the previous 8 same weekdays' effects.
    season = np.full((m, n), np.nan)
    u = np.arange(7 * WEEKS + 3, n)
    season[:, u] = _weekday_effect(weekday_effect, u)
    # The level now: median of the last 7 days without their weekday effects, so a dip
    # or a spike is one sample of seven equals (not a weekday among weekends).
    now = _median(sliding_window_view(y - season, 7, axis=1)[:, t - 7], min_present=MIN_WEEK_PRESENT)
    base_log = now + season[:, t]

    sigma = _noise_scale(y, t) * PREDICTION_INFLATION
    half = sensitivity * sigma
    base = np.exp(base_log) - eps
    base_upper = np.exp(base_log + half) - eps
    base_lower = np.maximum(np.exp(base_log - half) - eps, 0.0)

    extra, extra_lo, extra_hi = _recurring(x, y, eps, start, t, half)
    expected, lower, upper = nan.copy(), nan.copy(), nan.copy()
    expected[:, t] = np.maximum(base, 0.0) + extra
    lower[:, t] = base_lower + extra_lo
    upper[:, t] = base_upper + extra_hi
    missing = np.isnan(x)
    if missing.any():  # a day that was never synced is not judged
        for band in (expected, lower, upper):
            band[missing] = np.nan
    return Bands(expected, lower, upper)


def _weekday_effect(effect: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The weekday effect of each day ``u``: the median of the effects of the previous
    ``WEEKS`` same weekdays or, where some of them are missing, of the ``WEEKS`` most
    recent present among the previous ``WEEKS_REACH`` (at least ``MIN_WEEKS_PRESENT``)."""
    back = u[:, None] - 7 * np.arange(1, WEEKS_REACH + 1)
    recent = effect[:, back[:, :WEEKS]]
    if not np.isnan(recent).any():
        return np.median(recent, axis=-1)
    samples = np.where(back >= 0, effect[:, np.maximum(back, 0)], np.nan)
    present = ~np.isnan(samples)
    samples[np.cumsum(present, axis=-1, dtype=np.int16) > WEEKS] = np.nan  # older than the WEEKS most recent
    return _median(samples, min_present=MIN_WEEKS_PRESENT)


def _median(windows: np.ndarray, *, min_present: int) -> np.ndarray:
    """Median over the last axis of the values present (NaN: a day never synced); NaN
    where fewer than ``min_present`` are. Without NaN, exactly ``np.median``."""
    if not np.isnan(windows).any():
        return np.median(windows, axis=-1)
    ordered = np.sort(windows, axis=-1)  # NaN last
    present = np.count_nonzero(~np.isnan(ordered), axis=-1)
    low = np.take_along_axis(ordered, (np.maximum(present, 1) - 1)[..., None] // 2, axis=-1)
    high = np.take_along_axis(ordered, (present // 2)[..., None], axis=-1)
    return np.where(present >= min_present, (low[..., 0] + high[..., 0]) / 2, np.nan)


def _noise_scale(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Robust day-to-day noise (log space) before each day ``t``: the 10%-trimmed standard
    deviation of week-over-week differences over the previous ``SCALE_DAYS`` days (each
    spike appears in two differences; the trimming drops up to 8 at each end). A
    difference with a missing day is left out, and the ``SCALE_DAYS`` most recent present
    among the previous ``SCALE_REACH`` days are taken; NaN with under half of
    ``SCALE_DAYS`` present."""
    diffs = y[:, 7:] - y[:, :-7]  # diffs[u-7] = y[u] - y[u-7]
    if np.isnan(diffs).any():
        return np.maximum(_trimmed_spread_of_present(_recent_diffs(diffs, t)) / np.sqrt(2.0), SIGMA_FLOOR)
    windows = np.sort(sliding_window_view(diffs, SCALE_DAYS, axis=1)[:, t - 7 - SCALE_DAYS], axis=2)
    cut = int(SCALE_DAYS * _TRIM)
    central = windows[..., cut : SCALE_DAYS - cut]
    spread = central.std(axis=2) / _TRIMMED_STD
    return np.maximum(spread / np.sqrt(2.0), SIGMA_FLOOR)


def _recent_diffs(diffs: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each day ``t``, the ``SCALE_DAYS`` most recent differences present among the
    previous ``SCALE_REACH`` days, sorted (NaN for the rest, last)."""
    before = np.full((diffs.shape[0], SCALE_REACH - SCALE_DAYS), np.nan)  # before the series
    windows = sliding_window_view(np.concatenate([before, diffs], axis=1), SCALE_REACH, axis=1)
    windows = windows[:, t - 7 - SCALE_DAYS].copy()  # oldest first
    present = ~np.isnan(windows)
    newer = np.cumsum(present[..., ::-1], axis=-1, dtype=np.int16)[..., ::-1]  # present from here on
    windows[newer > SCALE_DAYS] = np.nan
    return np.sort(windows, axis=-1)[..., :SCALE_DAYS]  # at most SCALE_DAYS present, first


def _trimmed_spread_of_present(ordered: np.ndarray) -> np.ndarray:
    """``_noise_scale``'s trimmed spread of sorted windows (NaN last) over the values
    present, 10% of them trimmed at each end."""
    present = np.count_nonzero(~np.isnan(ordered), axis=-1)[..., None]
    cut = (present * _TRIM).astype(np.int64)
    rank = np.arange(ordered.shape[-1])
    central = (rank >= cut) & (rank < present - cut)
    kept = central.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(central, ordered, 0.0).sum(axis=-1) / kept
        deviation = np.where(central, ordered - mean[..., None], 0.0)
        spread = np.sqrt((deviation**2).sum(axis=-1) / kept) / _TRIMMED_STD
    return np.where(present[..., 0] >= SCALE_DAYS // 2, spread, np.nan)


def _recurring(x, y, eps, start: date, t: np.ndarray, half: np.ndarray):
    """The expected extra of recurring day-of-month charges for the judged days ``t``."""
    m, n = x.shape
    # Excess of each day over its same-weekday neighbours (u±7, u±14).
    local = np.full((m, n), np.nan)
    u = np.arange(14, n - 14)
    if len(u):
        neighbours = y[:, u[:, None] + np.array([-14, -7, 7, 14])]
        local[:, u] = np.exp(_median(neighbours, min_present=MIN_NEIGHBOURS_PRESENT)) - eps
    excess = x - local
    # A month's last day may carry a charge billed at month end, or one billed on the
    # 28th-30th (which lands on a shorter month's last day): each reading is tried, and
    # the first that finds the charge in earlier months gives the expected extra.
    months = RECURRING_REACH if np.isnan(x).any() else RECURRING_MONTHS  # fully synced: 3
    readings = [
        _recurring_by(excess, local, half, _previous_month_indices(
            start, n, months, billed_on=billed_on)[:, t])
        for billed_on in (None, 28, 29, 30)
    ]
    _, *parts = readings[-1]
    for found, *found_parts in reversed(readings[:-1]):
        parts = [np.where(found, a, b) for a, b in zip(found_parts, parts, strict=True)]
    return tuple(parts)


def _recurring_by(excess, local, half, idx):
    """(recurring, extra, extra_lo, extra_hi) of the judged days whose earlier months are
    at ``idx`` (most recent first): the ``RECURRING_MONTHS`` most recent with an excess
    (the day and its neighbours present) count. A charge is recurring when at least
    ``RECURRING_MIN_MONTHS`` of them had a significant excess, or, when fewer were present
    (the others never synced), the one present had."""
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    past_excess = np.where(valid[None], excess[:, safe], np.nan)  # (m, months, T)
    present = np.isfinite(past_excess)
    counted = present & (np.cumsum(present, axis=1) <= RECURRING_MONTHS)
    past_excess = np.where(counted, past_excess, np.nan)
    past_local = np.where(counted, local[:, safe], np.nan)
    threshold = np.maximum(past_local, 0.0) * (np.exp(half[:, None, :]) - 1.0) + _EPS_MIN
    significant = np.nan_to_num(past_excess) > threshold
    available = counted.sum(axis=1)
    needed = np.clip(available, 1, RECURRING_MIN_MONTHS)
    recurring = significant.sum(axis=1) >= needed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        typical = np.nanmedian(past_excess, axis=1)
    hi = np.max(np.where(significant, past_excess, -np.inf), axis=1)
    lo = np.min(np.where(significant, past_excess, np.inf), axis=1)
    extra = np.where(recurring, np.maximum(np.nan_to_num(typical), 0.0), 0.0)
    extra_hi = np.where(recurring, hi * (1 + RECURRING_TOLERANCE), 0.0)
    extra_lo = np.where(recurring, lo * (1 - RECURRING_TOLERANCE), 0.0)
    return recurring, extra, extra_lo, extra_hi


def material_mask(services: np.ndarray, total: np.ndarray, *, min_daily: float) -> np.ndarray:
    """``mask[s, t]``: service ``s`` had material spend before day ``t`` (mean daily spend
    over the days present among the previous ``MATERIAL_DAYS`` at least ``min_daily`` and
    at least ``MATERIAL_SHARE`` of the provider's mean daily total)."""
    services = np.atleast_2d(np.asarray(services, dtype=float))
    m, n = services.shape
    mask = np.zeros((m, n), dtype=bool)
    if n <= MATERIAL_DAYS:
        return mask
    mean = _trailing_mean(services)
    total_mean = _trailing_mean(np.atleast_2d(np.asarray(total, dtype=float)))
    with np.errstate(invalid="ignore"):
        mask[:, MATERIAL_DAYS:] = (mean >= min_daily) & (mean >= MATERIAL_SHARE * total_mean)
    return mask


def _trailing_mean(x: np.ndarray) -> np.ndarray:
    """Mean of the days present (not NaN) among the ``MATERIAL_DAYS`` before each day from
    the ``MATERIAL_DAYS``-th (NaN when none is)."""
    present = ~np.isnan(x)
    zero = np.zeros((x.shape[0], 1))
    cumulative = np.concatenate([zero, np.cumsum(np.where(present, x, 0.0), axis=1)], axis=1)
    counts = np.concatenate([zero, np.cumsum(present, axis=1)], axis=1)
    n = x.shape[1]
    with np.errstate(invalid="ignore"):
        return (cumulative[:, MATERIAL_DAYS:-1] - cumulative[:, : n - MATERIAL_DAYS]) / (
            counts[:, MATERIAL_DAYS:-1] - counts[:, : n - MATERIAL_DAYS]
        )


SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Thresholds:
    """Recording minimums and severity tiers (money in the series' currency, percent of
    the expected amount). A tier is reached when both its money and percent thresholds
    are; below the ``low`` tier (``min_impact``/``min_deviation``) nothing is recorded."""

    min_impact: float = 10.0
    min_deviation: float = 10.0
    medium_impact: float = 50.0
    medium_deviation: float = 20.0
    high_impact: float = 150.0
    high_deviation: float = 40.0
    critical_impact: float = 1000.0
    critical_deviation: float = 100.0
    material_daily_spend: float = 5.0
    sensitivity: float = DEFAULT_SENSITIVITY

    def tiers(self) -> list[tuple[float, float]]:
        return [
            (self.min_impact, self.min_deviation),
            (self.medium_impact, self.medium_deviation),
            (self.high_impact, self.high_deviation),
            (self.critical_impact, self.critical_deviation),
        ]


DEVIATION_CAP = 99999.9


def deviation_percent(actual, expected):
    """100*(actual - expected)/expected, capped (an expected zero gives the cap)."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    with np.errstate(all="ignore"):
        pct = np.where(expected > 0, 100.0 * (actual - expected) / expected, DEVIATION_CAP)
    return np.minimum(pct, DEVIATION_CAP)


def severity_levels(actual, bands_expected, upper, thresholds: Thresholds) -> np.ndarray:
    """-1 where the day is not an anomaly to record, else the index into ``SEVERITIES``."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(bands_expected, dtype=float)
    upper = np.asarray(upper, dtype=float)
    impact = actual - expected
    pct = deviation_percent(actual, expected)
    with np.errstate(invalid="ignore"):
        above = np.isfinite(upper) & (actual > upper)
    level = np.full(actual.shape, -1, dtype=np.int64)
    reached = above
    for index, (money, percent) in enumerate(thresholds.tiers()):
        reached = reached & (impact >= money) & (pct >= percent)  # each tier includes those below
        level = np.where(reached, index, level)
    return level


@dataclass(frozen=True)
class Finding:
    """One day of one series to record as an anomaly (service "" for the total)."""

    service: str
    index: int
    actual: float
    expected: float
    lower: float
    upper: float
    severity: str
    top_services: list = field(default_factory=list)


def detect_arrays(
    *,
    start: date,
    total: np.ndarray,
    services: dict[str, np.ndarray],
    window: tuple[int, int],
    thresholds: Thresholds,
) -> list[Finding]:
    """The anomalies of one provider in days ``window[0] .. window[1]`` (indices into the
    series that start on ``start``): the provider total and every material service.
    Pure: the service and the benchmark share it."""
    names = list(services)
    total = np.asarray(total, dtype=float)
    matrix = np.vstack([total[None, :]] + [np.asarray(services[s], float)[None, :] for s in names])
    bands = expected_range(matrix, start, sensitivity=thresholds.sensitivity)
    levels = severity_levels(matrix, bands.expected, bands.upper, thresholds)
    lo, hi = window
    in_window = np.zeros(matrix.shape[1], dtype=bool)
    in_window[max(lo, 0) : hi + 1] = True
    levels[:, ~in_window] = -1
    if names:
        material = material_mask(matrix[1:], total, min_daily=thresholds.material_daily_spend)
        levels[1:][~material] = -1

    findings = []
    for row, index in zip(*np.nonzero(levels >= 0), strict=True):
        top = _top_services(names, matrix[1:, index], bands.expected[1:, index]) if row == 0 else []
        findings.append(
            Finding(
                service="" if row == 0 else names[row - 1],
                index=int(index),
                actual=float(matrix[row, index]),
                expected=float(bands.expected[row, index]),
                lower=float(bands.lower[row, index]),
                upper=float(bands.upper[row, index]),
                severity=SEVERITIES[levels[row, index]],
                top_services=top,
            )
        )
    return findings


def _top_services(names: list[str], actual: np.ndarray, expected: np.ndarray) -> list[dict]:
    """The services that were most above their own expectation on a provider anomaly
    (a service without an expectation yet, e.g. a new one, counts with all its spend)."""
    excess = actual - np.where(np.isfinite(expected), expected, 0.0)
    order = np.argsort(-excess)[:TOP_SERVICES]
    return [
        {
            "service": names[i],
            "amount": round(float(actual[i]), 2),
            "vs_expected": round(float(excess[i]), 2),
        }
        for i in order
        if excess[i] > 0.005
    ]
