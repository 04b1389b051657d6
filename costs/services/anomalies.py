"""Anomaly detection: which billing days were really above their expected range.

The core (``expected_range``) is a pure, vectorised function over daily series; the
service (``anomalies_detect``) reads a provider's daily totals through selectors, runs it
for the provider's total and for each of its services with material spend, and upserts
``Anomaly`` rows. ``anomaly_dismiss`` / ``anomaly_reopen`` are the review decisions.

The expected range of day *t* of a series (all statistics robust, so earlier anomalies
cannot drag the baseline upward: a spike is one sample among many, never the median):

* **Weekly seasonality + trend** (log space, so noise is multiplicative): the level now,
  ``median(y[t-7 … t-1])`` (a whole week), plus the weekday effect, the median over the
  previous 8 same weekdays of ``y[u] - median(y[u-3 … u+3])``. The level carries growth
  and follows a level shift within 4 days; the weekday effect is relative to the level
  of its own week, so neither trend nor a level shift biases it.
* **Band**: ``sigma`` = the 10%-trimmed standard deviation of week-over-week differences
  ``y[u] - y[u-7]`` over the previous 112 days (weekly pattern cancelled, spikes
  trimmed), ``/sqrt(2)``, floored at ``SIGMA_FLOOR`` (3%) and inflated by
  ``PREDICTION_INFLATION`` for the error of the baseline itself;
  ``upper = base*exp(k*sigma)``, ``lower = base*exp(-k*sigma)``, ``k`` = the policy's
  sensitivity (default 4.4).
* **Recurring day-of-month charges** (support plans, reservations billed on the 1st):
  for the same day of the month in each of the previous 3 months (the last day for a
  month's last day), the excess over that day's own same-weekday neighbours (±7, ±14
  days). When at least 2 of those months had a significant excess (above the band
  half-width), the day is a recurring-charge day: the median excess is added to the
  expectation and the band widened to the range of the excesses ±10%. A new recurring
  charge is therefore flagged on its first two billings and expected from its third.
* **Minimum history**: a day is judged only when its series has ``MIN_HISTORY_DAYS``
  (119 days, 17 weeks) of data before it — the 112-day noise window plus a week; days
  inside the provider's synced coverage without records count as zero spend.

Dips are never anomalies: a day is anomalous only when ``actual > upper``, and it is
recorded only when its impact (``actual - expected``) and deviation percent reach the
organization's ``AnomalyPolicy`` minimums. A service is analysed on a day only when its
spend is material: mean daily spend over the previous 56 days of at least
``policy.material_daily_spend`` (default 5.00) and at least ``MATERIAL_SHARE`` (1%) of
the provider's mean daily total over the same days. Smaller services still count in the
provider total and in its ``top_services``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from numpy.lib.stride_tricks import sliding_window_view

from infraaudit.errors import Conflict

logger = logging.getLogger(__name__)

WEEKS = 8  # same-weekday samples of the baseline
MIN_HISTORY_DAYS = 119  # 17 weeks of data before a day can be judged
SCALE_DAYS = 112  # week-over-week differences the noise scale is measured on
SIGMA_FLOOR = 0.03  # even a flat series may move 3% a day without notice
PREDICTION_INFLATION = 1.2  # sqrt(1 + variance of the baseline's error / noise variance)
DEFAULT_SENSITIVITY = 4.4  # k: band half-width in noise standard deviations
RECURRING_MONTHS = 3
RECURRING_MIN_MONTHS = 2
RECURRING_TOLERANCE = 0.10
MATERIAL_DAYS = 56
MATERIAL_SHARE = 0.01
TOP_SERVICES = 5
# Days read before the detection window: the minimum history (119), which also covers
# three months back for recurring charges (~92) and those days' neighbours.
HISTORY_DAYS = MIN_HISTORY_DAYS + 7

_TRIM = 0.10
_TRIMMED_STD = 0.6616  # std of a standard normal trimmed by 10% at each end
_EPS_MIN = 0.01


# --------------------------------------------------------------------------------------
# The pure core
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bands:
    """Per-day expectation of each series (shape ``(series, days)``); NaN where the day
    could not be judged (not enough history)."""

    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @property
    def evaluated(self) -> np.ndarray:
        return np.isfinite(self.upper)


def _previous_month_indices(start: date, n: int, months: int) -> np.ndarray:
    """``idx[m-1, t]``: index of the same day of the month ``m`` months before day ``t``
    (the last day when ``t`` is a month's last day or the day does not exist); -1 when
    before the series."""
    days = np.datetime64(start, "D") + np.arange(n)
    month = days.astype("datetime64[M]")
    dom = (days - month).astype(int)  # 0-based day of month
    is_last = (days + 1).astype("datetime64[M]") != month
    idx = np.full((months, n), -1, dtype=np.int64)
    for m in range(1, months + 1):
        prev_month = month - m
        prev_len = ((prev_month + 1).astype("datetime64[D]") - prev_month.astype("datetime64[D]")).astype(int)
        prev_dom = np.where(is_last, prev_len - 1, np.minimum(dom, prev_len - 1))
        target = (prev_month.astype("datetime64[D]") + prev_dom - days[0]).astype(np.int64)
        idx[m - 1] = np.where(target >= 0, target, -1)
    return idx


def expected_range(
    values, start: date, *, sensitivity: float = DEFAULT_SENSITIVITY
) -> Bands:
    """Expected value and band of every day of one or many daily series.

    ``values``: shape ``(days,)`` or ``(series, days)``, consecutive days from ``start``
    (zero for a day without spend). Only days before ``t`` shape the range of day ``t``.
    Vectorised over series and days; no Python loop over either."""
    x = np.atleast_2d(np.asarray(values, dtype=float))
    m, n = x.shape
    nan = np.full((m, n), np.nan)
    if n <= MIN_HISTORY_DAYS:
        return Bands(nan, nan.copy(), nan.copy())

    positive = np.where(x > 0, x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        typical = np.nan_to_num(np.nanmedian(positive, axis=1), nan=0.0)
    eps = np.maximum(_EPS_MIN, 1e-3 * typical)[:, None]
    y = np.log(np.maximum(x, 0.0) + eps)

    t = np.arange(MIN_HISTORY_DAYS, n)  # the days that can be judged
    # Level: median of a whole week (centred for the past, the last 7 days for now).
    level = np.full((m, n), np.nan)
    level[:, 3 : n - 3] = np.median(sliding_window_view(y, 7, axis=1), axis=2)
    weekday_effect = y - level
    # The weekday effect of day u: the median of the previous 8 same weekdays' effects.
    season = np.full((m, n), np.nan)
    u = np.arange(7 * WEEKS + 3, n)
    season[:, u] = np.median(weekday_effect[:, u[:, None] - 7 * np.arange(1, WEEKS + 1)], axis=2)
    # The level now: median of the last 7 days without their weekday effects, so a dip
    # or a spike is one sample of seven equals (not a weekday among weekends).
    now = np.median(sliding_window_view(y - season, 7, axis=1)[:, t - 7], axis=2)
    base_log = now + season[:, t]

    sigma = _noise_scale(y, t) * PREDICTION_INFLATION
    half = sensitivity * sigma
    base = np.exp(base_log) - eps
    base_upper = np.exp(base_log + half) - eps
    base_lower = np.maximum(np.exp(base_log - half) - eps, 0.0)

    extra, extra_lo, extra_hi = _recurring(x, y, eps, start, t, half)
    expected, lower, upper = nan.copy(), nan.copy(), nan.copy()
    expected[:, t] = np.maximum(base, 0.0) + extra
    lower[:, t] = base_lower + extra_lo
    upper[:, t] = base_upper + extra_hi
    return Bands(expected, lower, upper)


def _noise_scale(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Robust day-to-day noise (log space) before each day ``t``: the 10%-trimmed standard
    deviation of week-over-week differences over the previous ``SCALE_DAYS`` days (each
    spike appears in two differences; the trimming drops up to 8 at each end)."""
    diffs = y[:, 7:] - y[:, :-7]  # diffs[u-7] = y[u] - y[u-7]
    windows = np.sort(sliding_window_view(diffs, SCALE_DAYS, axis=1)[:, t - 7 - SCALE_DAYS], axis=2)
    cut = int(SCALE_DAYS * _TRIM)
    central = windows[..., cut : SCALE_DAYS - cut]
    spread = central.std(axis=2) / _TRIMMED_STD
    return np.maximum(spread / np.sqrt(2.0), SIGMA_FLOOR)


def _recurring(x, y, eps, start: date, t: np.ndarray, half: np.ndarray):
    """The expected extra of recurring day-of-month charges for the judged days ``t``."""
    m, n = x.shape
    # Excess of each day over its same-weekday neighbours (u±7, u±14).
    local = np.full((m, n), np.nan)
    u = np.arange(14, n - 14)
    if len(u):
        neighbours = y[:, u[:, None] + np.array([-14, -7, 7, 14])]
        local[:, u] = np.exp(np.median(neighbours, axis=2)) - eps
    excess = x - local

    idx = _previous_month_indices(start, n, RECURRING_MONTHS)[:, t]  # (months, T)
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    past_excess = np.where(valid[None], excess[:, safe], np.nan)  # (m, months, T)
    past_local = np.where(valid[None], local[:, safe], np.nan)
    threshold = np.maximum(past_local, 0.0) * (np.exp(half[:, None, :]) - 1.0) + _EPS_MIN
    significant = np.nan_to_num(past_excess) > threshold
    available = np.isfinite(past_excess).sum(axis=1)
    recurring = (significant.sum(axis=1) >= RECURRING_MIN_MONTHS) & (
        available >= RECURRING_MIN_MONTHS
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        typical = np.nanmedian(past_excess, axis=1)
    hi = np.max(np.where(significant, past_excess, -np.inf), axis=1)
    lo = np.min(np.where(significant, past_excess, np.inf), axis=1)
    extra = np.where(recurring, np.maximum(np.nan_to_num(typical), 0.0), 0.0)
    extra_hi = np.where(recurring, hi * (1 + RECURRING_TOLERANCE), 0.0)
    extra_lo = np.where(recurring, lo * (1 - RECURRING_TOLERANCE), 0.0)
    return extra, extra_lo, extra_hi


def material_mask(services: np.ndarray, total: np.ndarray, *, min_daily: float) -> np.ndarray:
    """``mask[s, t]``: service ``s`` had material spend before day ``t`` (mean daily spend
    over the previous ``MATERIAL_DAYS`` days at least ``min_daily`` and at least
    ``MATERIAL_SHARE`` of the provider's mean daily total)."""
    services = np.atleast_2d(np.asarray(services, dtype=float))
    m, n = services.shape
    mask = np.zeros((m, n), dtype=bool)
    if n <= MATERIAL_DAYS:
        return mask
    cumulative = np.concatenate([np.zeros((m, 1)), np.cumsum(services, axis=1)], axis=1)
    mean = (cumulative[:, MATERIAL_DAYS:-1] - cumulative[:, : n - MATERIAL_DAYS]) / MATERIAL_DAYS
    total_cum = np.concatenate([[0.0], np.cumsum(np.asarray(total, dtype=float))])
    total_mean = (total_cum[MATERIAL_DAYS:-1] - total_cum[: n - MATERIAL_DAYS]) / MATERIAL_DAYS
    mask[:, MATERIAL_DAYS:] = (mean >= min_daily) & (mean >= MATERIAL_SHARE * total_mean[None, :])
    return mask


SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Thresholds:
    """Recording minimums and severity tiers (money in the series' currency, percent of
    the expected amount). A tier is reached when both its money and percent thresholds
    are; below the ``low`` tier (``min_impact``/``min_deviation``) nothing is recorded."""

    min_impact: float = 10.0
    min_deviation: float = 10.0
    medium_impact: float = 50.0
    medium_deviation: float = 20.0
    high_impact: float = 150.0
    high_deviation: float = 40.0
    critical_impact: float = 1000.0
    critical_deviation: float = 100.0
    material_daily_spend: float = 5.0
    sensitivity: float = DEFAULT_SENSITIVITY

    def tiers(self) -> list[tuple[float, float]]:
        return [
            (self.min_impact, self.min_deviation),
            (self.medium_impact, self.medium_deviation),
            (self.high_impact, self.high_deviation),
            (self.critical_impact, self.critical_deviation),
        ]


DEVIATION_CAP = 99999.9


def deviation_percent(actual, expected):
    """100*(actual - expected)/expected, capped (an expected zero gives the cap)."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    with np.errstate(all="ignore"):
        pct = np.where(expected > 0, 100.0 * (actual - expected) / expected, DEVIATION_CAP)
    return np.minimum(pct, DEVIATION_CAP)


def severity_levels(actual, bands_expected, upper, thresholds: Thresholds) -> np.ndarray:
    """-1 where the day is not an anomaly to record, else the index into ``SEVERITIES``."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(bands_expected, dtype=float)
    upper = np.asarray(upper, dtype=float)
    impact = actual - expected
    pct = deviation_percent(actual, expected)
    with np.errstate(invalid="ignore"):
        above = np.isfinite(upper) & (actual > upper)
    level = np.full(actual.shape, -1, dtype=np.int64)
    reached = above
    for index, (money, percent) in enumerate(thresholds.tiers()):
        reached = reached & (impact >= money) & (pct >= percent)  # each tier includes those below
        level = np.where(reached, index, level)
    return level


@dataclass(frozen=True)
class Finding:
    """One day of one series to record as an anomaly (service "" for the total)."""

    service: str
    index: int
    actual: float
    expected: float
    lower: float
    upper: float
    severity: str
    top_services: list = field(default_factory=list)


def detect_arrays(
    *,
    start: date,
    total: np.ndarray,
    services: dict[str, np.ndarray],
    window: tuple[int, int],
    thresholds: Thresholds,
) -> list[Finding]:
    """The anomalies of one provider in days ``window[0] .. window[1]`` (indices into the
    series that start on ``start``): the provider total and every material service.
    Pure: the service and the benchmark share it."""
    names = list(services)
    total = np.asarray(total, dtype=float)
    matrix = np.vstack([total[None, :]] + [np.asarray(services[s], float)[None, :] for s in names])
    bands = expected_range(matrix, start, sensitivity=thresholds.sensitivity)
    levels = severity_levels(matrix, bands.expected, bands.upper, thresholds)
    lo, hi = window
    in_window = np.zeros(matrix.shape[1], dtype=bool)
    in_window[max(lo, 0) : hi + 1] = True
    levels[:, ~in_window] = -1
    if names:
        material = material_mask(matrix[1:], total, min_daily=thresholds.material_daily_spend)
        levels[1:][~material] = -1

    findings = []
    for row, index in zip(*np.nonzero(levels >= 0), strict=True):
        top = _top_services(names, matrix[1:, index], bands.expected[1:, index]) if row == 0 else []
        findings.append(
            Finding(
                service="" if row == 0 else names[row - 1],
                index=int(index),
                actual=float(matrix[row, index]),
                expected=float(bands.expected[row, index]),
                lower=float(bands.lower[row, index]),
                upper=float(bands.upper[row, index]),
                severity=SEVERITIES[levels[row, index]],
                top_services=top,
            )
        )
    return findings


def _top_services(names: list[str], actual: np.ndarray, expected: np.ndarray) -> list[dict]:
    """The services that were most above their own expectation on a provider anomaly
    (a service without an expectation yet, e.g. a new one, counts with all its spend)."""
    excess = actual - np.where(np.isfinite(expected), expected, 0.0)
    order = np.argsort(-excess)[:TOP_SERVICES]
    return [
        {
            "service": names[i],
            "amount": round(float(actual[i]), 2),
            "vs_expected": round(float(excess[i]), 2),
        }
        for i in order
        if excess[i] > 0.005
    ]


# --------------------------------------------------------------------------------------
# Money helpers
# --------------------------------------------------------------------------------------

_Q = Decimal("0.0001")


def _money(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(_Q, rounding=ROUND_HALF_UP)


def _pct(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _day_range(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


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
    ``start`` (consecutive days; zero where the provider had no records)."""

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
    out: amounts in different currencies are never added."""
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
    if provider.coverage_start:  # inside the synced coverage, a day without rows is zero
        first = max(history_start, min(first, provider.coverage_start))
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
    return ProviderSeries(first, currency, total, services, exact)


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
        # One detection per provider at a time (a sync and the admin may race).
        Provider.objects.select_for_update().filter(pk=provider.pk).first()
        series = provider_series(provider=provider, start=start, end=end)
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
        seen, new = set(), []
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
        if created:
            from costs.services.alerts import alerts_enqueue

            alerts_enqueue(anomalies=created, today=today)
    logger.info(
        "anomalies of provider %s %s..%s: %d created, %d updated, %d removed",
        provider.id, start, end, len(result.created), len(result.updated), len(result.removed),
    )
    return result


def anomaly_dismiss(*, anomaly, user, reason: str):
    """Dismiss an active anomaly with a reason (1..500 characters), recording who and when.
    Already dismissed: ``Conflict`` and the anomaly is left unchanged."""
    from costs.models import Anomaly

    reason = (reason or "").strip()
    if not 1 <= len(reason) <= 500:
        raise ValidationError({"reason": "a reason of 1 to 500 characters is required"})
    with transaction.atomic():
        locked = Anomaly.objects.select_for_update().get(pk=anomaly.pk)
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


def anomaly_reopen(*, anomaly):
    """Make a dismissed anomaly active again (the dismissal is cleared)."""
    from costs.models import Anomaly

    with transaction.atomic():
        locked = Anomaly.objects.select_for_update().get(pk=anomaly.pk)
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


def anomaly_chart_series(
    *, anomaly, days_before: int = 35, days_after: int = 14, today: date | None = None
) -> list[ChartPoint]:
    """The anomaly's series (provider total or service) around its day, with the expected
    band as the detector sees it today."""
    from costs.selectors import utc_today

    today = today or utc_today()
    first = anomaly.date - timedelta(days=days_before)
    last = max(anomaly.date, min(anomaly.date + timedelta(days=days_after), today - timedelta(days=1)))
    series = provider_series(provider=anomaly.provider, start=first, end=last)
    if series is None:
        return []
    values = series.total if not anomaly.service else series.services.get(anomaly.service)
    if values is None:
        values = np.zeros_like(series.total)
    thresholds = policy_thresholds(anomaly.organization)
    bands = expected_range(values, series.start, sensitivity=thresholds.sensitivity)

    def _opt(array, i):
        value = float(array[0, i])
        return value if np.isfinite(value) else None

    points = []
    for i in range(max(series.index(first), 0), series.index(last) + 1):
        points.append(
            ChartPoint(
                day=series.day(i), actual=float(values[i]), expected=_opt(bands.expected, i),
                lower=_opt(bands.lower, i), upper=_opt(bands.upper, i),
            )
        )
    return points
