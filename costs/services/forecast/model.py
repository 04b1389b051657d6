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
(``forecast_from_fit``). This module is pure numpy/pandas/Prophet: the service
(``service.py``) and the backtest command both use it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from costs.services.forecast.calibration import (
    Calibration,
    _conformal,
    _level_error,
    _normal_quantile,
)
from costs.services.forecast.recurring import (
    RecurringCharge,
    _Jumps,
    _jumps,
    _recurring_future,
    detect_recurring,
)

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

