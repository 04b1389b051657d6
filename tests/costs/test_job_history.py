"""A job's history survives the deletion of its providers: the entry keeps the provider's
id and name, and every path that runs or finishes a job (worker, sweeper, admin) copes
with a provider that is gone."""

from datetime import timedelta

import pytest
from django.utils import timezone

from costs.models import CostRecord, SyncJob, SyncJobProvider
from costs.services import sync
from costs.services.jobs import sync_job_request, sync_jobs_sweep_stale
from costs.tasks import sync_provider
from providers.models import Provider
from tests.costs.test_jobs import focus_provider
from tests.factories import ProviderFactory, SyncJobFactory, SyncJobProviderFactory
from tests.migrations import migrate_to, migrate_to_latest

pytestmark = pytest.mark.django_db

ENTRY_KEYS = {"provider_id", "name", "status", "rows_read", "records_written", "date_from",
              "date_to", "error"}


def _run(result: SyncJobProvider) -> None:
    """Run the entry's Celery task as a worker would; an exception in it fails the test."""
    sync_provider.apply(args=[result.pk]).get()


def test_job_history_entry_survives_provider_deletion_with_its_name(
    api, org, import_root, run_on_commit
):
    kept = focus_provider(org, import_root, "Kept")
    gone = focus_provider(org, import_root, "AWS Export")
    job_id = run_on_commit(api.post, "/api/v1/costs/sync", {}, format="json").json()["job_id"]
    before = api.get(f"/api/v1/jobs/{job_id}").json()

    assert api.delete(f"/api/v1/providers/{gone.id}").status_code == 204

    after = api.get(f"/api/v1/jobs/{job_id}")
    assert after.status_code == 200
    assert after.json() == before  # nothing about the finished job changed
    entries = after.json()["providers"]
    assert [(e["provider_id"], e["name"]) for e in entries] == [
        (gone.id, "AWS Export"), (kept.id, "Kept")]
    assert all(set(e) == ENTRY_KEYS for e in entries)
    assert entries[0]["status"] == "succeeded" and entries[0]["records_written"] == 2
    assert SyncJobProvider.objects.get(job_id=job_id, provider_name="AWS Export").provider is None
    assert not CostRecord.objects.filter(provider_id=gone.id).exists()
    # The old id answers 404: the provider is gone, its history is not.
    assert api.get(f"/api/v1/providers/{gone.id}").status_code == 404


def test_job_history_name_follows_a_rename_until_the_provider_is_deleted(api, org):
    job = SyncJobFactory(organization=org, status=SyncJob.Status.SUCCEEDED)
    first = SyncJobProviderFactory(job=job, provider__name="Zeta",
                                   status=SyncJobProvider.Status.SUCCEEDED)
    second = SyncJobProviderFactory(job=job, provider__name="Alpha",
                                    status=SyncJobProvider.Status.SUCCEEDED)
    first_id, second_id = first.provider_id, second.provider_id
    Provider.objects.filter(pk=first_id).update(name="Beta")
    names = [e["name"] for e in api.get(f"/api/v1/jobs/{job.id}").json()["providers"]]
    assert names == ["Alpha", "Beta"]  # the provider's name now, as in /providers

    Provider.objects.filter(pk__in=[first_id, second_id]).delete()
    entries = api.get(f"/api/v1/jobs/{job.id}").json()["providers"]
    # Two deleted providers in one job: both entries stay, each with its own id and the
    # name it had when the job was created, in name order.
    assert [(e["provider_id"], e["name"]) for e in entries] == [
        (second_id, "Alpha"), (first_id, "Zeta")]


def test_job_history_schema_documents_the_deleted_provider(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    entry = schema["components"]["schemas"]["SyncJobResult"]
    assert set(entry["properties"]) == ENTRY_KEYS
    assert set(entry["required"]) == ENTRY_KEYS
    provider_id = entry["properties"]["provider_id"]
    assert provider_id["type"] == "integer" and not provider_id.get("nullable")
    assert "deleted" in provider_id["description"]
    assert "deleted" in entry["properties"]["name"]["description"]
    assert "provider deleted" in schema["paths"]["/api/v1/jobs/{job_id}"]["get"]["description"]


def test_job_history_queued_entry_of_a_deleted_provider_fails_not_the_worker(
    org, import_root
):
    """Deleted while its task waited in the queue: the task ends the entry as failed (it
    used to raise DoesNotExist in the worker and leave the job queued for good)."""
    gone = focus_provider(org, import_root, "Gone")
    focus_provider(org, import_root, "Kept")
    job = sync_job_request(organization=org)  # on_commit never runs: the tasks stay queued
    gone_entry, kept_entry = job.results.order_by("provider__name")
    gone.delete()

    _run(gone_entry)
    _run(kept_entry)

    gone_entry.refresh_from_db()
    job.refresh_from_db()
    assert gone_entry.status == "failed" and gone_entry.error.startswith("provider deleted")
    assert gone_entry.provider_name == "Gone" and gone_entry.finished_at is not None
    assert job.status == "partial" and job.finished_at is not None


def test_job_history_import_of_a_deleted_provider_fails_and_removes_the_upload(org, tmp_path):
    upload = tmp_path / "abc--export.csv"
    upload.write_text("BilledCost\n1\n")
    job = SyncJobFactory(organization=org, kind="focus_import")
    entry = SyncJobProviderFactory(job=job, source_file=str(upload))
    Provider.objects.filter(pk=entry.provider_id).delete()

    _run(entry)

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.results.get().error.startswith("provider deleted")
    assert not upload.exists()


def test_job_history_provider_deleted_mid_sync_fails_its_entry(
    org, import_root, monkeypatch, run_on_commit
):
    """Deleted after its source was read, before its records were written: the write
    finds no provider and the entry fails (it used to be an internal error, or vanish)."""
    provider = focus_provider(org, import_root, "Mid")
    real_fetch = sync._fetch

    def fetch_then_delete(provider, *args):
        totals = real_fetch(provider, *args)
        Provider.objects.filter(pk=provider.pk).delete()
        return totals

    monkeypatch.setattr(sync, "_fetch", fetch_then_delete)
    job = run_on_commit(sync_job_request, organization=org)

    job.refresh_from_db()
    entry = job.results.get()
    assert job.status == "failed"
    assert (entry.status, entry.provider_pk, entry.provider_name) == ("failed", provider.id, "Mid")
    assert entry.error.startswith("provider deleted")
    assert not CostRecord.objects.exists()


def test_job_history_finishing_a_job_skips_detection_of_a_deleted_provider(org, import_root):
    """A provider that synced (records changed) and was deleted before the job's last
    provider finished: nothing is left to judge, and the job still succeeds."""
    gone = focus_provider(org, import_root, "Gone")
    focus_provider(org, import_root, "Kept")
    job = sync_job_request(organization=org)
    gone_entry, kept_entry = job.results.order_by("provider__name")
    _run(gone_entry)
    gone_entry.refresh_from_db()
    assert gone_entry.status == "succeeded" and gone_entry.changed
    gone.delete()

    _run(kept_entry)

    job.refresh_from_db()
    gone_entry.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.error == "" and gone_entry.error == ""
    assert (gone_entry.status, gone_entry.records_written) == ("succeeded", 2)


def test_job_history_sweeper_fails_the_stale_entry_of_a_deleted_provider(org):
    """A lost worker and a deleted provider: the sweeper still finishes the job (the job
    used to stay running for good, its only entry deleted with the provider)."""
    job = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    entry = SyncJobProviderFactory(job=job, status=SyncJobProvider.Status.RUNNING,
                                   started_at=timezone.now() - timedelta(hours=3))
    SyncJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=3))
    Provider.objects.filter(pk=entry.provider_id).delete()

    assert sync_jobs_sweep_stale() == 1

    job.refresh_from_db()
    entry.refresh_from_db()
    assert job.status == "failed" and job.finished_at is not None
    assert entry.status == "failed" and entry.error.startswith("provider deleted")


def test_job_history_a_deleted_providers_entry_does_not_block_a_new_sync(org, import_root):
    gone = ProviderFactory(organization=org, name="Gone")
    kept = focus_provider(org, import_root, "Kept")
    running = SyncJobFactory(organization=org, status=SyncJob.Status.RUNNING)
    SyncJobProviderFactory(job=running, provider=gone)
    gone.delete()
    job = sync_job_request(organization=org, provider=kept)
    assert job.pk != running.pk


def test_job_history_admin_shows_the_entry_of_a_deleted_provider(admin_client):
    entry = SyncJobProviderFactory(provider__name="Gone Provider", error="throttled")
    Provider.objects.filter(pk=entry.provider_id).delete()
    assert admin_client.get("/admin/costs/syncjob/").status_code == 200
    change = admin_client.get(f"/admin/costs/syncjob/{entry.job_id}/change/")
    assert change.status_code == 200
    html = change.content.decode()
    assert "Gone Provider" in html and "deleted" in html and "throttled" in html


# -- the migration: snapshot of the entries that exist -----------------------------------
# Organizations as they were then too (no aws_external_id column to fill).
BEFORE = [("costs", "0003_finance_reviewers_group"), ("accounts", "0001_initial")]
AFTER = [("costs", "0004_syncjobprovider_snapshot")]


@pytest.mark.django_db(transaction=True)
def test_job_history_migration_backfills_the_snapshot_and_reverses():
    try:
        old = migrate_to(BEFORE)
        organization = old.get_model("accounts", "Organization").objects.create(
            name="Migrated", slug="migrated")
        provider = old.get_model("providers", "Provider").objects.create(
            organization=organization, name="Old AWS", kind="aws", config={})
        job = old.get_model("costs", "SyncJob").objects.create(organization=organization)
        old.get_model("costs", "SyncJobProvider").objects.create(job=job, provider=provider)

        new = migrate_to(AFTER)
        entries = new.get_model("costs", "SyncJobProvider").objects
        entry = entries.get(job_id=job.pk)
        assert (entry.provider_pk, entry.provider_name, entry.provider_kind) == (
            provider.pk, "Old AWS", "aws")

        # Back: an entry without its provider cannot stay under the old NOT NULL column.
        entries.filter(pk=entry.pk).update(provider=None)
        old = migrate_to(BEFORE)
        assert not old.get_model("costs", "SyncJobProvider").objects.exists()
    finally:
        migrate_to_latest()
