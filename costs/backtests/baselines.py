"""The two baselines the model is compared with, on the same origins.

* Seasonal naive: the last observed week repeated; its band from the spread of weekly
  differences, widening with each further week; the total's band adds the daily bounds.
* Koku's linear forecast: ordinary least squares on the last 30 days after dropping
  1.5 IQR outliers, 95% prediction band (clamped at 0); the total's band adds the daily
  bounds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from costs.services.forecast.calibration import normal_quantile

LEVEL = 0.8
KOKU_LEVEL = 0.95


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
