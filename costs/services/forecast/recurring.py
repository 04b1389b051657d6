"""Recurring charges that land on a fixed day of the month (support plans, reservation
and subscription fees), found per component series and forecast deterministically."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RecurringCharge:
    """A charge that lands on ``day_of_month`` (1-31) of every month, or on its last day
    in a month too short for it: billed "on the 30th" is February's 28th (or 29th), and
    "on the 31st" is every month's last day."""

    component: str
    day_of_month: int
    amount: float
    months: int


def _calendar(index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Each day's day of the month and whether it ends its month. Computed once per
    history: pandas took ~50 us per call, and a fit asked for them once per candidate day,
    component and backtest origin (21k times, 1 s, for 150 components)."""
    return np.asarray(index.day), np.asarray(index.is_month_end)


def _lands(calendar: tuple[np.ndarray, np.ndarray], day_of_month: int) -> np.ndarray:
    """Whether a charge billed on ``day_of_month`` lands on each day of ``calendar``."""
    days, month_end = calendar
    return (days == day_of_month) | (month_end & (days < day_of_month))


def _lands_on(index: pd.DatetimeIndex, day_of_month: int) -> np.ndarray:
    return _lands(_calendar(index), day_of_month)


def _days_of_month_landing(day: pd.Timestamp) -> range:
    """The days of the month whose charges land on ``day`` (a month's last day takes the
    charges of the days it lacks)."""
    return range(day.day, 32) if day.is_month_end else range(day.day, day.day + 1)


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
    name: str, jumps: _Jumps, index: pd.DatetimeIndex, calendar: tuple[np.ndarray, np.ndarray]
) -> tuple[list[RecurringCharge], np.ndarray]:
    """Fixed-day charges of one component and the part of its history they explain
    (``calendar``: ``_calendar(index)``)."""
    explained = np.zeros(len(index))
    charged, observed = jumps.charged, jumps.observed
    if not charged[-DETECTION_WINDOW_DAYS:].any():
        return [], explained
    recent_charged = index[-DETECTION_WINDOW_DAYS:][charged[-DETECTION_WINDOW_DAYS:]]
    candidates = sorted({d for day in recent_charged for d in _days_of_month_landing(day)})
    charges = []
    for day_of_month in candidates:
        hits = np.flatnonzero(_lands(calendar, day_of_month) & observed)
        misses = np.flatnonzero(~charged[hits])
        run = len(hits) - (misses[-1] + 1 if misses.size else 0)
        if run < 2:
            continue
        last = hits[-run:]
        if explained[last].any():
            continue  # the same days as a charge found already (the 30th and the 31st in
            # a run of months that all end on one of them): one charge, not two
        amounts = jumps.excess[last]
        pure = bool(jumps.pure[last[-3:]].all())
        # The latest two months agree (a price that changed is forecast at its latest
        # amount; a one-off coincidence on that day of the month is not a charge).
        if run < (2 if pure else 3) or amounts[-2:].max() > 3 * amounts[-2:].min():
            continue
        charges.append(RecurringCharge(name, day_of_month, float(amounts[-1]), run))
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
    calendar = None
    for name, series in components.items():
        measured = jumps[name] if jumps is not None else _jumps(series)
        cut = series.index if until is None else series.index[:until]
        if calendar is None or len(calendar[0]) != len(cut):  # one index for all, normally
            calendar = _calendar(cut)
        if until is not None:
            measured = _Jumps(*(part[:until] for part in (
                measured.excess, measured.charged, measured.pure, measured.observed)))
        found, part = _recurring_in(name, measured, cut, calendar)
        if found:
            charges.extend(found)
            explained = part if explained is None else explained + part
    return charges, explained


def _recurring_future(charges: Iterable[RecurringCharge], days: pd.DatetimeIndex) -> np.ndarray:
    out = np.zeros(len(days))
    for charge in charges:
        out += np.where(_lands_on(days, charge.day_of_month), charge.amount, 0.0)
    return out

