"""Cost forecasts whose intervals mean what they say.

The model, in the order it runs (``fit_forecast``):

1. Recurring charges that land on a fixed day of the month (support plans, reservation
   and subscription fees) are found per component series (a provider's service) and
   taken out of the history. They are forecast deterministically on that day of each
   future month, at their latest amount, instead of being smeared or read as spikes.
2. What remains (usage) is fitted with Prophet on ``log(usage + c)``: weekly
   seasonality, yearly when two years exist, linear growth in log space, so the
   forecast can never go below zero.
3. Future paths are simulated: Prophet's own trend draws (future changepoints) plus a
   block bootstrap of the in-sample residuals, which keeps their day-to-day correlation,
   so the total of a path varies as real totals do (not as a sum of independent days).
4. The width is calibrated on the scope's own history: the same procedure is re-run
   from up to 8 earlier origins (rolling-origin backtests), the real outcomes are scored
   against the simulated spread, and the empirical (split-conformal) quantiles of those
   scores set the daily and total intervals for the requested level. For totals, the
   backtests also fit a relative level error on top of the simulated variance (days
   average out over a horizon, a level that is off does not).

The result of steps 1-4 does not depend on the horizon or the level, so one fit (cached
per scope and data version) answers 30, 60 and 90 days at any level
(``forecast_from_fit``). ``cost_forecast`` is the Django entry point: it reads daily
totals through the selectors, applies the history rules and caches.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

HORIZON_MAX = 90
HORIZONS = (30, 60, 90)
MIN_HISTORY_DAYS = 14
TRAIN_WINDOW_DAYS = 3 * 365
YEARLY_MIN_DAYS = 730  # two years of days (first to last inclusive)
SIMULATIONS = 300
BLOCK_DAYS = 7
RESIDUAL_WINDOW_DAYS = 365
# Origins of the calibration backtests, in days before the last complete day.
CALIBRATION_LEADS = (14, 28, 49, 70, 91, 119, 147, 182)
SHORT_CALIBRATION_LEADS = (7, 14, 21, 28)
CALIBRATION_MIN_TRAIN_DAYS = 28
CALIBRATION_MIN_ORIGINS = 2
TOTAL_SCORE_STEP = 7
# Without backtests (under ~6 weeks of history) the simulated spread is widened by this
# fixed factor: raw simulated paths are too narrow in every backtest we ran.
UNCALIBRATED_SCALE = 1.5
# Chosen by the backtests in docs/benchmarks.md: a stiff trend (few changepoints) beats
# a flexible one on daily spend, where short swings are noise, not new growth.
PROPHET_PARAMS = {"changepoint_prior_scale": 0.01, "changepoint_range": 0.9}


# --------------------------------------------------------------------------------------
# Recurring fixed-day charges
# --------------------------------------------------------------------------------------

LAST_DAY = 0  # day_of_month value meaning "the last day of the month"


@dataclass(frozen=True)
class RecurringCharge:
    """A charge that lands on ``day_of_month`` (0: last day) of every month."""

    component: str
    day_of_month: int
    amount: float
    months: int


def _day_keys(index: pd.DatetimeIndex) -> np.ndarray:
    days = np.asarray(index.day)
    keys = np.where(days <= 28, days, -1)
    return np.where(np.asarray(index.is_month_end) & (days > 28), LAST_DAY, keys)


DETECTION_WINDOW_DAYS = 400  # a charge must have been billed within this many days
BASE_WINDOW_DAYS = 14  # a charge is measured against the median of the days before it


@dataclass(frozen=True)
class _Jumps:
    """Per day of one component: its jump over the median of the days before it, and
    whether that jump stands clear of their spread. Only past days are used, so the
    arrays computed once on the whole history serve every backtest origin unchanged."""

    excess: np.ndarray
    charged: np.ndarray
    pure: np.ndarray  # nothing was spent on the days before
    observed: np.ndarray


def _jumps(series: pd.Series) -> _Jumps:
    values = series.to_numpy(dtype=float)
    observed = np.isfinite(values)
    window = series.shift(1).rolling(BASE_WINDOW_DAYS, min_periods=5)
    base = np.nan_to_num(window.median().to_numpy())
    spread = np.nan_to_num((window.quantile(0.75) - window.quantile(0.25)).to_numpy() / 1.349)
    excess = np.nan_to_num(values) - base
    floor = 0.005 + 1e-6 * (np.nanmax(np.abs(values)) if observed.any() else 0.0)
    charged = observed & (excess > np.maximum(np.maximum(5 * spread, 0.5 * np.abs(base)), floor))
    return _Jumps(excess, charged, np.abs(base) < floor, observed)


def _recurring_in(
    name: str, jumps: _Jumps, index: pd.DatetimeIndex
) -> tuple[list[RecurringCharge], np.ndarray]:
    """Fixed-day charges of one component and the part of its history they explain."""
    explained = np.zeros(len(index))
    charged, observed = jumps.charged, jumps.observed
    if not charged[-DETECTION_WINDOW_DAYS:].any():
        return [], explained
    keys = _day_keys(index)
    charges = []
    for day_key in np.unique(keys[-DETECTION_WINDOW_DAYS:][charged[-DETECTION_WINDOW_DAYS:]]):
        hits = np.flatnonzero((keys == day_key) & observed)
        misses = np.flatnonzero(~charged[hits])
        run = len(hits) - (misses[-1] + 1 if misses.size else 0)
        if day_key < 0 or run < 2:
            continue
        last = hits[-run:]
        amounts = jumps.excess[last]
        recent = amounts[-6:]
        pure = bool(jumps.pure[last[-3:]].all())
        if run < (2 if pure else 3) or recent.max() > 3 * recent.min():
            continue
        charges.append(RecurringCharge(name, int(day_key), float(amounts[-1]), run))
        explained[last] = amounts
    return charges, explained


def detect_recurring(
    components: Mapping[str, pd.Series], *, until: int | None = None,
    jumps: Mapping[str, _Jumps] | None = None,
) -> tuple[list[RecurringCharge], np.ndarray | None]:
    """Fixed-day monthly charges in each component series (all on one daily index) and,
    summed over components, the history they explain (to subtract from the total).

    A component qualifies when its spend on one day of the month jumps clear above the
    days before it in each of its latest months: 2 months for a pure charge (nothing
    spent around it), 3 for one billed on top of daily usage. ``until`` cuts the history
    (backtests); ``jumps`` reuses the per-day measurements of a previous call."""
    charges: list[RecurringCharge] = []
    explained: np.ndarray | None = None
    for name, series in components.items():
        measured = jumps[name] if jumps is not None else _jumps(series)
        cut = series.index if until is None else series.index[:until]
        if until is not None:
            measured = _Jumps(*(part[:until] for part in (
                measured.excess, measured.charged, measured.pure, measured.observed)))
        found, part = _recurring_in(name, measured, cut)
        if found:
            charges.extend(found)
            explained = part if explained is None else explained + part
    return charges, explained


def _recurring_future(charges: Iterable[RecurringCharge], days: pd.DatetimeIndex) -> np.ndarray:
    keys = _day_keys(days)
    out = np.zeros(len(days))
    for charge in charges:
        out += np.where(keys == charge.day_of_month, charge.amount, 0.0)
    return out


# --------------------------------------------------------------------------------------
# Usage model: Prophet in log space + simulated paths
# --------------------------------------------------------------------------------------


def _prophet_class():
    # Imported on first use: Prophet's import is slow, and its optional plotting import
    # logs an error. cmdstanpy adds its own INFO handler when nothing else is configured.
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    from cmdstanpy.utils import get_logger
    from prophet import Prophet

    # Prophet warns about exactly two years of history when yearly seasonality is on;
    # that is our deliberate choice, not news for the log.
    for log, level in ((get_logger(), logging.WARNING), (logging.getLogger("prophet"), logging.ERROR)):
        log.setLevel(max(log.level, level))
        for handler in log.handlers:
            handler.setLevel(max(handler.level, level))
    return Prophet


FIT_COUNTER = {"fits": 0}  # Prophet fits in this process (read by tests and the bench)


@dataclass
class _UsagePaths:
    center: np.ndarray  # (H,) median usage per day
    paths: np.ndarray  # (S, H) simulated usage per day
    log_sd: np.ndarray  # (H,) spread of the simulated log deviations per day
    offset: float  # c in log(usage + c)
    params: dict | None = None  # the fitted parameters, to warm-start later fits


def _usage_paths(
    usage: pd.Series, horizon: int, rng: np.random.Generator, init: dict | None = None
) -> _UsagePaths:
    """Prophet on log(usage + c) and ``SIMULATIONS`` simulated future paths."""
    usage = usage.iloc[-TRAIN_WINDOW_DAYS:]
    values = usage.to_numpy(dtype=float)
    observed = np.isfinite(values)
    positive = values[observed & (values > 0)]
    future = pd.DataFrame(
        {"ds": pd.date_range(usage.index[-1] + pd.Timedelta(days=1), periods=horizon)}
    )
    if positive.size == 0:
        zeros = np.zeros(horizon)
        return _UsagePaths(zeros, np.zeros((SIMULATIONS, horizon)), zeros, 1.0)
    offset = max(0.01 * float(np.median(positive)), 1e-6)
    frame = pd.DataFrame({"ds": usage.index, "y": np.log(np.clip(values, 0, None) + offset)})
    frame = frame[observed].reset_index(drop=True)
    span = (usage.index[-1] - frame["ds"].iloc[0]).days + 1

    model = _prophet_class()(
        growth="linear",
        weekly_seasonality=True,
        yearly_seasonality=span >= YEARLY_MIN_DAYS,
        daily_seasonality=False,
        uncertainty_samples=0,
        **PROPHET_PARAMS,
    )
    recent = frame.iloc[-RESIDUAL_WINDOW_DAYS:]
    with warnings.catch_warnings():
        # Prophet's own pandas deprecations are not ours to act on.
        warnings.filterwarnings("ignore", module="prophet")
        model.fit(frame, **({"init": init} if init else {}))
        fitted = model.predict(pd.concat([recent[["ds"]], future], ignore_index=True))
    FIT_COUNTER["fits"] += 1
    center_log = fitted["yhat"].to_numpy()[-horizon:]
    trend_point = fitted["trend"].to_numpy()[-horizon:]
    residuals = recent["y"].to_numpy() - fitted["yhat"].to_numpy()[: len(recent)]

    # Prophet draws its future trend changes from np.random: seed it, then restore.
    state = np.random.get_state()
    np.random.seed(int(rng.integers(2**31)))
    try:
        trend_draws = model.sample_predictive_trend_vectorized(
            model.setup_dataframe(future.copy()), SIMULATIONS
        )
    finally:
        np.random.set_state(state)
    deviations = (trend_draws - trend_point) + _block_bootstrap(
        residuals, SIMULATIONS, horizon, rng
    )
    paths = np.clip(np.exp(center_log + deviations) - offset, 0, None)
    center = np.clip(np.exp(center_log) - offset, 0, None)
    params = {name: np.ravel(model.params[name]) for name in ("k", "m", "sigma_obs", "delta", "beta")}
    params = {name: (float(v[0]) if name in ("k", "m", "sigma_obs") else v) for name, v in params.items()}
    return _UsagePaths(center, paths, deviations.std(axis=0), offset, params)


def _block_bootstrap(
    residuals: np.ndarray, samples: int, horizon: int, rng: np.random.Generator
) -> np.ndarray:
    """Paths of residuals made of consecutive blocks of the observed ones (keeps their
    autocorrelation: a bad week stays a bad week). Centred so they add no bias."""
    residuals = residuals - np.median(residuals)
    n = residuals.size
    block = min(BLOCK_DAYS, n)
    blocks = math.ceil(horizon / block)
    starts = rng.integers(0, n - block + 1, size=(samples, blocks))
    index = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(samples, -1)
    return residuals[index[:, :horizon]]


# --------------------------------------------------------------------------------------
# Fit, calibration, result
# --------------------------------------------------------------------------------------


@dataclass
class Calibration:
    """Backtest scores of the simulated spread against what really happened.

    ``daily``: (step, z) with z = (log(actual + c) - log(forecast + c)) / simulated log sd.
    ``total``: (days, error, simulated variance, forecast) of the cumulative totals of the
    first 7, 14, ... days of each origin, error = actual total - forecast total."""

    origins: int = 0
    daily: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    total: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))


@dataclass
class FittedForecast:
    """Everything needed to answer any horizon up to ``HORIZON_MAX`` at any level."""

    first_day: date
    history_days: int
    center: np.ndarray  # usage + recurring, per day
    recurring: np.ndarray
    offset: float
    log_sd: np.ndarray
    total_sd: np.ndarray  # sd of the simulated cumulative totals
    recurring_charges: list[RecurringCharge]
    calibration: Calibration


@dataclass(frozen=True)
class SeriesForecast:
    """A forecast of ``horizon`` days, floats (the service turns them into money)."""

    days: list[date]
    amount: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    total: float
    total_low: float
    total_high: float
    level: float
    history_days: int
    calibration: dict


def _as_series(history) -> pd.Series:
    if isinstance(history, pd.Series):
        series = history.astype(float)
        series.index = pd.DatetimeIndex(series.index)
    else:
        pairs = list(history)
        series = pd.Series(
            [float(v) if v is not None else np.nan for _, v in pairs],
            index=pd.DatetimeIndex([pd.Timestamp(d) for d, _ in pairs]),
            dtype=float,
        )
    series = series.sort_index()
    if series.empty:
        return series
    return series.reindex(pd.date_range(series.index[0], series.index[-1]))


@dataclass
class _Scope:
    """A history, its components and their per-day jumps, all on one daily index."""

    history: pd.Series
    components: dict[str, pd.Series]
    jumps: dict[str, _Jumps]

    @classmethod
    def build(cls, history, components) -> _Scope:
        series = _as_series(history)
        if components is None:
            parts = {"total": series}
        else:
            parts = {name: _as_series(part).reindex(series.index) for name, part in components.items()}
        return cls(series, parts, {name: _jumps(part) for name, part in parts.items()})


def _fit_once(
    scope: _Scope,
    until: int,
    horizon: int,
    rng: np.random.Generator,
    init: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, _UsagePaths, list[RecurringCharge]]:
    """One fit on the first ``until`` days of the scope: recurring charges + usage paths."""
    history = scope.history.iloc[:until]
    future = pd.date_range(history.index[-1] + pd.Timedelta(days=1), periods=horizon)
    charges, explained = detect_recurring(scope.components, until=until, jumps=scope.jumps)
    usage = history if explained is None else (history - explained).clip(lower=0)
    recurring = _recurring_future(charges, future)
    paths = _usage_paths(usage, horizon, rng, init)
    return paths.center + recurring, recurring, paths, charges


def _calibration_leads(n: int) -> list[int]:
    leads = [lead for lead in CALIBRATION_LEADS if n - lead >= CALIBRATION_MIN_TRAIN_DAYS]
    if len(leads) < 3:
        leads = [lead for lead in SHORT_CALIBRATION_LEADS if n - lead >= CALIBRATION_MIN_TRAIN_DAYS]
    return leads if len(leads) >= CALIBRATION_MIN_ORIGINS else []


def _calibrate(scope: _Scope, rng: np.random.Generator, init: dict | None) -> Calibration:
    """Rolling-origin backtests of the whole procedure on the scope's own history: from
    each origin, score what happened against the spread of the simulated paths."""
    history = scope.history.to_numpy()
    n = len(history)
    daily, total, origins = [], [], 0
    for lead in _calibration_leads(n):
        until = n - lead
        actual = history[until : until + HORIZON_MAX]
        if np.isfinite(history[:until]).sum() < MIN_HISTORY_DAYS:
            continue
        steps = len(actual)
        center, recurring, paths, _ = _fit_once(scope, until, steps, rng, init)
        origins += 1
        ok = np.isfinite(actual)
        usage_actual = np.clip(np.nan_to_num(actual) - recurring, 0, None)
        z = np.log((usage_actual + paths.offset) / (paths.center + paths.offset)) / np.maximum(
            paths.log_sd, 1e-9
        )
        daily.extend((step + 1, value) for step, value in enumerate(z) if ok[step])
        variance = np.cumsum(paths.paths, axis=1).var(axis=0)
        for days in range(TOTAL_SCORE_STEP, steps + 1, TOTAL_SCORE_STEP):
            if ok[:days].all():
                forecast = center[:days].sum()
                total.append((days, actual[:days].sum() - forecast, variance[days - 1], forecast))
    return Calibration(origins, np.array(daily).reshape(-1, 2), np.array(total).reshape(-1, 4))


def fit_forecast(
    history,
    *,
    components: Mapping[str, pd.Series] | None = None,
    calibrate: bool = True,
    seed: int = 0,
) -> FittedForecast:
    """Fit the model to ``history`` (a daily pd.Series, NaN = missing day, or (date,
    amount) pairs) and calibrate it; the result answers every horizon and level.
    ``components`` are the series that make up the total (a provider's services), used to
    find fixed-day recurring charges; without them the total itself is searched."""
    scope = _Scope.build(history, components)
    n = len(scope.history)
    if np.isfinite(scope.history.to_numpy()).sum() < 2:
        raise ValueError("at least two observed days are needed")
    rng = np.random.default_rng(seed)
    center, recurring, paths, charges = _fit_once(scope, n, HORIZON_MAX, rng)
    calibration = _calibrate(scope, rng, paths.params) if calibrate else Calibration()
    return FittedForecast(
        first_day=(scope.history.index[-1] + pd.Timedelta(days=1)).date(),
        history_days=int(np.isfinite(scope.history.to_numpy()).sum()),
        center=center,
        recurring=recurring,
        offset=paths.offset,
        log_sd=paths.log_sd,
        total_sd=np.cumsum(paths.paths, axis=1).std(axis=0),
        recurring_charges=charges,
        calibration=calibration,
    )


def _conformal(scores: np.ndarray, q: float) -> float:
    """The ceil((n + 1) q)-th smallest score (split-conformal quantile), or the largest."""
    ordered = np.sort(scores)
    rank = min(math.ceil((len(ordered) + 1) * q), len(ordered))
    return float(ordered[max(rank, 1) - 1])


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1e-8)."""
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690,
         -30.66479806614716, 2.506628274631000)
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
         -13.28068155288572)
    c = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
         4.374664141464968, 2.938163982698783)
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
        ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


LEVEL_ERROR_GRID = (0.0, 0.001, 0.002, 0.004, 0.007, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1,
                    0.15, 0.2, 0.3)


def _level_error(rows: np.ndarray) -> float:
    """The relative error of the forecast level that the backtests show beyond the
    simulated spread of totals. Simulated days average out over a long horizon; a level
    or trend that is off does not, so the error of a total grows faster than the paths
    say. The maximum-likelihood value on a grid of the Gaussian model
    error ~ N(0, simulated variance + (level_error x forecast)^2)."""
    errors, variance, forecast = rows[:, 1], rows[:, 2], rows[:, 3]
    best, best_ll = 0.0, -np.inf
    for level_sd in LEVEL_ERROR_GRID:
        spread = np.maximum(variance + (level_sd * forecast) ** 2, 1e-12)
        ll = -0.5 * float(np.sum(np.log(spread) + errors**2 / spread))
        if ll > best_ll:
            best, best_ll = level_sd, ll
    return best


def forecast_from_fit(fit: FittedForecast, *, horizon: int, level: float = 0.8) -> SeriesForecast:
    """The ``horizon``-day forecast at interval ``level`` from a fitted model."""
    if not 1 <= horizon <= HORIZON_MAX:
        raise ValueError(f"horizon must be 1..{HORIZON_MAX}")
    z_normal = _normal_quantile(0.5 + level / 2)
    cal = fit.calibration
    daily_scores = cal.daily[cal.daily[:, 0] <= horizon, 1] if cal.origins else np.zeros(0)
    if 0 < len(daily_scores) < 30:
        daily_scores = cal.daily[:, 1]
    total_rows = cal.total[cal.total[:, 0] <= horizon] if cal.origins else np.zeros((0, 4))
    if 0 < len(total_rows) < 5:
        total_rows = cal.total

    level_sd = 0.0
    if len(daily_scores) >= 14 and len(total_rows) >= 3:
        z_low = min(_conformal(-daily_scores, 0.5 + level / 2) * -1, 0.0)
        z_high = max(_conformal(daily_scores, 0.5 + level / 2), 0.0)
        # The spread of a total over its length: simulated paths plus the level error the
        # backtests show; its size: the conformal quantile of the standardized errors of
        # totals of comparable length (at least a third of the horizon).
        level_sd = _level_error(total_rows)
        long_rows = total_rows[total_rows[:, 0] >= horizon / 3]
        rows = long_rows if len(long_rows) >= 5 else total_rows
        spread = np.sqrt(rows[:, 2] + (level_sd * rows[:, 3]) ** 2)
        z_total = _conformal(np.abs(rows[:, 1]) / np.maximum(spread, 1e-9), level)
        method = "split-conformal scaling of simulated paths, rolling-origin backtests"
        origins = cal.origins
    else:
        z_low, z_high = -UNCALIBRATED_SCALE * z_normal, UNCALIBRATED_SCALE * z_normal
        z_total = UNCALIBRATED_SCALE * z_normal
        method = "uncalibrated: too little history to backtest, simulated spread widened"
        origins = 0

    days = slice(0, horizon)
    usage = fit.center[days] - fit.recurring[days]
    log_center = np.log(usage + fit.offset)
    sd = fit.log_sd[days]
    lower = np.clip(np.exp(log_center + z_low * sd) - fit.offset, 0, None) + fit.recurring[days]
    upper = np.clip(np.exp(log_center + z_high * sd) - fit.offset, 0, None) + fit.recurring[days]
    amount = fit.center[days]
    total = float(amount.sum())
    raw_sd = float(fit.total_sd[horizon - 1])
    half = z_total * math.sqrt(raw_sd**2 + (level_sd * total) ** 2)
    return SeriesForecast(
        days=[fit.first_day + timedelta(days=i) for i in range(horizon)],
        amount=amount,
        lower=np.minimum(lower, amount),
        upper=np.maximum(upper, amount),
        total=total,
        total_low=max(total - half, 0.0),
        total_high=total + half,
        level=level,
        history_days=fit.history_days,
        calibration={
            "method": method,
            "backtest_origins": origins,
            "daily_scale": round((z_high - z_low) / (2 * z_normal), 3),
            "total_scale": round(half / (z_normal * raw_sd), 3) if raw_sd > 0 else 1.0,
            "level_error": level_sd,
            "recurring_charges": len(fit.recurring_charges),
        },
    )


def forecast_series(
    history,
    *,
    horizon: int,
    level: float = 0.8,
    components: Mapping[str, pd.Series] | None = None,
    seed: int = 0,
) -> SeriesForecast:
    """Forecast ``horizon`` days after the last day of ``history`` (see ``fit_forecast``)."""
    fit = fit_forecast(history, components=components, seed=seed)
    return forecast_from_fit(fit, horizon=horizon, level=level)


# --------------------------------------------------------------------------------------
# The service: a scope's history from the database, currency, caching
# --------------------------------------------------------------------------------------

CACHE_TIMEOUT = 2 * 24 * 3600  # keys carry the day, so entries only need to outlive it
LOCK_TIMEOUT = 300  # seconds a fit may hold the lock on databases without advisory locks
LOCK_POLL = 0.05


@dataclass(frozen=True)
class DailyForecast:
    date: date
    amount: Decimal
    lower: Decimal
    upper: Decimal


@dataclass(frozen=True)
class ForecastResult:
    """A scope's forecast: exact Decimals (rounded to cents only on output)."""

    currency: str
    forecast_days: int
    interval_level: float
    history_days: int
    generated_at: datetime
    daily: list[DailyForecast]
    projected_total: Decimal
    total_low: Decimal
    total_high: Decimal
    calibration: dict


@dataclass
class _CachedFit:
    fit: FittedForecast
    currency: str
    generated_at: datetime


def _money(value: float) -> Decimal:
    return Decimal(repr(round(float(value), 6)))


def _provider_state(providers) -> list[tuple]:
    return [
        (p.id, p.data_version, str(p.coverage_start), str(p.coverage_end), p.is_active)
        for p in providers
    ]


def _cache_key(organization, provider, providers, last_day: date) -> str:
    """One key per scope, data version of every provider in it, and last complete day."""
    import hashlib
    import json

    state = json.dumps([last_day.isoformat(), _provider_state(providers)])
    digest = hashlib.sha256(state.encode()).hexdigest()[:40]
    scope = provider.id if provider is not None else "all"
    return f"forecast:v1:{organization.id}:{scope}:{digest}"


def _observed_days(providers, records: dict[int, set[date]], days: pd.DatetimeIndex) -> np.ndarray:
    """Which days of the scope's total are known. A provider knows a day it has records
    for or that its syncs covered (no records there: nothing was spent). Before a
    provider's first known day, and after its last while it is still connected, its part
    is missing, so the total is too; a disconnected provider simply stopped spending."""
    known = np.ones(len(days), dtype=bool)
    stamps = days.date
    with_data = [p for p in providers if records.get(p.id) or p.coverage_start is not None]
    if not with_data:
        return np.zeros(len(days), dtype=bool)
    for p in with_data:
        have = records.get(p.id, set())
        first = min(filter(None, [p.coverage_start, min(have, default=None)]))
        last = max(filter(None, [p.coverage_end, max(have, default=None)]))
        covered = np.array(
            [
                day in have
                or (p.coverage_start is not None and p.coverage_start <= day <= (p.coverage_end or day))
                or (day > last and not p.is_active)
                for day in stamps
            ]
        )
        known &= covered & (np.array([day >= first for day in stamps]))
    return known


def _scope_history(
    *, organization, provider, providers, last_day: date
) -> tuple[pd.Series, dict[str, pd.Series]]:
    """The scope's daily total and its (provider, service) components from the first
    known day (at most ``TRAIN_WINDOW_DAYS`` back) to ``last_day``; NaN where missing."""
    from costs.selectors import daily_component_totals, daily_totals

    start = last_day - timedelta(days=TRAIN_WINDOW_DAYS - 1)
    rows = daily_component_totals(
        organization=organization, provider=provider, start=start, end=last_day
    )
    totals = dict(
        daily_totals(organization=organization, provider=provider, start=start, end=last_day)
    )
    records: dict[int, set[date]] = {}
    for day, provider_id, _service, _total in rows:
        records.setdefault(provider_id, set()).add(day)
    days = pd.date_range(start, last_day)
    known = _observed_days(providers, records, days)
    if not known.any():
        return pd.Series(dtype=float), {}
    days, known = days[int(np.argmax(known)) :], known[int(np.argmax(known)) :]
    total = pd.Series([float(totals.get(day, 0)) for day in days.date], index=days)
    total[~known] = np.nan
    table: dict[str, dict[pd.Timestamp, float]] = {}
    for day, provider_id, service, amount in rows:
        table.setdefault(f"{provider_id}:{service}", {})[pd.Timestamp(day)] = float(amount)
    components = {}
    for name, values in table.items():
        series = pd.Series(values, dtype=float).reindex(days).fillna(0.0)
        series[~known] = np.nan
        components[name] = series
    return total, components


def _insufficient(available: int) -> None:
    from infraaudit.errors import Unprocessable

    raise Unprocessable(
        f"a forecast needs at least {MIN_HISTORY_DAYS} complete days of history; "
        f"this scope has {available}",
        code="INSUFFICIENT_HISTORY",
        details={"history_days_needed": MIN_HISTORY_DAYS, "history_days_available": available},
    )


class _FitLock:
    """Serializes the first fit of one cache key across threads and processes: a
    PostgreSQL session advisory lock, or elsewhere an entry added to the shared cache."""

    def __init__(self, key: str):
        import hashlib

        from django.db import connection

        self.key = key
        self.connection = connection
        self.lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)

    def __enter__(self):
        from django.core.cache import cache

        if self.connection.vendor == "postgresql":
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [self.lock_id])
            return self
        deadline = time.monotonic() + LOCK_TIMEOUT
        while not cache.add(f"{self.key}:lock", 1, LOCK_TIMEOUT) and time.monotonic() < deadline:
            if cache.get(self.key) is not None:
                break
            time.sleep(LOCK_POLL)
        return self

    def __exit__(self, *exc):
        from django.core.cache import cache

        if self.connection.vendor == "postgresql":
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [self.lock_id])
        else:
            cache.delete(f"{self.key}:lock")
        return False


def _fitted(*, organization, provider, providers, last_day: date) -> _CachedFit:
    from django.core.cache import cache
    from django.utils import timezone

    from costs.selectors import cost_currency

    key = _cache_key(organization, provider, providers, last_day)
    cached = cache.get(key)
    if cached is not None:
        return cached
    with _FitLock(key):
        cached = cache.get(key)
        if cached is not None:
            return cached
        history, components = _scope_history(
            organization=organization, provider=provider, providers=providers, last_day=last_day
        )
        available = int(np.isfinite(history.to_numpy()).sum()) if len(history) else 0
        if available < MIN_HISTORY_DAYS:
            _insufficient(available)
        currency = cost_currency(
            organization=organization,
            provider=provider,
            start=history.index[0].date(),
            end=last_day,
        )
        started = time.perf_counter()
        fit = fit_forecast(history, components=components)
        logger.info(
            "forecast fitted for org %s scope %s in %.2fs",
            organization.id, provider.id if provider else "all", time.perf_counter() - started,
        )
        cached = _CachedFit(fit=fit, currency=currency, generated_at=timezone.now())
        cache.set(key, cached, CACHE_TIMEOUT)
        return cached


def cost_forecast(
    *, organization, provider=None, days: int = 30, level: float = 0.8
) -> ForecastResult:
    """Forecast the scope's (organization total, or one ``provider``) spend for the
    ``days`` days after the last complete billing day (yesterday, UTC).

    History: complete days up to yesterday (today's partial day never counts); a day with
    no records is a zero-spend day only where the provider's syncs covered it, otherwise
    missing. One currency per forecast (422 naming them otherwise); fewer than
    ``MIN_HISTORY_DAYS`` known days answers 422. The fit is cached per scope, data version
    of its providers and day, and computed once even under concurrent first requests."""
    from costs.selectors import scope_providers, utc_today

    if days not in HORIZONS:
        raise ValueError(f"days must be one of {HORIZONS}")
    last_day = utc_today() - timedelta(days=1)
    providers = scope_providers(organization=organization, provider=provider)
    cached = _fitted(
        organization=organization, provider=provider, providers=providers, last_day=last_day
    )
    forecast = forecast_from_fit(cached.fit, horizon=days, level=level)
    return ForecastResult(
        currency=cached.currency,
        forecast_days=days,
        interval_level=level,
        history_days=forecast.history_days,
        generated_at=cached.generated_at,
        daily=[
            DailyForecast(day, _money(amount), _money(lower), _money(upper))
            for day, amount, lower, upper in zip(
                forecast.days, forecast.amount, forecast.lower, forecast.upper, strict=True
            )
        ],
        projected_total=_money(forecast.total),
        total_low=_money(forecast.total_low),
        total_high=_money(forecast.total_high),
        calibration=forecast.calibration,
    )
