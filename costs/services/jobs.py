"""Sync jobs: request (deduplicated), run one provider's part, finish the job.

A job has one ``SyncJobProvider`` result per provider. Each result is run by its own
Celery task (``costs.sync_provider``); the task that finishes the last result finishes
the job: it runs what the sync triggers (anomaly re-detection for the changed windows)
and only then sets the job's final status, so a client that sees ``succeeded`` reads
fresh data.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Organization
from costs.models import SyncJob, SyncJobProvider
from costs.services.sync import cost_records_sync
from infraaudit.errors import Unprocessable
from providers.adapters.base import ProviderError, ProviderThrottled
from providers.models import Provider

logger = logging.getLogger(__name__)

FINAL_RESULT = (SyncJobProvider.Status.SUCCEEDED, SyncJobProvider.Status.FAILED)
# The error of an entry whose provider was deleted before its sync finished (its entry
# stays in the job's history; its records, if any were written, went with it).
PROVIDER_DELETED = "provider deleted before its sync finished"
# A provider whose sync took its worker down this many times is not tried again: with
# acks_late and reject_on_worker_lost the broker would deliver it again for ever (an
# import that runs out of memory does so every time).
MAX_LOST_RUNS = 2


def _enqueue(result_ids: list[int], date_from: date | None, date_to: date | None) -> None:
    """Queue one task per provider. If the broker cannot be reached, the providers not
    queued fail at once with that reason and the job finishes: a job left queued would
    never run, and every later request for the same providers would get it back."""
    from costs.tasks import sync_provider

    for queued, result_id in enumerate(result_ids):
        dates = (date_from.isoformat() if date_from else None,
                 date_to.isoformat() if date_to else None)
        if not _publish(sync_provider, result_id, *dates):
            _fail_results(
                SyncJobProvider.objects.filter(pk__in=result_ids[queued:]),
                "the task queue (broker) could not be reached; nothing was synced, try again",
            )
            return


def _publish(task, *args) -> bool:
    """Queue ``task``; False (logged) when the broker cannot be reached."""
    from kombu.exceptions import OperationalError

    try:
        task.delay(*args)
    except (OperationalError, OSError) as exc:
        logger.error("could not queue %s%s: %s", task.name, args, exc)
        return False
    return True


def _fail_results(results, message: str) -> int:
    """Fail these providers' parts of their jobs (an upload nobody will import now is
    removed), then finish those jobs; returns how many jobs. The part of a provider that
    was deleted meanwhile says so rather than ``message``."""
    results = list(results)
    for result in results:
        _record_failure(result, PROVIDER_DELETED if result.provider_deleted else message)
        _discard_upload(result)
    job_ids = sorted({result.job_id for result in results})
    for job_id in job_ids:
        sync_job_finish_if_done(job_id=job_id)
    return len(job_ids)


@transaction.atomic
def sync_job_request(
    *,
    organization: Organization,
    user=None,
    provider: Provider | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> SyncJob:
    """Start a sync of ``provider`` or of every active provider of the organization that
    has a source to pull (an upload-only FOCUS provider has none: its data comes by
    import, and syncing it could only fail, making every organization-wide job partial).

    While a queued or running job already covers the same providers, that job is returned
    instead of starting duplicate work. A provider whose part of such a job is over (it
    failed, say, and was fixed since) is synced again in a new job."""
    # Row lock on the organization: two simultaneous requests cannot both create a job.
    Organization.objects.select_for_update().filter(pk=organization.pk).first()
    # A job whose worker died is not handed out again, even where no beat runs the
    # sweeper (the embedded default runs syncs in the request; a restart kills them).
    sync_jobs_sweep_stale(organization=organization)
    if provider is not None:
        if not provider.is_active:
            raise Unprocessable(
                f"provider {provider.id} is inactive; activate it before syncing",
                code="PROVIDER_INACTIVE",
                details={"provider_id": provider.id},
            )
        if upload_only(provider):
            raise Unprocessable(
                f"provider {provider.id} is a FOCUS provider without config.uri: it has nothing "
                f"to pull; import files with POST /api/v1/providers/{provider.id}/import, or "
                "set config.uri",
                code="PROVIDER_UPLOAD_ONLY",
                details={"provider_id": provider.id},
            )
        providers = [provider]
    else:
        providers = syncable_providers(organization)
        if not providers:
            raise Unprocessable(
                "the organization has no active providers with a source to sync (FOCUS "
                "providers without config.uri take uploads only)",
                code="NO_PROVIDERS",
            )
    wanted = {p.id for p in providers}
    active_jobs = SyncJob.objects.filter(
        organization=organization, kind="cost_sync", status__in=SyncJob.ACTIVE_STATUSES,
        date_from=date_from, date_to=date_to,  # another window is other work
    ).prefetch_related("results")
    for job in active_jobs:
        if wanted <= {r.provider_id for r in job.results.all() if r.status not in FINAL_RESULT}:
            return job

    job = SyncJob.objects.create(
        organization=organization,
        requested_by=user,
        status=SyncJob.Status.QUEUED,
        date_from=date_from,
        date_to=date_to,
    )
    results = SyncJobProvider.objects.bulk_create(
        SyncJobProvider.for_provider(p, job=job) for p in providers
    )
    result_ids = [r.id for r in results]
    transaction.on_commit(lambda: _enqueue(result_ids, date_from, date_to))
    return job


@transaction.atomic
def import_job_request(*, provider: Provider, user, source_file: str) -> SyncJob:
    """A job importing an upload into ``provider``: one FOCUS file, or a folder of the
    files of one split export (``source_file``)."""
    job = SyncJob.objects.create(
        organization=provider.organization, requested_by=user, kind="focus_import"
    )
    result = SyncJobProvider.objects.create(job=job, provider=provider, source_file=source_file)
    transaction.on_commit(lambda: _enqueue([result.id], None, None))
    return job


def _mark_running(result: SyncJobProvider) -> int:
    """Mark the provider's part and its job running; how many times it has started."""
    now = timezone.now()
    SyncJobProvider.objects.filter(pk=result.pk).update(
        status=SyncJobProvider.Status.RUNNING, started_at=now, runs=F("runs") + 1
    )
    SyncJob.objects.filter(pk=result.job_id, status=SyncJob.Status.QUEUED).update(
        status=SyncJob.Status.RUNNING, started_at=now
    )
    return SyncJobProvider.objects.values_list("runs", flat=True).get(pk=result.pk)


def sync_result_run(
    *, result_id: int, date_from: date | None = None, date_to: date | None = None,
    final_attempt: bool = True, retries: int = 0,
) -> None:
    """Run one provider's part of a job and record its outcome on the result.

    ``ProviderThrottled`` propagates (the task retries) unless this is the final attempt.
    Any other failure is recorded on the result; the other providers are unaffected. A
    provider deleted before or while it runs fails its entry with ``PROVIDER_DELETED``.
    ``retries``: the task's retries so far; a part started more often than that took its
    worker down, and after ``MAX_LOST_RUNS`` such losses it fails instead of running."""
    result = SyncJobProvider.objects.select_related("provider", "job").filter(pk=result_id).first()
    if result is None:  # its job was deleted (with its organization): nothing to record
        logger.info("sync job entry %s no longer exists; nothing to run", result_id)
        return
    if result.status in FINAL_RESULT:
        # A redelivered task: the work is done, but the worker may have died before it
        # finished the job, which would then stay running for good.
        sync_job_finish_if_done(job_id=result.job_id)
        return
    if result.provider_deleted:
        _fail_results([result], PROVIDER_DELETED)
        return
    lost = _mark_running(result) - retries - 1
    if lost >= MAX_LOST_RUNS:
        _fail_results([result], (
            f"the worker running this sync stopped {lost} times before it finished (killed "
            "for memory, or restarted): it is not tried again; see the worker's log"
        ))
        return
    try:
        outcome = cost_records_sync(
            provider=result.provider,
            start=date_from,
            end=date_to,
            source_file=result.source_file or None,
        )
    except ProviderThrottled as exc:
        if not final_attempt:
            raise
        given_up = (
            f"gave up after {retries} retries" if retries
            else "not retried: without a task queue a retry would run at once; sync again later"
        )
        _record_failure(result, f"{exc} ({given_up})")
    except ProviderError as exc:
        _record_failure(result, str(exc))
    except Provider.DoesNotExist:
        # Deleted mid-sync: the write found no provider row to lock (or to read back).
        _record_failure(result, PROVIDER_DELETED)
    except SoftTimeLimitExceeded:
        _record_failure(
            result, f"the sync exceeded its time limit of {settings.SYNC_SOFT_TIME_LIMIT} s"
        )
    except Exception as exc:
        logger.exception("sync of provider %s failed unexpectedly", result.provider_id)
        _record_failure(result, f"internal error ({type(exc).__name__}); see the worker log")
    else:
        SyncJobProvider.objects.filter(pk=result.pk).update(
            status=SyncJobProvider.Status.SUCCEEDED,
            rows_read=outcome.rows_read,
            records_written=outcome.records_written,
            date_from=outcome.date_from,
            date_to=outcome.date_to,
            changed=outcome.changed,
            finished_at=timezone.now(),
        )
    finally:
        _discard_upload(result)
    sync_job_finish_if_done(job_id=result.job_id)


def _discard_upload(result: SyncJobProvider) -> None:
    """Remove an import's uploaded file, or its folder of several."""
    if result.source_file:
        import shutil
        from pathlib import Path

        path = Path(result.source_file)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _record_failure(result: SyncJobProvider, message: str) -> None:
    SyncJobProvider.objects.filter(pk=result.pk).update(
        status=SyncJobProvider.Status.FAILED, error=message[:2000], finished_at=timezone.now()
    )


def sync_job_finish_if_done(*, job_id: int) -> None:
    """When every provider of the job is final, run what the sync triggers, then set the
    job's final status. Exactly one caller gets to finish (row lock + status check)."""
    with transaction.atomic():
        job = SyncJob.objects.select_for_update().get(pk=job_id)
        if job.status not in SyncJob.ACTIVE_STATUSES:
            return
        results = list(job.results.select_related("provider"))
        if any(r.status not in FINAL_RESULT for r in results):
            return
        incomplete = _after_sync(job, results)
        if settings.FORECAST_WARM_AFTER_SYNC:
            transaction.on_commit(lambda: _warm_forecasts(job.organization_id))
        failed = [r for r in results if r.status == SyncJobProvider.Status.FAILED]
        if not failed and not incomplete:
            job.status = SyncJob.Status.SUCCEEDED
        elif len(failed) == len(results):
            job.status = SyncJob.Status.FAILED
        else:
            job.status = SyncJob.Status.PARTIAL
        job.finished_at = timezone.now()
        job.started_at = job.started_at or job.finished_at
        job.save(update_fields=["status", "finished_at", "started_at"])


def _warm_forecasts(organization_id: int) -> None:
    """Queue the fit of the organization's forecasts for today's data. Every finished job
    queues it, changed or not: the cache key moves with the last complete day too, and a
    scope that is cached already costs one cache read. Without a broker it is skipped: the
    first request fits instead (the job's outcome does not depend on it)."""
    from costs.tasks import warm_forecasts

    _publish(warm_forecasts, organization_id)


def _after_sync(job: SyncJob, results: list[SyncJobProvider]) -> int:
    """What a sync triggers for each provider whose records changed: anomaly re-detection
    of the re-synced days (new anomalies are alerted after commit). Cached forecasts key
    on the provider's data version, which the sync bumped, so they are invalid already.

    A provider deleted since its sync took its records and anomalies with it: there is
    nothing left to judge, and its entry stays as it ended.

    A detection failure does not undo the sync: it is rolled back to its savepoint,
    logged and recorded on the job's ``error`` and on the provider's entry, whose records
    stay written (``succeeded``). Returns how many providers' detection failed: their
    anomalies are not fresh, so the job is ``partial``, not ``succeeded`` (API.md: a
    client that sees ``succeeded`` reads fresh data)."""
    from costs.services.anomalies import HISTORY_DAYS, anomalies_detect

    changed = [
        r for r in results
        if r.changed and r.date_from and r.date_to and not r.provider_deleted
    ]
    errors = []
    for result in changed:
        logger.info(
            "provider %s changed %s..%s", result.provider_id, result.date_from, result.date_to
        )
        try:
            with transaction.atomic():
                # A changed day is in the baseline of the days after it: judge those again
                # too (a month filled in late turns the next month's false alarms back).
                anomalies_detect(
                    provider=result.provider, start=result.date_from,
                    end=result.date_to + timedelta(days=HISTORY_DAYS),
                )
        except Exception as exc:  # a bug in detection must not leave the job running
            logger.exception("anomaly detection for provider %s failed", result.provider_id)
            message = (
                f"records written, but anomaly detection for {result.date_from}.."
                f"{result.date_to} failed ({type(exc).__name__}); see the worker log"
            )
            SyncJobProvider.objects.filter(pk=result.pk).update(error=message)
            errors.append(f"provider {result.provider_id}: {message}")
    if errors:
        job.error = "\n".join(filter(None, [job.error, *errors]))[:4000]
        SyncJob.objects.filter(pk=job.pk).update(error=job.error)
    return len(errors)


def sync_jobs_sweep_stale(*, now=None, organization: Organization | None = None) -> int:
    """Mark failed the providers of jobs whose workers died: a provider still running
    ``SYNC_JOB_STALE_SECONDS`` after it started, or still queued that long after its job
    was created, then finish those jobs. A provider that started recently is left alone,
    however long its job waited in the queue (a busy night is not a lost worker); one
    that started longer ago was stopped by the task's time limit, which the settings
    keep below this one, so a sync that is still running is never failed under it.
    A job that old whose providers are all over (its worker died while finishing it)
    is finished. Of ``organization`` only, when given; returns how many jobs."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.SYNC_JOB_STALE_SECONDS)
    active = SyncJob.objects.filter(status__in=SyncJob.ACTIVE_STATUSES)
    if organization is not None:
        active = active.filter(organization=organization)
    stale = SyncJobProvider.objects.filter(job__in=active).filter(
        Q(status=SyncJobProvider.Status.RUNNING, started_at__lt=cutoff)
        | Q(status=SyncJobProvider.Status.RUNNING, started_at=None, job__created_at__lt=cutoff)
        | Q(status=SyncJobProvider.Status.QUEUED, job__created_at__lt=cutoff)
    )
    swept = _fail_results(
        stale, "the sync did not finish within its time limit (worker lost or stopped)"
    )
    stranded = list(
        active.filter(created_at__lt=cutoff)
        .exclude(results__status__in=[SyncJobProvider.Status.QUEUED,
                                      SyncJobProvider.Status.RUNNING])
        .values_list("pk", flat=True)
    )
    for job_id in stranded:
        sync_job_finish_if_done(job_id=job_id)
    return swept + len(stranded)


def sync_all_active() -> list[SyncJob]:
    """The nightly sync: one job per organization with active providers to pull from."""
    jobs = []
    org_ids = (
        Provider.objects.filter(is_active=True).values_list("organization_id", flat=True).distinct()
    )
    for organization in Organization.objects.filter(pk__in=list(org_ids)):
        if syncable_providers(organization):
            jobs.append(sync_job_request(organization=organization))
    return jobs


def upload_only(provider: Provider) -> bool:
    """A FOCUS provider without ``config.uri``: fed by uploads only, nothing to pull."""
    return provider.kind == "focus" and not (provider.config or {}).get("uri")


def syncable_providers(organization: Organization) -> list[Provider]:
    """The organization's active providers that have a source to pull."""
    active = Provider.objects.filter(organization=organization, is_active=True)
    return [p for p in active if not upload_only(p)]
