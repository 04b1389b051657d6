"""The forecast service: a scope's history from the database, currency, caching and
one fit per scope under concurrent first requests."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd

from costs.services.forecast.model import (
    HORIZONS,
    MIN_HISTORY_DAYS,
    FittedForecast,
    fit_forecast,
    forecast_from_fit,
)
from costs.services.forecast.usage import TRAIN_WINDOW_DAYS
from infraaudit.locks import advisory_lock

logger = logging.getLogger(__name__)

CACHE_TIMEOUT = 2 * 24 * 3600  # keys carry the day, so entries only need to outlive it
LOCK_TIMEOUT = 300  # seconds a fit may hold the lock on databases without advisory locks
LOCK_POLL = 0.05
# A connected provider whose known days end further back than this has stopped reporting
# (an export no longer delivered, an upload-only provider): its later days count as no
# spend, as a disconnected provider's do. Nearer, they are missing (a late export, a sync
# that failed last night), and the scope's history ends where the provider's does.
STALE_DAYS = 45
MATERIAL_SHARE = 0.01


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
        # the spans too: an old window synced again with the same records (no new data
        # version) changes which of its days are known
        (p.id, p.data_version, str(p.coverage_start), str(p.coverage_end), p.is_active,
         p.synced_spans)
        for p in providers
    ]


def _cache_key(organization, providers, last_day: date) -> str:
    """One key per series: the providers the scope covers (id, data version, coverage,
    synced spans) and the last complete day. The organization's total and one provider's
    forecast differ exactly when their providers do, so an organization with a single
    provider shares that provider's fit.
    The version prefix changes whenever the cached ``FittedForecast`` does (v2: totals
    calibrated in log space; v3: 12 calibration origins, daily scores keep their origin;
    v4: median of the simulated totals, conformal total width; v5: calibration origins
    spread back on a geometric grid, each origin's lead kept; v6: backtests fit the
    forecast's own model; v7: 12 calibration origins; v8: a provider's days outside its
    own span no longer hold the total back, see ``_observed_days``, and the history starts
    with the first spend; v9: warm starts in the fit's own units, residuals clipped in the
    simulated paths; v10: one-off days left out of the fit, each side of the total's
    interval its own scores), so a deploy never
    serves an older fit."""
    import hashlib
    import json

    state = json.dumps([last_day.isoformat(), _provider_state(providers)])
    digest = hashlib.sha256(state.encode()).hexdigest()[:40]
    return f"forecast:v10:{organization.id}:{digest}"


def _observed_days(
    providers, records: dict[int, pd.DatetimeIndex], days: pd.DatetimeIndex
) -> np.ndarray:
    """Which days of the scope's total are known. A provider knows a day it has records
    for or that one of its syncs covered (``Provider.synced_mask``: no records there,
    nothing was spent); a day between those without either is missing, so the total is
    too. Outside its own days a provider does not hold the total back: before its first
    known day it had not spent yet, and after its last it stopped spending if it is
    disconnected or has not reported for ``STALE_DAYS``; only a connected provider that
    is a few days behind makes the last days missing. (Read as missing, one provider
    with a month of old uploads cut the organization's history to that month.) The
    total starts on the first day any provider knows."""
    synced = {p.id: p.synced_days() for p in providers}
    with_data = [p for p in providers if len(records.get(p.id, ())) or synced[p.id]]
    if not with_data:
        return np.zeros(len(days), dtype=bool)
    known = np.ones(len(days), dtype=bool)
    earliest = days[-1]
    for p in with_data:
        have = records.get(p.id, pd.DatetimeIndex([]))
        spans = synced[p.id]
        start = pd.Timestamp(spans[0][0]) if spans else None
        end = pd.Timestamp(spans[-1][1]) if spans else None
        first = min(day for day in (start, have.min() if len(have) else None) if day is not None)
        last = max(day for day in (end, have.max() if len(have) else None) if day is not None)
        # days is consecutive (a date_range): the mask lines up with it
        covered = days.isin(have) | (days < first)
        covered |= p.synced_mask(days[0].date(), len(days))
        if not p.is_active or (days[-1] - last).days > STALE_DAYS:
            covered |= days > last
        known &= covered
        earliest = min(earliest, first)
    return known & (days >= earliest)


def _scope_history(
    *, organization, provider, providers, last_day: date
) -> tuple[pd.Series, dict[str, pd.Series]]:
    """The scope's daily total and its (provider, service) components from the first
    known day (at most ``TRAIN_WINDOW_DAYS`` back) to ``last_day``; NaN where missing."""
    from costs.selectors import daily_component_totals

    start = last_day - timedelta(days=TRAIN_WINDOW_DAYS - 1)
    rows = daily_component_totals(
        organization=organization, provider=provider, start=start, end=last_day
    )
    frame = pd.DataFrame(rows, columns=["day", "provider", "service", "amount"])
    frame["day"] = pd.DatetimeIndex(frame["day"])
    records = {
        provider_id: pd.DatetimeIndex(group.unique())
        for provider_id, group in frame.groupby("provider")["day"]
    }
    days = pd.date_range(start, last_day)
    # A provider with a sliver of the scope's spend does not decide which days are known:
    # its unknown days count as no spend (an error under MATERIAL_SHARE of the total),
    # where read as missing a $1-a-day upload-only provider cut an organization's 425
    # days of history to 188.
    spend = frame.groupby("provider")["amount"].sum().abs() if len(frame) else pd.Series()
    material = [
        p for p in providers if spend.get(p.id, 0) >= MATERIAL_SHARE * float(spend.sum())
    ] if len(providers) > 1 else list(providers)
    known = _observed_days(material, records, days)
    if not known.any():
        return pd.Series(dtype=float), {}
    days, known = days[int(np.argmax(known)) :], known[int(np.argmax(known)) :]
    frame["name"] = frame["provider"].astype(str) + ":" + frame["service"]
    if frame.empty:
        table = pd.DataFrame(index=days, dtype=float)
    else:
        table = frame.pivot_table(index="day", columns="name", values="amount", aggfunc="sum")
        table = table.reindex(days).fillna(0.0)
    table[~known] = np.nan
    total = table.sum(axis=1) if len(table.columns) else pd.Series(0.0, index=days)
    total[~known] = np.nan
    # The history starts with the first spend: a first sync backfills 13 months, and an
    # account that was idle for most of them is not a series that jumped from nothing
    # (in log space, that step made a 30-day forecast 40x too low, or 100x too high).
    spent = np.flatnonzero(total.to_numpy() > 0)
    if not len(spent):
        return pd.Series(dtype=float), {}
    total = total.iloc[spent[0] :]
    return total, {name: table[name].iloc[spent[0] :] for name in table.columns}


def _insufficient(available: int) -> None:
    from infraaudit.errors import Unprocessable

    raise Unprocessable(
        f"a forecast needs at least {MIN_HISTORY_DAYS} complete days of history; "
        f"this scope has {available}",
        code="INSUFFICIENT_HISTORY",
        details={"history_days_needed": MIN_HISTORY_DAYS, "history_days_available": available},
    )


@contextmanager
def _fit_lock(key: str) -> Iterator[None]:
    """Serializes the first fit of one cache key across threads and processes: a
    PostgreSQL session advisory lock, or elsewhere an entry added to the shared cache."""
    from django.core.cache import cache

    with advisory_lock(key) as held:
        if held:
            yield
            return
    deadline = time.monotonic() + LOCK_TIMEOUT
    while not cache.add(f"{key}:lock", 1, LOCK_TIMEOUT) and time.monotonic() < deadline:
        if cache.get(key) is not None:
            break
        time.sleep(LOCK_POLL)
    try:
        yield
    finally:
        cache.delete(f"{key}:lock")


def _fitted(*, organization, provider, providers, last_day: date) -> _CachedFit:
    from django.core.cache import cache
    from django.utils import timezone

    from costs.selectors import cost_currency

    key = _cache_key(organization, providers, last_day)
    cached = cache.get(key)
    if cached is not None:
        return cached
    with _fit_lock(key):
        cached = cache.get(key)
        if cached is not None:
            return cached
        history, components = _scope_history(
            organization=organization, provider=provider, providers=providers, last_day=last_day
        )
        # Known days: a day below zero (a credit larger than its usage) is missing for the
        # model too (``model._Scope``); counted, 13 known days got a forecast and mostly
        # credit days a 500.
        values = history.to_numpy()
        available = int((np.isfinite(values) & (values >= 0)).sum()) if len(history) else 0
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


def _scope_fitted(*, organization, provider=None) -> _CachedFit:
    """The scope's cached fit for the last complete day (yesterday, UTC), fitted if none."""
    from costs.selectors import scope_providers, utc_today

    return _fitted(
        organization=organization,
        provider=provider,
        providers=scope_providers(organization=organization, provider=provider),
        last_day=utc_today() - timedelta(days=1),
    )


def forecasts_warm(*, organization) -> dict[str, int]:
    """Fit and cache the forecasts a dashboard asks for first, the organization's total and
    each provider's, for the current last complete day. Run after every sync job (a
    Celery task, with a broker), so that the first request of the day reads a cached fit
    instead of waiting for one. A scope that cannot be forecast (too little history,
    several currencies) is skipped: its requests answer their 422 as before."""
    from costs.selectors import scope_providers
    from infraaudit.errors import Unprocessable

    counts = {"warmed": 0, "skipped": 0}
    for provider in [None, *scope_providers(organization=organization)]:
        try:
            _scope_fitted(organization=organization, provider=provider)
        except Unprocessable as exc:
            logger.info(
                "forecast of org %s scope %s not warmed: %s",
                organization.id, provider.id if provider else "all", exc,
            )
            counts["skipped"] += 1
        else:
            counts["warmed"] += 1
    return counts


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
    if days not in HORIZONS:
        raise ValueError(f"days must be one of {HORIZONS}")
    cached = _scope_fitted(organization=organization, provider=provider)
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
