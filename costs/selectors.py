"""Reads of cost data: overview, trend buckets, daily series. Aggregation runs in the DB,
over the service-day totals (``ServiceDayTotal``) wherever a read does not group by region
or account: they hold a fraction of the records (one row per provider, day, service and
currency), always equal to the records' sums."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import FloatField, QuerySet, Sum
from django.db.models.functions import Cast, TruncMonth, TruncWeek
from django.utils import timezone

from accounts.models import Organization
from costs.models import CostRecord, ServiceDayTotal
from costs.money import ZERO
from infraaudit.errors import Unprocessable
from providers.models import Provider


def utc_today() -> date:
    """Today's billing day (UTC; USE_TZ makes now() UTC)."""
    return timezone.now().date()


def _records(*, organization: Organization, provider: Provider | None = None) -> QuerySet:
    qs = CostRecord.objects.filter(organization=organization)
    if provider is not None:
        qs = qs.filter(provider=provider)
    return qs


def _totals(*, organization: Organization, provider: Provider | None = None) -> QuerySet:
    """The scope's service-day totals: what ``_records`` sums to per day and service."""
    qs = ServiceDayTotal.objects.filter(organization=organization)
    if provider is not None:
        qs = qs.filter(provider=provider)
    return qs


def single_currency(qs: QuerySet, provider: Provider | None = None) -> str:
    """The one currency of ``qs`` (the records of ``provider``, or of the organization when
    None); 422 naming them when there are several. Only an organization-wide request can
    be helped by scoping it to one provider."""
    currencies = sorted(set(qs.order_by().values_list("currency", flat=True).distinct()))
    if len(currencies) > 1:
        listed = ", ".join(currencies)
        if provider is None:
            message = f"amounts are billed in several currencies ({listed}); scope the request with provider_id"
            details = {"currencies": currencies}
        else:
            message = (
                f"provider {provider.id} is billed in several currencies ({listed}), and amounts "
                "in different currencies are not added together"
            )
            details = {"currencies": currencies, "provider_id": provider.id}
        raise Unprocessable(message, code="MIXED_CURRENCIES", details=details)
    return currencies[0] if currencies else settings.DEFAULT_CURRENCY


def _billed_total(qs: QuerySet, start: date, end: date) -> Decimal:
    return qs.filter(day__gte=start, day__lte=end).aggregate(total=Sum("billed_amount"))[
        "total"
    ] or ZERO


@dataclass(frozen=True)
class Overview:
    currency: str
    month_start: date
    today: date
    current_amount: Decimal
    last_month_amount: Decimal
    mom_change_percent: Decimal | None
    by_provider: list[tuple[Provider, Decimal]]


def cost_overview(
    *, organization: Organization, provider: Provider | None = None, today: date | None = None
) -> Overview:
    """Month to date, last month, the month-over-month change on comparable days, and the
    month to date of every provider of the organization, largest first; of ``provider``
    alone when given (an organization billed in several currencies has no one total)."""
    today = today or utc_today()
    month_start = today.replace(day=1)
    last_month_end = month_start - timedelta(days=1)
    last_month_start = last_month_end.replace(day=1)
    comparable_end = last_month_start.replace(
        day=min(today.day, calendar.monthrange(last_month_start.year, last_month_start.month)[1])
    )

    qs = _totals(organization=organization, provider=provider)
    currency = single_currency(qs.filter(day__gte=last_month_start, day__lte=today), provider)
    current = _billed_total(qs, month_start, today)
    last_month = _billed_total(qs, last_month_start, last_month_end)
    comparable = _billed_total(qs, last_month_start, comparable_end)
    mom = None
    if comparable != ZERO:
        mom = ((current - comparable) / comparable * 100).quantize(
            Decimal("0.1"), rounding=ROUND_HALF_UP
        )

    per_provider = dict(
        qs.filter(day__gte=month_start, day__lte=today)
        .values("provider_id")
        .annotate(total=Sum("billed_amount"))
        .values_list("provider_id", "total")
    )
    providers = [provider] if provider else list(Provider.objects.filter(organization=organization))
    by_provider = sorted(
        ((p, per_provider.get(p.id) or ZERO) for p in providers),
        key=lambda item: (-item[1], item[0].name),
    )
    return Overview(
        currency=currency,
        month_start=month_start,
        today=today,
        current_amount=current,
        last_month_amount=last_month,
        mom_change_percent=mom,
        by_provider=by_provider,
    )


GROUP_FIELDS = {"provider": "provider__name", "service": "service", "region": "region"}


def bucket_start(day: date, granularity: str) -> date:
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _bucket_starts(start: date, end: date, granularity: str) -> list[date]:
    buckets, current = [], bucket_start(start, granularity)
    while current <= end:
        buckets.append(current)
        if granularity == "day":
            current += timedelta(days=1)
        elif granularity == "week":
            current += timedelta(days=7)
        else:
            current = (current + timedelta(days=32)).replace(day=1)
    return buckets


@dataclass(frozen=True)
class TrendBucket:
    start: date
    breakdown: dict[str, Decimal]


@dataclass(frozen=True)
class Trend:
    currency: str
    buckets: list[TrendBucket]


def cost_trend(
    *,
    organization: Organization,
    days: int,
    granularity: str,
    group_by: str,
    provider: Provider | None = None,
    today: date | None = None,
) -> Trend:
    """Spend of the ``days`` days ending today in day/week/month buckets (weeks start on
    Monday, a first bucket cut by the window counts only the days inside it), each broken
    down by provider name, service or region. Empty buckets are present."""
    today = today or utc_today()
    start = today - timedelta(days=days - 1)
    # Only a breakdown by region needs the records themselves.
    source = _records if group_by == "region" else _totals
    qs = source(organization=organization, provider=provider).filter(
        day__gte=start, day__lte=today
    )
    currency = single_currency(qs, provider)

    if granularity == "week":
        qs = qs.annotate(bucket=TruncWeek("day"))
    elif granularity == "month":
        qs = qs.annotate(bucket=TruncMonth("day"))
    key_field = GROUP_FIELDS[group_by]
    bucket_expr = "day" if granularity == "day" else "bucket"
    rows = (
        qs.values(bucket_expr, key_field)
        .annotate(total=Sum("billed_amount"))
        .order_by()
        .values_list(bucket_expr, key_field, "total")
    )
    by_bucket: dict[date, dict[str, Decimal]] = {}
    for bucket, key, total in rows:
        if hasattr(bucket, "date"):
            bucket = bucket.date()
        key = key or "global"
        parts = by_bucket.setdefault(bucket, {})
        parts[key] = parts.get(key, ZERO) + (total or ZERO)
    buckets = [
        TrendBucket(start=bucket, breakdown=by_bucket.get(bucket, {}))
        for bucket in _bucket_starts(start, today, granularity)
    ]
    return Trend(currency=currency, buckets=buckets)


def provider_service_daily_totals(
    *, provider: Provider, start: date, end: date
) -> list[tuple[date, str, str, Decimal]]:
    """(day, service, currency, billed total) of one provider's days ``start..end``,
    oldest first: the input of anomaly detection."""
    return list(
        ServiceDayTotal.objects.filter(provider=provider, day__gte=start, day__lte=end)
        .values("day", "service", "currency")
        .annotate(total=Sum("billed_amount"))
        .order_by("day", "service", "currency")
        .values_list("day", "service", "currency", "total")
    )


def anomaly_list(
    *,
    organization: Organization,
    days: int,
    provider: Provider | None = None,
    status: str | None = None,
    today: date | None = None,
) -> QuerySet:
    """The organization's anomalies of the ``days`` complete days before today, newest
    first (larger impact first within a day)."""
    from costs.models import Anomaly

    today = today or utc_today()
    qs = Anomaly.objects.filter(organization=organization, date__gte=today - timedelta(days=days))
    if provider is not None:
        qs = qs.filter(provider=provider)
    if status:
        qs = qs.filter(status=status)
    return qs.select_related("provider", "dismissed_by").order_by("-date", "-impact_amount", "-id")


# Reads for forecasts (costs/services/forecast/).


def daily_component_totals(
    *,
    organization: Organization,
    provider: Provider | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[tuple[date, int, str, float]]:
    """(day, provider id, service, billed total) for each day, provider, service and
    currency that has records, oldest first (the forecast, their only reader, refuses a
    scope billed in several currencies first). The totals are floats, summed exactly by
    the database and rounded once: the forecast works in floats."""
    qs = _totals(organization=organization, provider=provider)
    if start is not None:
        qs = qs.filter(day__gte=start)
    if end is not None:
        qs = qs.filter(day__lte=end)
    # The service-day totals are this grain already: grouping them again sorted 110k
    # service names, 0.25 s of a 0.27 s read.
    return list(
        qs.order_by("day").values_list(
            "day", "provider_id", "service", Cast("billed_amount", FloatField())
        )
    )


def cost_currency(
    *,
    organization: Organization,
    provider: Provider | None = None,
    start: date | None = None,
    end: date | None = None,
) -> str:
    """The one currency of the scope's records in ``start``..``end``; 422 naming them when
    there are several (see ``single_currency``)."""
    qs = _totals(organization=organization, provider=provider)
    if start is not None:
        qs = qs.filter(day__gte=start)
    if end is not None:
        qs = qs.filter(day__lte=end)
    return single_currency(qs, provider)


def scope_providers(
    *, organization: Organization, provider: Provider | None = None
) -> list[Provider]:
    """The providers a cost scope covers: the one asked for, or all of the organization's."""
    if provider is not None:
        return [provider]
    return list(Provider.objects.filter(organization=organization).order_by("id"))
