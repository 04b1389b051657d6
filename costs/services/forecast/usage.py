"""The usage model: Prophet on ``log(usage + c)`` and simulated future paths.

Weekly seasonality, yearly when two years exist, linear growth in log space, so the
forecast can never go below zero. One-off days (``_one_off_days``) are left out of the
fit: what they do to totals comes from the calibration, which sees them. Future paths
are Prophet's own trend draws (future changepoints) plus a block bootstrap of the
in-sample residuals, which keeps their day-to-day correlation, so the total of a path
varies as real totals do (not as a sum of independent days). ``model`` runs this for the
forecast and for each of its calibration backtests.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

TRAIN_WINDOW_DAYS = 3 * 365
YEARLY_MIN_DAYS = 730  # two years of days (first to last inclusive)
SIMULATIONS = 300
BLOCK_DAYS = 7
# The bootstrapped residuals are held within this many robust sds (IQR / 1.349) of their
# median. One $20,000 day in a year of $100 days is one residual of about 100 sds: drawn into
# 8% of the 30-day paths, it made each simulated day's spread 5x and a 30-day total's
# 48x and, scaled by a kappa fitted on backtests whose training did not hold it, the
# 30-day 80% high 150x the forecast; the backtests had scored what such days really do
# to totals already. Clipped, the simulated spread is the usual day-to-day noise; what
# one-off days do to a total comes from the calibration. Chosen on tuning data
# (docs/benchmarks.md, "One-off days, session 10").
RESIDUAL_CLIP = 6.0
RESIDUAL_WINDOW_DAYS = 365
# A day of usage that both the same weekday of the weeks before it and that of the weeks
# after it put more than this many robust sds away (the same way) is a one-off day and
# is left out of the fit; see ``_one_off_days``. Fitted, a $20,000 day among $100 ones
# lifted the next 30 days' forecast by 6% and the 80% interval missed the usual days'
# total. Chosen on tuning data with the residual clip's 6 sds, not tuned on its own
# (docs/benchmarks.md, "One-off days in the fit, session 11"); session 10's clip to a
# 29-day rolling median, which knew neither weekdays nor new levels, clipped usual days.
ONE_OFF_SDS = 6.0
ONE_OFF_WEEKS = 3
# One-off days are rare: where more than this share of the observed days would be, they
# are a pattern the fit has to see (a monthly charge the recurring search did not find
# is one day in 30, a fortnightly job one in 14), and none is left out.
ONE_OFF_MAX_SHARE = 1 / 40
# Chosen by the backtests in docs/benchmarks.md: a stiff trend (few changepoints) beats
# a flexible one on daily spend, where short swings are noise, not new growth.
PROPHET_PARAMS = {"changepoint_prior_scale": 0.01, "changepoint_range": 0.9}
# Weekday differences needed before one-off days are looked for (two minimal histories).
ONE_OFF_MIN_DAYS = 28


def prophet_class():
    # Imported on first use: Prophet's import is slow, and its optional plotting import
    # logs an error. cmdstanpy adds its own INFO handler when nothing else is configured.
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    # cmdstanpy reads every fit's output with polars when it is installed (it is: the
    # FOCUS import uses it) and imports it at the first fit, 0.3 s: load it here, with
    # Prophet, once per process, not inside a first forecast.
    import polars  # noqa: F401
    from cmdstanpy.utils import get_logger
    from prophet import Prophet

    # Prophet warns about exactly two years of history when yearly seasonality is on;
    # that is our deliberate choice, not news for the log.
    for log, level in ((get_logger(), logging.WARNING), (logging.getLogger("prophet"), logging.ERROR)):
        log.setLevel(max(log.level, level))
        for handler in log.handlers:
            handler.setLevel(max(handler.level, level))
    if not any(isinstance(f, _NewtonRefit) for f in get_logger().filters):
        get_logger().addFilter(_NewtonRefit())
    return _with_component_cache(Prophet)


class _NewtonRefit(logging.Filter):
    """cmdstanpy logs a CmdStan run that stopped abnormally as an ERROR with the exit code
    read as an errno: an L-BFGS fit that gave up reads "error: code '1' Operation not
    permitted", which is no permission problem. Prophet then refits with Newton (its
    own warning about that is below the level we let through), or, if Newton was the
    one that stopped, raises, which its caller reports. So the record becomes a WARNING
    that says what happened. Seen once in about 4,500 calibration fits (session 7)."""

    FORMAT = "%s error: code '%d' %s"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.msg == self.FORMAT:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = (
                "%s: CmdStan's optimizer stopped early (exit code %d); Prophet refits "
                "with Newton after L-BFGS, or raises"
            )
            record.args = tuple(record.args[:2])
        return True


_COMPONENT_CACHED: dict[type, type] = {}


def _with_component_cache(prophet_class: type) -> type:
    """``prophet_class`` computing its component/column indicator matrix once per set of
    seasonal columns. Prophet rebuilds that small matrix with ``pd.crosstab`` in every
    fit and every predict, 20 times in a first forecast: 0.2-0.35 s of its 1.6-2.5 s on
    a slow machine (docs/benchmarks.md, speed, session 5). The matrix depends only on
    the column names and the seasonalities' modes, which every fit of one model shares,
    so the cached copy is the very matrix Prophet would build (holidays and extra
    regressors, which we never add, take Prophet's own path)."""
    if prophet_class in _COMPONENT_CACHED:
        return _COMPONENT_CACHED[prophet_class]
    matrices: dict[tuple, tuple] = {}

    class ComponentCached(prophet_class):
        def regressor_column_matrix(self, seasonal_features, modes):
            if self.train_holiday_names is not None or self.extra_regressors:
                return super().regressor_column_matrix(seasonal_features, modes)
            key = (
                tuple(seasonal_features.columns),
                self.train_component_cols is None,
                tuple((mode, tuple(names)) for mode, names in sorted(modes.items())),
            )
            if key not in matrices:
                given = {mode: len(names) for mode, names in modes.items()}
                matrix, modes = super().regressor_column_matrix(seasonal_features, modes)
                added = {mode: modes[mode][given.get(mode, 0):] for mode in modes}
                matrices[key] = (matrix.copy(), added)
                return matrix, modes
            matrix, added = matrices[key]
            for mode, names in added.items():  # Prophet appends the combined components
                modes.setdefault(mode, []).extend(names)
            return matrix.copy(), modes

    ComponentCached.__name__ = ComponentCached.__qualname__ = prophet_class.__name__
    _COMPONENT_CACHED[prophet_class] = ComponentCached
    return ComponentCached


FIT_COUNTER = {"fits": 0}  # Prophet fits in this process (read by tests and the bench)


@dataclass
class UsagePaths:
    center: np.ndarray  # (H,) median usage per day
    paths: np.ndarray  # (S, H) simulated usage per day
    log_sd: np.ndarray  # (H,) spread of the simulated log deviations per day
    offset: float  # c in log(usage + c)
    params: dict | None = None  # the fitted parameters, to warm-start later fits
    yearly: bool = False  # whether the fit had yearly seasonality


def usage_paths(
    usage: pd.Series,
    horizon: int,
    rng: np.random.Generator,
    init: dict | None = None,
    fit_args: dict | None = None,
    yearly: bool | None = None,
) -> UsagePaths:
    """Prophet on log(usage + c) and ``SIMULATIONS`` simulated future paths; yearly
    seasonality when two years of history exist, unless ``yearly`` says otherwise."""
    usage = usage.iloc[-TRAIN_WINDOW_DAYS:]
    values = usage.to_numpy(dtype=float)
    observed = np.isfinite(values)
    positive = values[observed & (values > 0)]
    future = pd.DataFrame(
        {"ds": pd.date_range(usage.index[-1] + pd.Timedelta(days=1), periods=horizon)}
    )
    if positive.size == 0:
        zeros = np.zeros(horizon)
        return UsagePaths(zeros, np.zeros((SIMULATIONS, horizon)), zeros, 1.0)
    offset = max(0.01 * float(np.median(positive)), 1e-6)
    observed &= ~_one_off_days(np.log(np.clip(values, 0, None) + offset))
    frame = pd.DataFrame({"ds": usage.index, "y": np.log(np.clip(values, 0, None) + offset)})
    frame = frame[observed].reset_index(drop=True)
    if yearly is None:
        yearly = (usage.index[-1] - frame["ds"].iloc[0]).days + 1 >= YEARLY_MIN_DAYS
    model, fitted = _fit_prophet(frame, future, yearly, init, fit_args)
    recent = frame.iloc[-RESIDUAL_WINDOW_DAYS:]
    center_log = fitted["yhat"].to_numpy()[-horizon:]
    residuals = recent["y"].to_numpy() - fitted["yhat"].to_numpy()[: len(recent)]
    deviations = (
        _trend_draws(model, future, rng) - fitted["trend"].to_numpy()[-horizon:]
    ) + _block_bootstrap(residuals, SIMULATIONS, horizon, rng)
    paths = np.clip(np.exp(center_log + deviations) - offset, 0, None)
    center = np.clip(np.exp(center_log) - offset, 0, None)
    params = {name: np.ravel(model.params[name]) for name in ("k", "m", "sigma_obs", "delta", "beta")}
    params = {name: (float(v[0]) if name in ("k", "m", "sigma_obs") else v) for name, v in params.items()}
    params.update(y_scale=float(model.y_scale), t_days=model.t_scale / pd.Timedelta(days=1))
    return UsagePaths(center, paths, deviations.std(axis=0), offset, params, yearly)


def _one_off_days(logs: np.ndarray) -> np.ndarray:
    """Which days of a daily log series (NaN = missing) are one-off days: further than
    ``ONE_OFF_SDS`` robust sds, in the same direction, both from the median of the same
    weekday in the ``ONE_OFF_WEEKS`` weeks before and from that in the weeks after. A
    level that changes is no one-off day (the weeks after it agree with it), nor is a
    day of the last week (nothing after it says so yet), nor a day of a pattern (see
    ``ONE_OFF_MAX_SHARE``)."""
    series = pd.Series(logs)
    weeks = range(1, ONE_OFF_WEEKS + 1)
    before, after = (
        logs - pd.concat([series.shift(sign * 7 * w) for w in weeks], axis=1).median(axis=1).to_numpy()
        for sign in (1, -1)
    )
    spread = np.concatenate([before[np.isfinite(before)], after[np.isfinite(after)]])
    if spread.size < ONE_OFF_MIN_DAYS:
        return np.zeros(logs.size, dtype=bool)
    bound = ONE_OFF_SDS * _robust_sd(spread)
    with np.errstate(invalid="ignore"):
        one_off = (
            (np.abs(before) > bound) & (np.abs(after) > bound) & (np.sign(before) == np.sign(after))
        )
    if one_off.sum() > ONE_OFF_MAX_SHARE * np.isfinite(logs).sum():
        return np.zeros(logs.size, dtype=bool)
    return one_off


def _fit_prophet(
    frame: pd.DataFrame, future: pd.DataFrame, yearly: bool, init: dict | None, fit_args
):
    """Prophet fitted to ``frame``; its predictions for the last ``RESIDUAL_WINDOW_DAYS``
    observed days (for the residuals) followed by the ``future`` days."""
    model = prophet_class()(
        growth="linear",
        weekly_seasonality=True,
        yearly_seasonality=yearly,
        daily_seasonality=False,
        uncertainty_samples=0,
        **PROPHET_PARAMS,
    )
    model.stan_backend.prepare_data = _stan_arrays
    recent = frame.iloc[-RESIDUAL_WINDOW_DAYS:]
    with warnings.catch_warnings():
        # Prophet's own pandas deprecations are not ours to act on.
        warnings.filterwarnings("ignore", module="prophet")
        model.fit(frame, **({"init": _rescaled(init, frame)} if init else {}), **(fit_args or {}))
        fitted = model.predict(pd.concat([recent[["ds"]], future], ignore_index=True))
    FIT_COUNTER["fits"] += 1
    return model, fitted


def _rescaled(init: dict, frame: pd.DataFrame) -> dict:
    """Another fit's parameters as a start for a fit to ``frame``. Prophet fits in scaled
    units: y divided by its largest absolute value, time by the span of the history. A
    start taken as it is means another function wherever the two scales differ, and a
    one-off day that sets the scale of one fit and not of the next (a $20,000 day in
    $100 days doubles log(y)'s largest value) sent capped L-BFGS fits to a slope of 7
    and a forecast of 1e45, scored as calibration misses (docs/benchmarks.md, "One-off
    days, session 10"). So the start is converted: the same
    trend, seasonality and noise in dollars and days."""
    y_scale = float(frame["y"].abs().max()) or 1.0  # Prophet's absmax scaling
    days = (frame["ds"].iloc[-1] - frame["ds"].iloc[0]) / pd.Timedelta(days=1) or 1.0
    y, slope = init["y_scale"] / y_scale, init["y_scale"] / y_scale * days / init["t_days"]
    return {
        "k": init["k"] * slope,
        "m": init["m"] * y,
        "delta": init["delta"] * slope,
        "beta": init["beta"] * y,
        "sigma_obs": init["sigma_obs"] * y,
    }


def _stan_arrays(init: dict, data: dict) -> tuple[dict, dict]:
    """Prophet's ``CmdStanPyBackend.prepare_data`` without its ``.tolist()``: the same
    values for cmdstanpy, as numpy arrays. cmdstanpy's JSON writer (stanio) walks a nested
    list value by value in Python but converts an array in one call, so the seasonal
    matrix of a two-year fit (730 x 26 values) took 4-5 ms more per fit, 6-7% of a first
    forecast (13 fits). The JSON written is the same, and so is the fit."""
    arrays = {"y", "t", "cap", "t_change", "s_a", "s_m", "X", "delta", "beta"}

    def picked(source: dict, keys: str) -> dict:  # Prophet's keys, in Prophet's order
        return {k: np.asarray(source[k]) if k in arrays else source[k] for k in keys.split()}

    return (
        picked(init, "k m delta beta sigma_obs"),
        picked(data, "T S K tau trend_indicator y t cap t_change s_a s_m X sigmas"),
    )


def _trend_draws(model, future: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """``SIMULATIONS`` future trends with Prophet's own changepoint draws (seeded)."""
    # Prophet draws its future trend changes from np.random: seed it, then restore.
    state = np.random.get_state()
    np.random.seed(int(rng.integers(2**31)))
    try:
        return model.sample_predictive_trend_vectorized(
            model.setup_dataframe(future.copy()), SIMULATIONS
        )
    finally:
        np.random.set_state(state)


def _robust_sd(values: np.ndarray) -> float:
    """The sd of the bulk of ``values``, blind to a few wild ones: IQR / 1.349."""
    high, low = np.percentile(values, [75, 25])
    return float(high - low) / 1.3489795


def _block_bootstrap(
    residuals: np.ndarray, samples: int, horizon: int, rng: np.random.Generator
) -> np.ndarray:
    """Paths of residuals made of consecutive blocks of the observed ones (keeps their
    autocorrelation: a bad week stays a bad week). Centred so they add no bias, and held
    within ``RESIDUAL_CLIP`` robust sds: see there."""
    residuals = residuals - np.median(residuals)
    bound = RESIDUAL_CLIP * _robust_sd(residuals)
    if bound > 0:
        residuals = np.clip(residuals, -bound, bound)
    n = residuals.size
    block = min(BLOCK_DAYS, n)
    blocks = math.ceil(horizon / block)
    starts = rng.integers(0, n - block + 1, size=(samples, blocks))
    index = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(samples, -1)
    return residuals[index[:, :horizon]]
