"""Cost forecasts whose intervals mean what they say.

The model, in the order it runs (``fit_forecast``):

1. Recurring charges that land on a fixed day of the month (support plans, reservation
   and subscription fees) are found per component series (a provider's service) and
   taken out of the history. They are forecast deterministically on that day of each
   future month, at their latest amount, instead of being smeared or read as spikes.
2. What remains (usage) is fitted with Prophet on ``log(usage + c)``: weekly
   seasonality, yearly when two years exist, linear growth in log space, so the
   forecast can never go below zero. One-off days are left out of the fit: what they
   do to totals comes from the calibration, which sees them (``usage``).
3. Future paths are simulated: Prophet's own trend draws (future changepoints) plus a
   block bootstrap of the in-sample residuals, which keeps their day-to-day correlation,
   so the total of a path varies as real totals do (not as a sum of independent days;
   ``usage``).
4. The width is calibrated on the scope's own history: the same procedure, with the
   same model (yearly seasonality included when the forecast has it), is re-run from
   up to 12 earlier origins, 2 weeks to 2 years back (rolling-origin backtests; see
   ``CALIBRATION_ORIGINS``), and the real outcomes are scored against the simulated
   spread. Daily bounds: split-conformal quantiles of the standardized daily log
   errors. Totals: a log error whose sd is the simulated paths' spread scaled by
   ``kappa`` plus a relative level error ``tau`` (days average out over a horizon, a
   level that is off does not, and one origin's totals share its level error), both
   fitted by maximum likelihood on the backtests' totals; the width in those sds is the
   split-conformal quantile of the origins' standardized misses on their longest totals
   (see ``calibration``).

The result of steps 1-4 does not depend on the horizon or the level, so one fit (cached
per scope and data version) answers 30, 60 and 90 days at any level
(``forecast_from_fit``). This module is pure numpy/pandas/Prophet: the service
(``service.py``) and the backtest command both use it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from costs.services.forecast.calibration import (
    Calibration,
    TotalSpread,
    conformal,
    fit_total_spread,
    normal_quantile,
)
from costs.services.forecast.recurring import (
    RecurringCharge,
    _Jumps,
    _jumps,
    _recurring_future,
    detect_recurring,
)
from costs.services.forecast.usage import TRAIN_WINDOW_DAYS, UsagePaths, usage_paths

logger = logging.getLogger(__name__)

HORIZON_MAX = 90
HORIZONS = (30, 60, 90)
MIN_HISTORY_DAYS = 14
# Origins of the calibration backtests, in days before the last complete day ("leads"):
# ``CALIBRATION_ORIGINS`` of them on a geometric grid from ``CALIBRATION_FIRST_LEAD`` to
# the furthest lead allowed, rounded to whole weeks (every backtest starts on the
# forecast's own weekday). The furthest is at most ``CALIBRATION_MAX_LEAD`` and leaves
# each backtest at least ``CALIBRATION_TRAIN_SHARE`` of the forecast's own training days:
# origins spread over up to two years see the seasons and regime changes a recent half
# year misses (real data), but a fit on much less history than the forecast's misses
# more than the forecast will; the geometric grid keeps most origins recent. Chosen on
# tuning data only (docs/benchmarks.md, "Forecasts", sessions 3, 4 and 7: 12 origins
# since the conformal quantile interpolates between ranks; with the rank ceil((n + 1)
# level), 12 origins covered 11/13 = 84.6% on average at 80%, and 9 won). Each origin
# costs a warm-started, capped fit (~0.05-0.1 s of a first forecast). A backtest fits
# the forecast's own model: yearly seasonality when the forecast has it, even with under
# two years of training (without it, the demo's backtests missed by half as much again
# as its forecasts did, and every daily band came out too wide; session 4).
CALIBRATION_ORIGINS = 12
CALIBRATION_FIRST_LEAD = 14
CALIBRATION_MAX_LEAD = 728
CALIBRATION_TRAIN_SHARE = 0.6
SHORT_CALIBRATION_LEADS = (7, 14, 21, 28)
CALIBRATION_MIN_TRAIN_DAYS = 28
CALIBRATION_MIN_ORIGINS = 2
# A backtest total missed mostly because of one day (more than this share of its log
# miss) is that day's miss: origins whose totals share it score it once between them
# (``calibration.fit_total_spread``).
ONE_OFF_SHARE = 0.5
# Backtest totals are scored over the first 7, 14, 21... days and over each horizon's
# exact length: an origin is scored on the horizon's own total wherever it saw one.
TOTAL_SCORE_STEP = 7
# Calibration fits start from the previous origin's parameters (nearly the same data) and
# stop after this many L-BFGS iterations: on the benchmark scopes the forecasts then match
# fully converged fits to within 0.01% of the total, at 40% of the optimizer's time.
CALIBRATION_FIT_ARGS = {"iter": 300}
# Without backtests (under ~6 weeks of history) the simulated spread is widened by this
# fixed factor: raw simulated paths are too narrow in every backtest we ran.
UNCALIBRATED_SCALE = 1.5
# A backtest whose simulated days hardly vary (a flat rate, an exact weekly pattern) scores
# its misses in units of at least this log sd: divided by ~0, a price change from $10 to
# $12 a day scored z ~1e7 and the next forecast's bounds overflowed (a 500). Every
# benchmark scope's simulated log sd is above 0.01, so none of their scores changes.
LOG_SD_FLOOR = 0.005
# No day is forecast above this multiple of the history's largest day (nor above 1e15, what
# an amount holds): growth extrapolated in log space from 14 days of a new account ramping
# from $1 to $1,000 reached 1e24 at 90 days (a 500). Real spend does not grow a thousandfold
# in a quarter; such a forecast says so in its bounds, at the ceiling.
CEILING_GROWTH = 1000.0
MAX_AMOUNT = 1e15


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
    usage_total: np.ndarray  # median of the simulated cumulative usage totals, per length
    total_log_sd: np.ndarray  # sd of the log of the simulated cumulative totals
    recurring_charges: list[RecurringCharge]
    calibration: Calibration
    # No day is forecast above this (see ``CEILING_GROWTH``); inf for fits cached before.
    ceiling: float = math.inf


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
        # A day whose net spend is below zero is a credit or refund larger than the day's
        # usage: nothing the model forecasts (it forecasts spend, never below zero), so
        # the day is missing for the fit and for every backtest window, rather than a
        # zero that read as the model missing a whole window (a -$20,000 credit made the
        # 30-day interval 0-256,619 around 2,673).
        series = _as_series(history)
        series = series.where(~(series < 0))
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
    fit_args: dict | None = None,
    yearly: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, UsagePaths, list[RecurringCharge]]:
    """One fit on the first ``until`` days of the scope: recurring charges + usage paths."""
    history = scope.history.iloc[:until]
    future = pd.date_range(history.index[-1] + pd.Timedelta(days=1), periods=horizon)
    charges, explained = detect_recurring(scope.components, until=until, jumps=scope.jumps)
    usage = history if explained is None else (history - explained).clip(lower=0)
    recurring = _recurring_future(charges, future)
    paths = usage_paths(usage, horizon, rng, init, fit_args, yearly)
    return paths.center + recurring, recurring, paths, charges


def _calibration_leads(
    n: int, count: int | None = None, share: float | None = None, first_lead: int | None = None
) -> list[int]:
    """The calibration origins of a history of ``n`` days, in days before its end, nearest
    first (see ``CALIBRATION_ORIGINS``); the short leads when fewer than 3 fit. ``count``,
    ``share`` and ``first_lead`` override the defaults (the backtest command's tuning
    mode)."""
    train = min(n, TRAIN_WINDOW_DAYS)
    furthest = min(
        CALIBRATION_MAX_LEAD,
        n - math.ceil((share or CALIBRATION_TRAIN_SHARE) * train),
        n - CALIBRATION_MIN_TRAIN_DAYS,
    )
    first, last = (first_lead or CALIBRATION_FIRST_LEAD) // 7, furthest // 7  # in weeks
    weeks: list[int] = []
    if last >= first:
        for week in np.geomspace(first, last, count or CALIBRATION_ORIGINS):
            # Rounded to a week, the first points of the grid would coincide: each takes
            # the next free week instead (the grid spreads out fast, so the last is kept).
            week = max(round(float(week)), weeks[-1] + 1 if weeks else first)
            if week <= last:
                weeks.append(week)
    leads = [7 * week for week in weeks]
    if len(leads) < 3:
        leads = [lead for lead in SHORT_CALIBRATION_LEADS if n - lead >= CALIBRATION_MIN_TRAIN_DAYS]
    return leads if len(leads) >= CALIBRATION_MIN_ORIGINS else []


def _calibrate(
    scope: _Scope,
    rng: np.random.Generator,
    init: dict | None,
    leads: list[int] | None = None,
    yearly: bool | None = None,
) -> Calibration:
    """Rolling-origin backtests of the whole procedure on the scope's own history: from
    each origin, score what happened against the spread of the simulated paths. Every
    backtest fits the forecast's own model (``yearly``: its yearly seasonality, even where
    a backtest has less than two years)."""
    history = scope.history.to_numpy()
    n = len(history)
    daily, total, used = [], [], []
    for lead in _calibration_leads(n) if leads is None else sorted(leads):
        until = n - lead
        actual = history[until : until + HORIZON_MAX]
        if np.isfinite(history[:until]).sum() < MIN_HISTORY_DAYS:
            continue
        steps = len(actual)
        try:
            _, recurring, paths, _ = _fit_once(
                scope, until, steps, rng, init, CALIBRATION_FIT_ARGS, yearly
            )
        except RuntimeError as exc:
            # CmdStan stopped on this backtest and so did Prophet's Newton refit: one
            # origin fewer, not a failed forecast (the conformal quantile takes any n).
            logger.warning("calibration backtest %d days back skipped: %s", lead, exc)
            continue
        init = paths.params  # the next origin's data is nearly the same: start from here
        used.append(lead)
        origin = len(used)
        ok = np.isfinite(actual)
        usage_actual = np.clip(np.nan_to_num(actual) - recurring, 0, None)
        z = np.log((usage_actual + paths.offset) / (paths.center + paths.offset)) / np.maximum(
            paths.log_sd, LOG_SD_FLOOR
        )
        daily.extend((step + 1, value, origin) for step, value in enumerate(z) if ok[step])
        log_sd = _total_log_sd(paths, recurring)
        projected = _usage_total(paths) + np.cumsum(recurring)
        lengths = {*range(TOTAL_SCORE_STEP, steps + 1, TOTAL_SCORE_STEP), *HORIZONS}
        for days in sorted(length for length in lengths if length <= steps):
            if ok[:days].all():
                pad = paths.offset * days  # days below zero are missing (_Scope.build)
                ratio = math.log((actual[:days].sum() + pad) / (projected[days - 1] + pad))
                one_off, without = _one_off_day(
                    actual[:days], (paths.center + recurring)[:days], ratio,
                    projected[days - 1] + pad,
                )
                total.append((origin, days, ratio, log_sd[days - 1],
                              until + one_off if one_off >= 0 else -1, without))
    return Calibration(
        len(used), np.array(daily).reshape(-1, 3), np.array(total).reshape(-1, 6), np.array(used)
    )


def _one_off_day(
    actual: np.ndarray, expected: np.ndarray, miss: float, projected: float
) -> tuple[int, float]:
    """The day of a backtest total that made more than ``ONE_OFF_SHARE`` of its log
    ``miss`` (the day furthest from its forecast), and the log miss with that day at its
    forecast; (-1, ``miss``) when no day did. ``projected`` is the total's forecast
    (padded, as in the miss: log((actual + pad) / projected))."""
    day = int(np.argmax(np.abs(actual - expected)))
    padded_actual = projected * math.exp(miss)
    without = math.log((padded_actual - actual[day] + expected[day]) / projected)
    return (day, without) if abs(without) < ONE_OFF_SHARE * abs(miss) else (-1, miss)


def _usage_total(paths: UsagePaths) -> np.ndarray:
    """Per length d, the median of the simulated usage totals of the first d days. Not
    the sum of the daily medians: days are skewed (log-normal-like), so a total's median
    lies above the sum of its days' medians, by ~exp(sd^2 / 2) for noisy series."""
    return np.median(np.cumsum(paths.paths, axis=1), axis=0)


def _total_log_sd(paths: UsagePaths, recurring: np.ndarray) -> np.ndarray:
    """Per length d, the sd of the log of the simulated totals of the first d days, fixed
    charges included: the simulated relative spread of a total. A window that holds a
    monthly charge varies less, relative to its total, than one that does not; scoring
    every backtest window on its own share keeps ``kappa`` a property of the usage."""
    days = np.arange(1, paths.paths.shape[1] + 1)
    fixed = np.cumsum(recurring[: paths.paths.shape[1]]) + paths.offset * days
    return np.log(np.cumsum(paths.paths, axis=1) + fixed).std(axis=0)


def fit_forecast(
    history,
    *,
    components: Mapping[str, pd.Series] | None = None,
    calibrate: bool = True,
    seed: int = 0,
    calibration_leads: list[int] | None = None,
) -> FittedForecast:
    """Fit the model to ``history`` (a daily pd.Series, NaN = missing day, or (date,
    amount) pairs) and calibrate it; the result answers every horizon and level.
    ``components`` are the series that make up the total (a provider's services), used to
    find fixed-day recurring charges; without them the total itself is searched.
    ``calibration_leads`` replaces the calibration origins (the backtest command's tuning
    mode fits every candidate's origins once, then scores each with ``Calibration.only``)."""
    scope = _Scope.build(history, components)
    n = len(scope.history)
    if np.isfinite(scope.history.to_numpy()).sum() < 2:
        raise ValueError("at least two observed days are needed")
    rng = np.random.default_rng(seed)
    center, recurring, paths, charges = _fit_once(scope, n, HORIZON_MAX, rng)
    calibration = (
        _calibrate(scope, rng, paths.params, calibration_leads, paths.yearly)
        if calibrate
        else Calibration()
    )
    return FittedForecast(
        first_day=(scope.history.index[-1] + pd.Timedelta(days=1)).date(),
        history_days=int(np.isfinite(scope.history.to_numpy()).sum()),
        center=center,
        recurring=recurring,
        offset=paths.offset,
        log_sd=paths.log_sd,
        usage_total=_usage_total(paths),
        total_log_sd=_total_log_sd(paths, recurring),
        recurring_charges=charges,
        calibration=calibration,
        ceiling=_ceiling(scope.history.to_numpy()),
    )


def _ceiling(history: np.ndarray) -> float:
    largest = float(np.nanmax(history)) if np.isfinite(history).any() else 0.0
    return min(max(largest, 1.0) * CEILING_GROWTH, MAX_AMOUNT)

def _daily_z(cal: Calibration, horizon: int, level: float) -> tuple[float, float] | None:
    """Split-conformal bounds of the standardized daily log errors (steps <= horizon)."""
    scores = cal.daily[cal.daily[:, 0] <= horizon, 1]
    if len(scores) < 30:
        scores = cal.daily[:, 1]
    if len(scores) < 14:
        return None
    q = 0.5 + level / 2
    return min(-conformal(-scores, q), 0.0), max(conformal(scores, q), 0.0)


def _total_spread(cal: Calibration, horizon: int) -> TotalSpread | None:
    """The total's error model fitted on the backtest totals no longer than ``horizon``."""
    rows = cal.total[cal.total[:, 1] <= horizon]
    if len(rows) < 5:
        rows = cal.total
    return fit_total_spread(rows) if len(rows) >= 3 else None


def _calibrated(
    fit: FittedForecast, horizon: int, level: float
) -> tuple[tuple[float, float], tuple[float, float], dict]:
    """The daily z bounds, the total's log half-widths below and above its forecast and
    how both were calibrated (the response's ``calibration``, but for the recurring
    charges)."""
    z_normal = normal_quantile(0.5 + level / 2)
    daily = _daily_z(fit.calibration, horizon, level) if fit.calibration.origins else None
    spread = _total_spread(fit.calibration, horizon) if daily else None
    sim_sd = float(fit.total_log_sd[horizon - 1])
    if daily is None or spread is None:
        wide = UNCALIBRATED_SCALE * z_normal
        z, log_half, origins, level_error = (-wide, wide), (wide * sim_sd,) * 2, 0, 0.0
        method = "uncalibrated: too little history to backtest, simulated spread widened"
    else:
        z = daily
        log_half = (spread.log_half_width(sim_sd, level, "low"), spread.log_half_width(sim_sd, level))
        origins, level_error = fit.calibration.origins, round(spread.tau, 4)
        leads = fit.calibration.leads
        method = (
            "daily: split-conformal scaling of simulated paths; total: spread of "
            "simulated path totals, scaled and widened by a level error fitted on "
            f"rolling-origin backtests from {int(leads.min())} to {int(leads.max())} days "
            "before the last complete day with the forecast's own model, width from "
            "the split-conformal quantile (interpolated between ranks) of their scores "
            "on their longest totals"
        )
        if not spread.shows(level):
            scored = round(spread.count)
            method += f"; {scored} origins show levels up to {spread.shown:.2f}"
            if origins > scored:  # a holdout with a missing day in its first week
                method += f" ({origins - scored} more had no complete total to score)"
            method += (
                ", so the width is their largest score grown as a Student t tail with 2 "
                "degrees of freedom"
            )
        if log_half[0] != log_half[1]:
            method += (
                "; a backtest total missed because of one day scores that miss on the "
                "day's side of the interval only"
            )
    return z, log_half, {
        "method": method,
        "backtest_origins": origins,
        "daily_scale": round((z[1] - z[0]) / (2 * z_normal), 3),
        "total_scale": round(log_half[1] / (z_normal * sim_sd), 3) if sim_sd > 0 else 1.0,
        "level_error": level_error,
    }


def forecast_from_fit(fit: FittedForecast, *, horizon: int, level: float = 0.8) -> SeriesForecast:
    """The ``horizon``-day forecast at interval ``level`` from a fitted model."""
    if not 1 <= horizon <= HORIZON_MAX:
        raise ValueError(f"horizon must be 1..{HORIZON_MAX}")
    (z_low, z_high), (log_low, log_high), calibration = _calibrated(fit, horizon, level)
    days = slice(0, horizon)
    ceiling = fit.ceiling
    usage = np.minimum(fit.center[days] - fit.recurring[days], ceiling)
    log_center = np.log(usage + fit.offset)
    sd = fit.log_sd[days]
    top = math.log(ceiling + fit.offset)  # exp() of more is no forecast, and may overflow
    lower = np.clip(np.exp(np.minimum(log_center + z_low * sd, top)) - fit.offset, 0, None)
    upper = np.clip(np.exp(np.minimum(log_center + z_high * sd, top)) - fit.offset, 0, None)
    lower = np.minimum(lower + fit.recurring[days], ceiling)
    upper = np.minimum(upper + fit.recurring[days], ceiling)
    amount = np.minimum(fit.center[days], ceiling)
    total = float(amount.sum())
    # The interval is around the median of the simulated totals (what the backtests
    # score against); the projected total is the sum of the daily forecasts, the better
    # point forecast in every backtest (a total's median sits above it for skewed days).
    middle = float(fit.usage_total[horizon - 1] + fit.recurring[days].sum())
    pad = fit.offset * horizon  # the total's interval is in log(total + c x days)
    return SeriesForecast(
        days=[fit.first_day + timedelta(days=i) for i in range(horizon)],
        amount=amount,
        lower=np.minimum(lower, amount),
        upper=np.maximum(upper, amount),
        total=total,
        total_low=max(min((middle + pad) * math.exp(-log_low) - pad, total), 0.0),
        total_high=max(min((middle + pad) * math.exp(min(log_high, 700.0)) - pad,
                           ceiling * horizon), total),
        level=level,
        history_days=fit.history_days,
        calibration={**calibration, "recurring_charges": len(fit.recurring_charges)},
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

