"""Anomaly detection against the database: run the detector (``detector.py``) over a
provider's daily totals and its material services, upsert ``Anomaly`` rows, and the
review decisions (dismiss, reopen). The method is described in ``detector.py``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from costs.services.anomalies.detector import (
    HISTORY_DAYS,
    Finding,
    Thresholds,
    detect_arrays,
    deviation_percent,
    expected_range,
)
from infraaudit.errors import Conflict

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# Money helpers
# --------------------------------------------------------------------------------------

_Q = Decimal("0.0001")


def _money(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(_Q, rounding=ROUND_HALF_UP)


def _pct(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------------------
# The service: read through selectors, judge, upsert
# --------------------------------------------------------------------------------------

NO_SERVICE = "(no service)"


def policy_thresholds(organization) -> Thresholds:
    """The organization's ``AnomalyPolicy`` as thresholds (defaults without one)."""
    from costs.models import AnomalyPolicy

    policy = AnomalyPolicy.objects.filter(organization=organization).first()
    if policy is None:
        return Thresholds()
    return Thresholds(
        min_impact=float(policy.min_impact_amount),
        min_deviation=float(policy.min_deviation_percent),
        medium_impact=float(policy.medium_impact_amount),
        medium_deviation=float(policy.medium_deviation_percent),
        high_impact=float(policy.high_impact_amount),
        high_deviation=float(policy.high_deviation_percent),
        critical_impact=float(policy.critical_impact_amount),
        critical_deviation=float(policy.critical_deviation_percent),
        material_daily_spend=float(policy.material_daily_spend),
        sensitivity=float(policy.sensitivity),
    )


@dataclass(frozen=True)
class ProviderSeries:
    """A provider's daily spend in its main currency, one array per service, from
    ``start`` (consecutive days; zero where the provider synced a day without records,
    NaN on a day it never synced)."""

    start: date
    currency: str
    total: np.ndarray
    services: dict[str, np.ndarray]
    exact: dict[tuple[str, int], Decimal]  # (service or "" for the total, index) -> amount

    def index(self, day: date) -> int:
        return (day - self.start).days

    def day(self, index: int) -> date:
        return self.start + timedelta(days=index)


def provider_series(*, provider, start: date, end: date) -> ProviderSeries | None:
    """Daily totals of ``provider`` from ``HISTORY_DAYS`` before ``start`` to ``end``.

    Amounts in other currencies than the provider's main one (largest spend) are left
    out: amounts in different currencies are never added. A day without records is zero
    spend inside one of the provider's synced spans and missing (NaN) outside them:
    nothing synced it (a gap between two sync windows that did not touch, the days after
    the last sync), so nothing says it was free."""
    from costs.selectors import provider_service_daily_totals

    history_start = start - timedelta(days=HISTORY_DAYS)
    rows = provider_service_daily_totals(provider=provider, start=history_start, end=end)
    if not rows:
        return None
    spend: dict[str, Decimal] = {}
    for _day, _service, currency, amount in rows:
        spend[currency] = spend.get(currency, Decimal(0)) + abs(amount)
    currency = max(sorted(spend), key=lambda c: spend[c])
    first = min(day for day, _s, c, _a in rows if c == currency)
    synced = provider.synced_days()
    if synced:  # inside the synced spans, a day without rows is zero
        first = max(history_start, min(first, synced[0][0]))
    n = (end - first).days + 1
    services: dict[str, np.ndarray] = {}
    exact: dict[tuple[str, int], Decimal] = {}
    for day, service, row_currency, amount in rows:
        if row_currency != currency:
            continue
        name = service or NO_SERVICE
        index = (day - first).days
        services.setdefault(name, np.zeros(n))[index] += float(amount)
        exact[(name, index)] = exact.get((name, index), Decimal(0)) + amount
        exact[("", index)] = exact.get(("", index), Decimal(0)) + amount
    total = np.zeros(n)
    for values in services.values():
        total += values
    unsynced = ~_known_days(provider, first, n, rows)
    for values in (total, *services.values()):
        values[unsynced] = np.nan
    return ProviderSeries(first, currency, total, services, exact)


def _known_days(provider, first: date, n: int, rows) -> np.ndarray:
    """Which of the ``n`` days from ``first`` the provider knows: those inside its synced
    spans and those it has records for (in any currency)."""
    known = provider.synced_mask(first, n)
    for day, *_ in rows:
        if 0 <= (day - first).days < n:
            known[(day - first).days] = True
    return known


@dataclass
class DetectionResult:
    """What one detection run changed: ids created and updated, ids removed."""

    provider_id: int
    date_from: date | None = None
    date_to: date | None = None
    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "provider_id": self.provider_id,
            "date_from": self.date_from.isoformat() if self.date_from else None,
            "date_to": self.date_to.isoformat() if self.date_to else None,
            "created": self.created,
            "updated": self.updated,
            "removed": self.removed,
        }


_AMOUNT_FIELDS = (
    "actual_amount", "expected_amount", "expected_lower", "expected_upper",
    "deviation_percent", "impact_amount", "currency", "severity", "top_services",
)


def _finding_fields(finding: Finding, series: ProviderSeries) -> dict:
    actual = series.exact.get((finding.service, finding.index), Decimal(0))
    expected = _money(finding.expected)
    return {
        "actual_amount": actual,
        "expected_amount": expected,
        "expected_lower": _money(finding.lower),
        "expected_upper": _money(finding.upper),
        "deviation_percent": _pct(deviation_percent(float(actual), float(expected))),
        "impact_amount": actual - expected,
        "currency": series.currency,
        "severity": finding.severity,
        "top_services": finding.top_services,
    }


def anomalies_detect(
    *, provider, start: date, end: date, today: date | None = None
) -> DetectionResult:
    """Judge every complete day ``start..end`` of ``provider`` (its total and each service
    with material spend) and make the ``Anomaly`` rows agree, idempotently:

    * a new anomalous day is created (active) and alerted;
    * an existing one is updated when a restatement changed its amounts or severity;
      a dismissed one stays dismissed;
    * a day no longer anomalous loses its row if it was still active (dismissed rows
      are the record of a decision and are kept).
    """
    from costs.models import Anomaly
    from costs.selectors import utc_today
    from providers.models import Provider

    today = today or utc_today()
    end = min(end, today - timedelta(days=1))  # today is not complete
    result = DetectionResult(provider_id=provider.id, date_from=start, date_to=end)
    if start > end:
        return result
    with transaction.atomic():
        # One detection per provider at a time (a sync and the admin may race); the row
        # read under the lock has the coverage the last sync committed.
        locked = Provider.objects.select_for_update().filter(pk=provider.pk).first()
        series = provider_series(provider=locked or provider, start=start, end=end)
        thresholds = policy_thresholds(provider.organization)
        findings: list[Finding] = []
        if series is not None:
            findings = detect_arrays(
                start=series.start,
                total=series.total,
                services=series.services,
                window=(series.index(start), series.index(end)),
                thresholds=thresholds,
            )
        existing = {
            (a.service, a.date): a
            for a in Anomaly.objects.select_for_update().filter(
                provider=provider, date__gte=start, date__lte=end
            )
        }
        seen, new, escalated = set(), [], []
        for finding in findings:
            key = (finding.service, series.day(finding.index))
            seen.add(key)
            fields = _finding_fields(finding, series)
            row = existing.get(key)
            if row is None:
                new.append(
                    Anomaly(
                        organization_id=provider.organization_id, provider=provider,
                        service=key[0], date=key[1], **fields,
                    )
                )
            elif any(getattr(row, name) != value for name, value in fields.items()):
                rank = Anomaly.Severity.values.index
                if rank(fields["severity"]) > rank(row.severity):
                    escalated.append(row)
                for name, value in fields.items():
                    setattr(row, name, value)
                row.save(update_fields=[*_AMOUNT_FIELDS, "updated_at"])
                result.updated.append(row.id)
        stale = [
            row.id for key, row in existing.items()
            if key not in seen and row.status == Anomaly.Status.ACTIVE
        ]
        Anomaly.objects.filter(pk__in=stale).delete()
        result.removed = stale
        created = Anomaly.objects.bulk_create(new)
        result.created = [row.id for row in created]
        if created or escalated:  # an escalation may reach a webhook's severity now
            from costs.services.alerts import alerts_enqueue

            alerts_enqueue(anomalies=[*created, *escalated], today=today)
    logger.info(
        "anomalies of provider %s %s..%s: %d created, %d updated, %d removed",
        provider.id, start, end, len(result.created), len(result.updated), len(result.removed),
    )
    return result


def anomaly_locked(anomaly, *related: str):
    """The anomaly again, locked (with ``related`` fields joined); ``Http404`` when a
    re-detection removed it since it was read (its day judged normal again): a dismissal
    racing that removal answered 500."""
    from costs.models import Anomaly

    locked = (
        Anomaly.objects.select_for_update(of=("self",)).select_related(*related)
        .filter(pk=anomaly.pk).first()
    )
    if locked is None:
        raise Http404(f"anomaly {anomaly.pk} no longer exists: its day was judged normal again")
    return locked


def anomaly_dismiss(*, anomaly, user, reason: str):
    """Dismiss an active anomaly with a reason (1..500 characters), recording who and when.
    Already dismissed: ``Conflict`` and the anomaly is left unchanged."""
    from costs.models import Anomaly

    reason = (reason or "").strip()
    if not 1 <= len(reason) <= 500:
        raise ValidationError({"reason": "a reason of 1 to 500 characters is required"})
    with transaction.atomic():
        locked = anomaly_locked(anomaly)
        if locked.status == Anomaly.Status.DISMISSED:
            raise Conflict(
                f"anomaly {locked.pk} is already dismissed",
                code="ALREADY_DISMISSED",
                details={"id": locked.pk, "status": locked.status},
            )
        locked.status = Anomaly.Status.DISMISSED
        locked.dismiss_reason = reason
        locked.dismissed_by = user
        locked.dismissed_at = timezone.now()
        locked.save(
            update_fields=["status", "dismiss_reason", "dismissed_by", "dismissed_at", "updated_at"]
        )
    return locked


def anomaly_review_logged(*, anomaly, user, message: str) -> None:
    """Record a review decision in the anomaly's admin History, where finance staff read
    who dismissed what and why, whether it was done in the admin or through the API."""
    from django.contrib.admin.models import CHANGE, LogEntry

    LogEntry.objects.log_actions(
        user_id=user.pk, queryset=[anomaly], action_flag=CHANGE, change_message=message,
        single_object=True,
    )


def anomaly_reopen(*, anomaly):
    """Make a dismissed anomaly active again (the dismissal is cleared)."""
    from costs.models import Anomaly

    with transaction.atomic():
        locked = anomaly_locked(anomaly)
        if locked.status != Anomaly.Status.DISMISSED:
            raise Conflict(f"anomaly {locked.pk} is not dismissed", code="NOT_DISMISSED")
        locked.status = Anomaly.Status.ACTIVE
        locked.dismiss_reason = ""
        locked.dismissed_by = None
        locked.dismissed_at = None
        locked.save(
            update_fields=["status", "dismiss_reason", "dismissed_by", "dismissed_at", "updated_at"]
        )
    return locked


@dataclass(frozen=True)
class ChartPoint:
    day: date
    actual: float
    expected: float | None
    lower: float | None
    upper: float | None


def anomaly_chart_window(
    *, anomaly, days_before: int = 35, days_after: int = 14, today: date | None = None
) -> tuple[date, date]:
    """The days a chart of the anomaly covers: ``days_before`` before its day to
    ``days_after`` after it, but no later than yesterday (the anomaly's day at least)."""
    from costs.selectors import utc_today

    today = today or utc_today()
    first = anomaly.date - timedelta(days=days_before)
    last = max(anomaly.date, min(anomaly.date + timedelta(days=days_after), today - timedelta(days=1)))
    return first, last


def anomaly_chart_series(
    *, anomaly, days_before: int = 35, days_after: int = 14, today: date | None = None
) -> list[ChartPoint]:
    """The anomaly's series (provider total or service) over its chart window
    (``anomaly_chart_window``), with the expected band as the detector sees it today.
    Days the provider never synced are left out."""
    first, last = anomaly_chart_window(
        anomaly=anomaly, days_before=days_before, days_after=days_after, today=today
    )
    series = provider_series(provider=anomaly.provider, start=first, end=last)
    if series is None:
        return []
    values = series.total if not anomaly.service else series.services.get(anomaly.service)
    if values is None:
        values = np.where(np.isnan(series.total), np.nan, 0.0)
    thresholds = policy_thresholds(anomaly.organization)
    bands = expected_range(values, series.start, sensitivity=thresholds.sensitivity)

    def _opt(array, i):
        value = float(array[0, i])
        return value if np.isfinite(value) else None

    points = []
    for i in range(max(series.index(first), 0), series.index(last) + 1):
        if np.isnan(values[i]):
            continue
        points.append(
            ChartPoint(
                day=series.day(i), actual=float(values[i]), expected=_opt(bands.expected, i),
                lower=_opt(bands.lower, i), upper=_opt(bands.upper, i),
            )
        )
    return points
