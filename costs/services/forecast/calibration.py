"""Calibration of the simulated spread on backtests: the scores and the quantiles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Calibration:
    """Backtest scores of the simulated spread against what really happened.

    ``daily``: (step, z) with z = (log(actual + c) - log(forecast + c)) / simulated log sd.
    ``total``: (days, error, simulated variance, forecast) of the cumulative totals of the
    first 7, 14, ... days of each origin, error = actual total - forecast total."""

    origins: int = 0
    daily: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    total: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))


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

