"""Celery tasks: thin wrappers that take ids and ISO dates and call one service."""

from __future__ import annotations

import math
import random
from datetime import date

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from costs.services import jobs
from providers.adapters.base import ProviderThrottled

MAX_RETRIES = 6
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 30 * 60
# Within the sweeper's patience and the broker's visibility timeout (settings).
RETRY_AFTER_MAX_SECONDS = settings.TASK_RETRY_AFTER_MAX_SECONDS


def retry_countdown(retries: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, never sooner than the other side's
    Retry-After, which is its word, not ours: a value that is not a finite number of
    seconds is ignored and a longer one waits ``RETRY_AFTER_MAX_SECONDS`` (``inf`` or
    1e12 used to crash the task and leave a delivery "retrying" for good)."""
    backoff = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**retries)
    countdown = random.uniform(backoff / 2, backoff)
    if retry_after is None or not math.isfinite(retry_after) or retry_after <= 0:
        return countdown
    return max(countdown, min(retry_after, RETRY_AFTER_MAX_SECONDS))


def _final_attempt(task) -> bool:
    """Whether this attempt is the task's last: its retries are used up, or it runs in the
    process that asked for it (no broker, the embedded default), where a retry would run
    at once, whatever wait the other side asked for (7 calls in a row to a throttling
    provider). ``TASK_EAGER_RETRIES`` lets the test suite run the retries eagerly."""
    if task.request.is_eager and not settings.TASK_EAGER_RETRIES:
        return True
    return task.request.retries >= task.max_retries


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


@shared_task(
    bind=True,
    name="costs.sync_provider",
    max_retries=MAX_RETRIES,
    soft_time_limit=settings.SYNC_SOFT_TIME_LIMIT,
    time_limit=settings.SYNC_TIME_LIMIT,
    acks_late=True,
)
def sync_provider(self, result_id: int, date_from: str | None = None, date_to: str | None = None):
    """Sync one provider of a job; retries only when the provider throttles us."""
    try:
        jobs.sync_result_run(
            result_id=result_id,
            date_from=_date(date_from),
            date_to=_date(date_to),
            final_attempt=_final_attempt(self),
            retries=self.request.retries,
        )
    except ProviderThrottled as exc:
        raise self.retry(
            exc=exc, countdown=retry_countdown(self.request.retries, exc.retry_after)
        ) from exc


@shared_task(name="costs.sync_all_providers")
def sync_all_providers() -> int:
    """The nightly sync of every active provider (scheduled by Celery beat)."""
    return len(jobs.sync_all_active())


@shared_task(name="costs.sweep_stale_jobs")
def sweep_stale_jobs() -> int:
    """Fail jobs whose worker died, so no job stays running forever."""
    return jobs.sync_jobs_sweep_stale()


WEBHOOK_MAX_RETRIES = 6


@shared_task(
    bind=True,
    name="costs.deliver_webhook",
    max_retries=WEBHOOK_MAX_RETRIES,
    soft_time_limit=60,
    time_limit=90,
    acks_late=True,
)
def deliver_webhook(self, delivery_id: int) -> str | None:
    """POST one anomaly alert; retries with backoff on connection errors, timeouts, 408,
    429 and 5xx, then records the delivery as failed. An attempt has its own deadline
    (``alerts.TOTAL_TIMEOUT``) well under the soft time limit; should the limit still cut
    one short, its rolled-back attempt is recorded and retried like any other failure."""
    from costs.services import alerts

    final_attempt = _final_attempt(self)
    try:
        try:
            return alerts.webhook_deliver(delivery_id=delivery_id, final_attempt=final_attempt)
        except SoftTimeLimitExceeded:
            return alerts.webhook_attempt_cut_short(
                delivery_id=delivery_id, final_attempt=final_attempt
            )
    except alerts.DeliveryRetryable as exc:
        raise self.retry(
            exc=exc, countdown=retry_countdown(self.request.retries, exc.retry_after)
        ) from exc


@shared_task(name="costs.warm_forecasts", soft_time_limit=900, time_limit=960)
def warm_forecasts(organization_id: int) -> dict | None:
    """Fit and cache an organization's forecasts after its sync job finished."""
    from accounts.models import Organization
    from costs.services.forecast import forecasts_warm

    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return None
    return forecasts_warm(organization=organization)


@shared_task(name="costs.detect_anomalies", soft_time_limit=600, time_limit=660, acks_late=True)
def detect_anomalies(provider_id: int, date_from: str, date_to: str) -> dict | None:
    """Re-detect one provider's anomalies for a window of days (on demand from the admin)."""
    from costs.services.anomalies import anomalies_detect
    from providers.models import Provider

    provider = Provider.objects.filter(pk=provider_id).first()
    if provider is None:
        return None
    result = anomalies_detect(
        provider=provider, start=date.fromisoformat(date_from), end=date.fromisoformat(date_to)
    )
    return result.as_dict()
