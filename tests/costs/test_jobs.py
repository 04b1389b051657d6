"""Sync jobs through the API, run by the real Celery task code (eagerly) and the FOCUS
adapter reading files the tests write."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from costs.models import Anomaly, CostRecord, SyncJob, SyncJobProvider
from costs.services.jobs import sync_job_request, sync_jobs_sweep_stale
from costs.services.sync import default_window
from costs.tasks import retry_countdown, sync_all_providers, sync_provider
from tests.costs.focus_files import write_focus_csv
from tests.factories import (
    OrganizationFactory,
    ProviderFactory,
    SyncJobFactory,
    SyncJobProviderFactory,
)

pytestmark = pytest.mark.django_db


def focus_provider(org, root, name="AWS Export", rows=None):
    folder = root / org.slug / name.replace(" ", "_")  # inside the organization's folder
    write_focus_csv(
        folder / "export.csv",
        rows
        or [
            {"day": "2024-01-01", "service": "EC2", "amount": "10.50"},
            {"day": "2024-01-01", "service": "EC2", "amount": "0.25"},
            {"day": "2024-01-02", "service": "S3", "amount": "3.10", "region": ""},
        ],
    )
    return ProviderFactory(organization=org, name=name, kind="focus", config={"uri": str(folder)})


def test_sync_runs_job_to_success_with_results(api, org, import_root, run_on_commit):
    provider = focus_provider(org, import_root)
    response = run_on_commit(api.post, "/api/v1/costs/sync", {}, format="json")
    assert response.status_code == 202
    assert set(response.json()) == {"job_id", "status"}

    job = api.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "succeeded"
    assert job["kind"] == "cost_sync"
    assert set(job) == {"job_id", "kind", "status", "created_at", "started_at", "finished_at",
                        "providers"}
    assert job["providers"] == [
        {
            "provider_id": provider.id,
            "name": "AWS Export",
            "status": "succeeded",
            "rows_read": 3,
            "records_written": 2,
            "date_from": "2024-01-01",
            "date_to": "2024-01-02",
            "error": None,
        }
    ]
    records = {r.service: r for r in CostRecord.objects.filter(provider=provider)}
    assert records["EC2"].billed_amount == Decimal("10.75")
    assert records["S3"].region == "global"


def test_sync_one_provider_by_id(api, org, import_root, run_on_commit):
    first = focus_provider(org, import_root, "First")
    focus_provider(org, import_root, "Second")
    response = run_on_commit(api.post, "/api/v1/costs/sync/", {"provider_id": first.id},
                             format="json")
    job = SyncJob.objects.get(pk=response.json()["job_id"])
    assert [r.provider_id for r in job.results.all()] == [first.id]


def test_sync_partial_when_one_provider_fails(api, org, import_root, run_on_commit):
    good = focus_provider(org, import_root, "Good")
    ProviderFactory(
        organization=org, name="Broken", kind="focus", config={"uri": str(import_root / "missing")}
    )
    response = run_on_commit(api.post, "/api/v1/costs/sync", format="json")
    job = api.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "partial"
    by_name = {p["name"]: p for p in job["providers"]}
    assert by_name["Good"]["status"] == "succeeded"
    assert by_name["Broken"]["status"] == "failed"
    assert by_name["Broken"]["error"]
    assert CostRecord.objects.filter(provider=good).count() == 2


def test_sync_all_failed_is_failed(api, org, import_root, run_on_commit):
    ProviderFactory(organization=org, kind="focus", config={"uri": str(import_root / "nope")})
    response = run_on_commit(api.post, "/api/v1/costs/sync", format="json")
    assert SyncJob.objects.get(pk=response.json()["job_id"]).status == "failed"


def test_sync_rerun_is_idempotent(api, org, import_root, run_on_commit):
    provider = focus_provider(org, import_root)
    run_on_commit(api.post, "/api/v1/costs/sync", format="json")
    before = list(CostRecord.objects.filter(provider=provider).values_list(
        "day", "service", "billed_amount").order_by("day", "service"))
    version = type(provider).objects.get(pk=provider.pk).data_version
    run_on_commit(api.post, "/api/v1/costs/sync", format="json")
    after = list(CostRecord.objects.filter(provider=provider).values_list(
        "day", "service", "billed_amount").order_by("day", "service"))
    assert before == after
    assert type(provider).objects.get(pk=provider.pk).data_version == version


def test_sync_returns_active_job_for_same_providers(api, org, import_root):
    provider = focus_provider(org, import_root)
    job = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    SyncJobProviderFactory(job=job, provider=provider)
    response = api.post("/api/v1/costs/sync", {"provider_id": provider.id}, format="json")
    assert response.status_code == 202
    assert response.json()["job_id"] == job.id
    assert SyncJob.objects.count() == 1


def test_sync_of_another_window_is_not_handed_the_running_default_job(api, org, import_root):
    provider = focus_provider(org, import_root)
    running = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    SyncJobProviderFactory(job=running, provider=provider)
    window = {"provider_id": provider.id, "date_from": "2024-01-01", "date_to": "2024-03-31"}
    first = api.post("/api/v1/costs/sync", window, format="json").json()["job_id"]
    assert first != running.id
    assert api.post("/api/v1/costs/sync", window, format="json").json()["job_id"] == first


@pytest.mark.parametrize(
    ("window", "field", "message"),
    [
        ({"date_from": "2024-01-01", "date_to": "2999-12-31"}, "date_to", "must not be after today"),
        ({"date_from": "2020-01-01", "date_to": "2024-01-01"}, "date_from", "at most 400 days"),
        ({"date_from": "0001-01-01", "date_to": "0001-01-02"}, "date_from", "before 2000-01-01"),
    ],
)
def test_sync_window_in_the_future_too_long_or_too_old_is_400(api, org, import_root, window, field, message):
    focus_provider(org, import_root)
    response = api.post("/api/v1/costs/sync", window, format="json")
    assert response.status_code == 400
    assert message in response.json()["details"][field][0]
    assert not SyncJob.objects.exists()


def test_sync_finished_job_does_not_block_new_one(api, org, import_root):
    provider = focus_provider(org, import_root)
    job = SyncJobFactory(organization=org, status=SyncJob.Status.SUCCEEDED)
    SyncJobProviderFactory(job=job, provider=provider)
    response = api.post("/api/v1/costs/sync", format="json")
    assert response.json()["job_id"] != job.id


def test_sync_viewer_forbidden(viewer_api):
    response = viewer_api.post("/api/v1/costs/sync", format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider_id": "x"}, "provider_id"),
        ({"provider_id": 0}, "provider_id"),
        ({"date_from": "2024-13-01", "date_to": "2024-01-01"}, "date_from"),
        ({"date_from": "2024-02-01"}, "date_from"),
        ({"date_from": "2024-02-01", "date_to": "2024-01-01"}, "date_from"),
    ],
)
def test_sync_bad_body_is_400(api, body, field):
    response = api.post("/api/v1/costs/sync", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["details"]


def test_sync_other_org_provider_is_404(api, import_root):
    other = ProviderFactory(organization=OrganizationFactory())
    response = api.post("/api/v1/costs/sync", {"provider_id": other.id}, format="json")
    assert response.status_code == 404


def test_sync_without_active_providers_is_422(api, org):
    ProviderFactory(organization=org, is_active=False)
    response = api.post("/api/v1/costs/sync", format="json")
    assert response.status_code == 422
    assert response.json()["code"] == "NO_PROVIDERS"


def test_upload_only_provider_is_left_out_of_organization_syncs(
    api, org, import_root, run_on_commit
):
    focus_provider(org, import_root, "A")
    uploads = ProviderFactory(organization=org, kind="focus", config={})
    response = run_on_commit(api.post, "/api/v1/costs/sync", format="json")
    job = api.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "succeeded"
    assert uploads.id not in {p["provider_id"] for p in job["providers"]}

    response = api.post("/api/v1/costs/sync", {"provider_id": uploads.id}, format="json")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "PROVIDER_UPLOAD_ONLY"
    assert f"/api/v1/providers/{uploads.id}/import" in body["error"]


def test_nightly_sync_skips_an_organization_with_only_upload_only_providers(run_on_commit):
    ProviderFactory(organization=OrganizationFactory(), kind="focus", config={})
    assert run_on_commit(sync_all_providers) == 0
    assert not SyncJob.objects.exists()


def _flat_days(start: date, end: date) -> list[dict]:
    days = (end - start).days + 1
    return [{"day": str(start + timedelta(days=n)), "service": "EC2", "amount": "100"}
            for n in range(days)]


def test_a_month_delivered_late_clears_the_false_alarms_its_absence_raised(
    org, import_root, run_on_commit
):
    """A flat $100/day: September to February, then April, then (late) March. Judged
    while March was missing, early April looked odd; once March arrives, April is
    judged again against it, and no anomaly is left."""
    folder = import_root / org.slug
    provider = ProviderFactory(organization=org, kind="focus", config={})
    for name, start, end in (
        ("autumn", date(2023, 9, 1), date(2024, 2, 29)),
        ("april", date(2024, 4, 1), date(2024, 4, 30)),
        ("march", date(2024, 3, 1), date(2024, 3, 31)),
    ):
        write_focus_csv(folder / name / "export.csv", _flat_days(start, end))
        provider.config = {"uri": str(folder / name)}
        provider.save()
        job = run_on_commit(sync_job_request, organization=org, provider=provider)
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
        if name == "april":
            provider.refresh_from_db()  # April does not touch what was covered before it
            assert (provider.coverage_start, provider.coverage_end) == (
                date(2024, 4, 1), date(2024, 4, 30))
    assert not Anomaly.objects.filter(provider=provider).exists()
    provider.refresh_from_db()
    assert (provider.coverage_start, provider.coverage_end) == (date(2024, 3, 1), date(2024, 4, 30))


def test_default_window_after_a_pause_starts_after_the_last_synced_day(org):
    provider = ProviderFactory(organization=org, kind="aws", coverage_start=date(2023, 1, 1),
                               coverage_end=date(2024, 1, 31))
    assert default_window(provider, today=date(2024, 5, 15)) == (date(2024, 2, 1), date(2024, 5, 15))
    provider.coverage_end = date(2024, 5, 10)  # synced nightly: the usual two months
    assert default_window(provider, today=date(2024, 5, 15)) == (date(2024, 4, 1), date(2024, 5, 15))
    provider.coverage_end = date(2020, 1, 31)  # paused for years: 13 months, no more
    assert default_window(provider, today=date(2024, 5, 15)) == (date(2023, 4, 1), date(2024, 5, 15))


def test_job_of_other_org_is_404(api, other_api, org):
    job = SyncJobFactory(organization=org)
    assert api.get(f"/api/v1/jobs/{job.id}").status_code == 200
    assert other_api.get(f"/api/v1/jobs/{job.id}").status_code == 404
    assert api.get("/api/v1/jobs/999999").status_code == 404


def test_sweep_marks_stale_jobs_failed(org):
    job = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    result = SyncJobProviderFactory(job=job, status=SyncJobProvider.Status.RUNNING)
    SyncJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=3))
    fresh = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    SyncJobProviderFactory(job=fresh, status=SyncJobProvider.Status.RUNNING)

    assert sync_jobs_sweep_stale() == 1
    job.refresh_from_db()
    result.refresh_from_db()
    fresh.refresh_from_db()
    assert job.status == "failed"
    assert "time limit" in result.error
    assert fresh.status == "running"


def test_sweep_removes_the_upload_of_an_import_it_fails(org, tmp_path):
    upload = tmp_path / "abc--export.csv"
    upload.write_text("BilledCost\n1\n")
    job = SyncJobFactory(organization=org, status=SyncJob.Status.QUEUED, kind="focus_import")
    SyncJobProviderFactory(job=job, source_file=str(upload))
    SyncJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=3))
    assert sync_jobs_sweep_stale() == 1
    assert not upload.exists()


def test_sweep_leaves_a_sync_that_started_recently_after_a_long_queue(org):
    job = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    SyncJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=3))
    started = SyncJobProviderFactory(job=job, status=SyncJobProvider.Status.RUNNING,
                                     started_at=timezone.now() - timedelta(minutes=5))
    lost = SyncJobProviderFactory(job=job, status=SyncJobProvider.Status.RUNNING,
                                  started_at=timezone.now() - timedelta(hours=2, minutes=1))

    assert sync_jobs_sweep_stale() == 1
    started.refresh_from_db()
    lost.refresh_from_db()
    job.refresh_from_db()
    assert started.status == "running" and lost.status == "failed"
    assert job.status == "running"  # it finishes when the running provider does


def test_nightly_task_syncs_every_org_with_active_providers(import_root, run_on_commit):
    first, second = OrganizationFactory(), OrganizationFactory()
    focus_provider(first, import_root, "A")
    focus_provider(second, import_root, "B")
    ProviderFactory(organization=OrganizationFactory(), is_active=False)
    assert run_on_commit(sync_all_providers) == 2
    assert set(SyncJob.objects.values_list("status", flat=True)) == {"succeeded"}


def test_periodic_tasks_created_after_migrate():
    task = PeriodicTask.objects.get(name="nightly-cost-sync")
    assert task.task == "costs.sync_all_providers"
    assert (task.crontab.minute, task.crontab.hour) == ("30", "2")
    assert PeriodicTask.objects.filter(task="costs.sweep_stale_jobs").exists()


def test_periodic_tasks_are_ensured_whatever_crontabs_staff_added():
    # Two identical crontabs (the one left when its task was deleted, one added in the
    # admin for another task) made get_or_create raise, and with it migrate.
    from django_celery_beat.models import CrontabSchedule

    from costs.schedule import ensure_periodic_tasks

    PeriodicTask.objects.filter(name="sweep-stale-sync-jobs").delete()
    CrontabSchedule.objects.create(minute="*/10", hour="*", day_of_month="*",
                                   month_of_year="*", day_of_week="*", timezone="UTC")
    ensure_periodic_tasks()
    ensure_periodic_tasks()  # and again: nothing more
    task = PeriodicTask.objects.get(name="sweep-stale-sync-jobs")
    assert task.crontab.minute == "*/10" and PeriodicTask.objects.count() == 2


@pytest.mark.parametrize("retries", [0, 3, 10])
def test_retry_countdown_bounds_what_the_other_side_asks(retries):
    for nonsense in (float("inf"), float("nan"), -5.0, 0.0):
        assert retry_countdown(retries, nonsense) <= 30 * 60
    assert retry_countdown(retries, 1e12) == 3000


def test_a_retry_waits_less_than_the_sweeper_and_the_broker_allow(org, import_root, settings):
    """The longest retry wait plus a whole run stays under the sweeper's limit (a
    provider asking for 6 h was swept as a lost worker after 2) and under Redis's
    visibility timeout (a message held past it is delivered again, to a second worker)."""
    longest = retry_countdown(6, 1e12)
    assert longest + settings.SYNC_TIME_LIMIT < settings.SYNC_JOB_STALE_SECONDS
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert longest + settings.SYNC_TIME_LIMIT < timeout
    provider = _focus_provider(org, import_root, "a")
    job = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    started = timezone.now() - timedelta(seconds=longest + settings.SYNC_TIME_LIMIT - 60)
    waiting = SyncJobProviderFactory(job=job, provider=provider, started_at=started,
                                     status=SyncJobProvider.Status.RUNNING)

    assert sync_jobs_sweep_stale() == 0
    waiting.refresh_from_db()
    assert waiting.status == SyncJobProvider.Status.RUNNING


@pytest.mark.parametrize("retries", [0, 3, 10])
def test_retry_countdown_backs_off_and_honours_retry_after(retries):
    countdown = retry_countdown(retries, None)
    ceiling = min(30 * 60, 30 * 2**retries)
    assert ceiling / 2 <= countdown <= ceiling
    assert retry_countdown(retries, 2900) == 2900


def _csv_upload(name="export.csv", day="2024-03-05"):
    import io

    from tests.costs.focus_files import COLUMNS

    buffer = io.StringIO()
    buffer.write(",".join(COLUMNS) + "\n")
    buffer.write(f"7.5,USD,Usage,Usage-Based,{day} 01:00:00,{day} 00:00:00,7.5,AWS,eu-west-1,Lambda,42\n")
    return SimpleUploadedFile(name, buffer.getvalue().encode(), content_type="text/csv")


def test_import_upload_runs_job_and_removes_file(api, org, import_root, run_on_commit):
    provider = ProviderFactory(organization=org, kind="focus")
    response = run_on_commit(
        api.post, f"/api/v1/providers/{provider.id}/import", {"file": _csv_upload()},
        format="multipart",
    )
    assert response.status_code == 202
    job = SyncJob.objects.get(pk=response.json()["job_id"])
    assert job.status == "succeeded"
    record = CostRecord.objects.get(provider=provider)
    assert (record.day, record.service, record.billed_amount) == (
        date(2024, 3, 5), "Lambda", Decimal("7.5"))
    assert list((import_root.parent / "uploads").iterdir()) == []


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("march export.csv", b"not,a,focus\nfile,at,all\n", "missing required FOCUS column"),
        ("march.parquet", b"BilledCost,BillingCurrency\n1,USD\n", "is not a Parquet file"),
        ("march.csv.gz", b"BilledCost,BillingCurrency\n1,USD\n", "is not gzip-compressed"),
    ],
)
def test_import_error_names_the_uploaded_file_and_what_is_wrong(
    api, org, import_root, run_on_commit, name, content, problem
):
    provider = ProviderFactory(organization=org, kind="focus")
    upload = SimpleUploadedFile(name, content, content_type="application/octet-stream")
    response = run_on_commit(
        api.post, f"/api/v1/providers/{provider.id}/import", {"file": upload}, format="multipart"
    )
    assert response.status_code == 202
    job = api.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "failed"
    error = job["providers"][0]["error"]
    assert error.startswith(name.replace(" ", "_") + ": ") and problem in error
    assert not CostRecord.objects.filter(provider=provider).exists()
    assert list((import_root.parent / "uploads").iterdir()) == []


def test_import_rejects_other_suffix(api, org, import_root):
    provider = ProviderFactory(organization=org, kind="focus")
    response = api.post(f"/api/v1/providers/{provider.id}/import",
                        {"file": _csv_upload("export.xlsx")}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["details"]


def test_import_missing_file_is_400(api, org, import_root):
    provider = ProviderFactory(organization=org, kind="focus")
    response = api.post(f"/api/v1/providers/{provider.id}/import", {}, format="multipart")
    assert response.status_code == 400


def test_import_too_large_is_413(api, org, import_root, settings):
    settings.UPLOAD_MAX_BYTES = 50
    provider = ProviderFactory(organization=org, kind="focus")
    response = api.post(f"/api/v1/providers/{provider.id}/import", {"file": _csv_upload()},
                        format="multipart")
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_import_of_several_files_reads_them_together_and_removes_their_folder(
    api, org, import_root, run_on_commit
):
    provider = ProviderFactory(organization=org, kind="focus")
    files = [_csv_upload("part-1.csv"), _csv_upload("part-2.csv", day="2024-03-06")]
    response = run_on_commit(api.post, f"/api/v1/providers/{provider.id}/import",
                             {"file": files}, format="multipart")
    assert response.status_code == 202
    assert SyncJob.objects.get(pk=response.json()["job_id"]).status == "succeeded"
    assert sorted(CostRecord.objects.filter(provider=provider).values_list("day", flat=True)) == [
        date(2024, 3, 5), date(2024, 3, 6)]
    assert list((import_root.parent / "uploads").iterdir()) == []


def test_import_of_several_files_with_a_bad_one_names_it_and_imports_nothing(
    api, org, import_root, run_on_commit
):
    provider = ProviderFactory(organization=org, kind="focus")
    bad = SimpleUploadedFile("part-2.csv", b"not,a,focus\nfile,at,all\n")
    response = run_on_commit(api.post, f"/api/v1/providers/{provider.id}/import",
                             {"file": [_csv_upload("part-1.csv"), bad]}, format="multipart")
    job = api.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "failed"
    assert job["providers"][0]["error"].startswith("part-2.csv: missing required FOCUS column")
    assert not CostRecord.objects.filter(provider=provider).exists()
    assert list((import_root.parent / "uploads").iterdir()) == []
    response = api.post(f"/api/v1/providers/{provider.id}/import",
                        {"file": [_csv_upload("a.csv"), _csv_upload("b.xlsx")]},
                        format="multipart")
    assert response.status_code == 400
    assert "b.xlsx" in response.json()["details"]["file"][0]


def test_import_size_limit_counts_every_file_of_the_request(api, org, import_root, settings):
    one = len(_csv_upload().read())
    settings.UPLOAD_MAX_BYTES = one + one // 2  # each file fits, both together do not
    provider = ProviderFactory(organization=org, kind="focus")
    response = api.post(f"/api/v1/providers/{provider.id}/import",
                        {"file": [_csv_upload("a.csv"), _csv_upload("b.csv")]},
                        format="multipart")
    assert response.status_code == 413
    assert not (import_root.parent / "uploads").exists() or not list(
        (import_root.parent / "uploads").iterdir())


def test_import_into_non_focus_provider_is_422(api, org, import_root):
    provider = ProviderFactory(organization=org, kind="aws", config={})
    response = api.post(f"/api/v1/providers/{provider.id}/import", {"file": _csv_upload()},
                        format="multipart")
    assert response.status_code == 422


def test_import_viewer_forbidden_and_other_org_404(viewer_api, other_api, org, import_root):
    provider = ProviderFactory(organization=org, kind="focus")
    url = f"/api/v1/providers/{provider.id}/import"
    assert viewer_api.post(url, {"file": _csv_upload()}, format="multipart").status_code == 403
    assert other_api.post(url, {"file": _csv_upload()}, format="multipart").status_code == 404


@pytest.fixture
def unreachable_broker():
    """A broker nobody listens on (port 1): publishing fails at once. The app's pools are
    set aside, not closed, and put back afterwards."""
    from infraaudit.celery import app

    names = ("task_always_eager", "broker_url", "task_publish_retry", "broker_transport_options")
    previous = {name: app.conf[name] for name in names}
    pools = (app._pool, app.amqp._producer_pool)
    app.conf.update(
        task_always_eager=False, broker_url="redis://127.0.0.1:1/0", task_publish_retry=False,
        broker_transport_options={"max_retries": 0},
    )
    app._pool = app.amqp._producer_pool = None
    yield
    app.conf.update(previous)
    app._pool, app.amqp._producer_pool = pools


def test_sync_with_the_broker_down_fails_the_job_at_once_not_a_500(
    api, org, import_root, run_on_commit, unreachable_broker, settings
):
    settings.FORECAST_WARM_AFTER_SYNC = True  # on with a broker: it cannot be queued either
    focus_provider(org, import_root, "A")
    focus_provider(org, import_root, "B")
    response = run_on_commit(api.post, "/api/v1/costs/sync", {}, format="json")
    assert response.status_code == 202
    job = api.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "failed" and job["finished_at"] is not None
    assert [p["status"] for p in job["providers"]] == ["failed", "failed"]
    assert "broker" in job["providers"][0]["error"]
    # The next request is a new job, not the dead one handed back again.
    again = run_on_commit(api.post, "/api/v1/costs/sync", {}, format="json")
    assert again.json()["job_id"] != response.json()["job_id"]


def _focus_provider(org, import_root, name: str, amount: str = "7"):
    folder = import_root / org.slug / name
    write_focus_csv(folder / "export.csv", [{"day": "2024-01-01", "service": "EC2", "amount": amount}])
    return ProviderFactory(organization=org, name=name, kind="focus", config={"uri": str(folder)})


def test_sync_of_a_provider_whose_part_of_a_running_job_is_over_starts_a_new_job(
    api, org, import_root, django_capture_on_commit_callbacks
):
    # The nightly job of A and B: A failed (its export was missing), B still runs. The
    # admin delivers A's export and asks for A: it used to get the nightly job back, with
    # A's old failure, and A was never read.
    a = _focus_provider(org, import_root, "a")
    _focus_provider(org, import_root, "b")
    (import_root / org.slug / "a" / "export.csv").unlink()
    with django_capture_on_commit_callbacks(execute=False):
        nightly = sync_job_request(organization=org)
    entry_a = nightly.results.get(provider=a)
    sync_provider.delay(entry_a.id)
    entry_a.refresh_from_db()
    nightly.refresh_from_db()
    assert (entry_a.status, nightly.status) == ("failed", "running")
    write_focus_csv(import_root / org.slug / "a" / "export.csv",
                    [{"day": "2024-01-01", "service": "EC2", "amount": "7"}])

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/costs/sync", {"provider_id": a.id}, format="json")

    assert response.status_code == 202
    assert response.json()["job_id"] != nightly.id
    assert SyncJob.objects.get(pk=response.json()["job_id"]).status == "succeeded"
    assert CostRecord.objects.filter(provider=a).exists()


def test_redelivered_task_of_a_finished_part_finishes_its_job(org, import_root):
    # The worker died after writing the part's outcome, before finishing the job: the
    # broker delivers the task again, which found the part over and returned, and the
    # job stayed running for good (handed to every later request for the provider).
    provider = _focus_provider(org, import_root, "a")
    job = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    entry = SyncJobProviderFactory(job=job, provider=provider,
                                   status=SyncJobProvider.Status.SUCCEEDED, runs=1)

    sync_provider.delay(entry.id)

    job.refresh_from_db()
    assert job.status == SyncJob.Status.SUCCEEDED


def test_sweeper_finishes_an_old_job_whose_parts_are_all_over(org, import_root):
    provider = _focus_provider(org, import_root, "a")
    job = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    SyncJobProviderFactory(job=job, provider=provider, status=SyncJobProvider.Status.FAILED,
                           error="access denied")
    recent = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    SyncJobProviderFactory(job=recent, provider=provider, status=SyncJobProvider.Status.SUCCEEDED)
    SyncJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=3))

    assert sync_jobs_sweep_stale() == 1

    job.refresh_from_db()
    recent.refresh_from_db()
    # The recent one may have a finisher at work (anomaly detection): it is left to it.
    assert (job.status, recent.status) == (SyncJob.Status.FAILED, SyncJob.Status.RUNNING)


def test_sync_part_whose_worker_died_runs_again_once_then_fails(org, import_root):
    """A part started but never finished took its worker down (OOM killer, restart);
    the broker delivers it again (acks_late, reject_on_worker_lost). Once is a restart:
    it runs. The same part losing its worker twice fails instead of looping for ever."""
    provider = _focus_provider(org, import_root, "a")
    job = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    lost_once = SyncJobProviderFactory(job=job, provider=provider,
                                       status=SyncJobProvider.Status.RUNNING, runs=1)
    sync_provider.delay(lost_once.id)
    lost_once.refresh_from_db()
    assert (lost_once.status, lost_once.runs) == (SyncJobProvider.Status.SUCCEEDED, 2)

    job = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    lost_twice = SyncJobProviderFactory(job=job, provider=provider,
                                        status=SyncJobProvider.Status.RUNNING, runs=2)
    sync_provider.delay(lost_twice.id)
    lost_twice.refresh_from_db()
    job.refresh_from_db()
    assert lost_twice.status == SyncJobProvider.Status.FAILED
    assert "stopped 2 times before it finished" in lost_twice.error
    assert job.status == SyncJob.Status.FAILED


def test_sync_request_sweeps_a_job_whose_process_died_where_no_beat_runs(api, org, import_root):
    # The embedded default runs a sync in its request and runs no beat: a restart mid-sync
    # left the job running, and every later request was handed it.
    provider = _focus_provider(org, import_root, "a")
    past = timezone.now() - timedelta(hours=3)
    dead = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    SyncJobProviderFactory(job=dead, provider=provider, status=SyncJobProvider.Status.RUNNING,
                           started_at=past, runs=1)
    SyncJob.objects.filter(pk=dead.pk).update(created_at=past, started_at=past)

    response = api.post("/api/v1/costs/sync", {"provider_id": provider.id}, format="json")

    assert response.status_code == 202
    assert response.json()["job_id"] != dead.id
    dead.refresh_from_db()
    assert dead.status == SyncJob.Status.FAILED
