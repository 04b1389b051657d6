"""FOCUS imports replace the billing periods they deliver (``CostRecord.billing_period``),
end to end through the import API and the folder sync: a later period's correction of an
earlier one's days, exports in local time, folders with a month missing, restatements
that drop a day, and files without a BillingPeriodStart column."""

import csv
import io
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Sum

from costs.models import CostRecord, SyncJob
from costs.services.sync import cost_records_sync
from tests.factories import ProviderFactory

pytestmark = pytest.mark.django_db

HEADER = ["BillingPeriodStart", "ChargePeriodStart", "ChargeClass", "BilledCost",
          "EffectiveCost", "BillingCurrency", "ServiceName", "RegionId", "SubAccountId"]


def focus_bytes(rows, header=HEADER) -> bytes:
    """rows: (billing period start, charge period start, billed, service[, charge class])."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for period, start, billed, service, *charge_class in rows:
        row = [period, start, "".join(charge_class), billed, billed, "USD", service,
               "us-east-1", "111"]
        writer.writerow(row if header == HEADER else row[1:])
    return buffer.getvalue().encode()


def upload(api, run_on_commit, provider, name, rows, header=HEADER):
    response = run_on_commit(
        api.post, f"/api/v1/providers/{provider.id}/import",
        {"file": SimpleUploadedFile(name, focus_bytes(rows, header), content_type="text/csv")},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    job = SyncJob.objects.get(pk=response.json()["job_id"])
    assert job.status == "succeeded", list(job.results.values("error"))
    return job


def total(provider, first=None, last=None) -> Decimal:
    records = CostRecord.objects.filter(provider=provider)
    if first:
        records = records.filter(day__gte=first, day__lte=last)
    return records.aggregate(total=Sum("billed_amount"))["total"] or Decimal(0)


def month(period: str, days: int, amount: str, service="EC2"):
    return [(f"{period}-01T00:00:00Z", f"{period}-{day:02d}T00:00:00Z", amount, service)
            for day in range(1, days + 1)]


@pytest.fixture
def focus(org, import_root):
    return ProviderFactory(organization=org, kind="focus")


def test_a_correction_in_the_next_periods_export_adds_to_the_corrected_day(
    api, run_on_commit, focus
):
    # FOCUS puts a correction of October in November's export, dated in October
    # (ChargeClass Correction). Replacing every day from the file's first to its last
    # deleted October 3-31 (October's total went from 310 to 19).
    upload(api, run_on_commit, focus, "oct.csv", month("2024-10", 31, "10"))
    november = [*month("2024-11", 30, "20"),
                ("2024-11-01T00:00:00Z", "2024-10-03T00:00:00Z", "-1", "EC2", "Correction")]
    upload(api, run_on_commit, focus, "nov.csv", november)
    assert total(focus, date(2024, 10, 1), date(2024, 10, 31)) == 309
    assert total(focus, date(2024, 11, 1), date(2024, 11, 30)) == 600
    corrected = CostRecord.objects.filter(provider=focus, day=date(2024, 10, 3))
    assert sorted(corrected.values_list("billing_period", "billed_amount")) == [
        (date(2024, 10, 1), 10), (date(2024, 11, 1), -1)]
    # Either export re-delivered unchanged changes nothing; October restated keeps the
    # correction, November restated without it drops it.
    focus.refresh_from_db()
    version = focus.data_version
    upload(api, run_on_commit, focus, "nov.csv", november)
    upload(api, run_on_commit, focus, "oct.csv", month("2024-10", 31, "10"))
    focus.refresh_from_db()
    assert focus.data_version == version
    upload(api, run_on_commit, focus, "oct-v2.csv", month("2024-10", 31, "11"))
    assert total(focus, date(2024, 10, 1), date(2024, 10, 31)) == 340
    upload(api, run_on_commit, focus, "nov-v2.csv", month("2024-11", 30, "20"))
    assert total(focus, date(2024, 10, 1), date(2024, 10, 31)) == 341
    focus.refresh_from_db()
    assert focus.synced_days() == [(date(2024, 10, 1), date(2024, 11, 30))]


def test_a_correction_alone_marks_no_day_as_synced(api, run_on_commit, focus):
    corrections = [("2024-11-01T00:00:00Z", "2024-10-03T00:00:00Z", "-1", "EC2", "Correction")]
    upload(api, run_on_commit, focus, "nov-corrections.csv", corrections)
    focus.refresh_from_db()
    assert total(focus) == -1 and focus.synced_days() == []


def test_a_restated_period_without_its_last_day_drops_that_day(api, run_on_commit, focus):
    upload(api, run_on_commit, focus, "oct.csv", month("2024-10", 31, "10"))
    upload(api, run_on_commit, focus, "oct-v2.csv", month("2024-10", 30, "10"))
    assert total(focus) == 300
    assert not CostRecord.objects.filter(provider=focus, day=date(2024, 10, 31)).exists()


def test_a_folder_sync_leaves_a_period_between_its_files_alone(
    api, run_on_commit, org, import_root
):
    # January and March in the folder, February uploaded: the folder's sync replaced
    # every day from January 1 to March 31, February included.
    folder = import_root / org.slug / "export"
    folder.mkdir(parents=True)
    (folder / "2024-01.csv").write_bytes(focus_bytes(month("2024-01", 31, "1")))
    (folder / "2024-03.csv").write_bytes(focus_bytes(month("2024-03", 31, "3")))
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": str(folder)})
    upload(api, run_on_commit, provider, "feb.csv", month("2024-02", 29, "2"))
    cost_records_sync(provider=provider)
    assert total(provider, date(2024, 2, 1), date(2024, 2, 29)) == 58
    assert total(provider) == 31 + 58 + 93


def test_a_folder_sync_marks_only_its_periods_days_as_synced(org, import_root):
    folder = import_root / org.slug / "export"
    folder.mkdir(parents=True)
    (folder / "2024-01.csv").write_bytes(focus_bytes(month("2024-01", 31, "1")))
    (folder / "2024-03.csv").write_bytes(focus_bytes(month("2024-03", 31, "3")))
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": str(folder)})
    outcome = cost_records_sync(provider=provider)
    provider.refresh_from_db()
    # February is no synced day without spend: its records are missing, not zero.
    assert provider.synced_days() == [(date(2024, 1, 1), date(2024, 1, 31)),
                                      (date(2024, 3, 1), date(2024, 3, 31))]
    assert (outcome.date_from, outcome.date_to) == (date(2024, 1, 1), date(2024, 3, 31))


def test_local_time_exports_keep_the_hours_that_cross_into_the_next_period(
    api, run_on_commit, focus
):
    # October's export in UTC-5 ends with November 1's first five UTC hours; November's
    # begins at its sixth. Each import replaced the other's hours of that UTC day.
    def hourly(first: date, last: date):
        rows, hour = [], datetime(first.year, first.month, first.day)
        while hour.date() <= last:
            rows.append((f"{first:%Y-%m-%d}T00:00:00-05:00",
                         hour.strftime("%Y-%m-%dT%H:%M:%S-05:00"), "1", "EC2"))
            hour += timedelta(hours=1)
        return rows

    october = hourly(date(2024, 10, 1), date(2024, 10, 31))
    november = hourly(date(2024, 11, 1), date(2024, 11, 30))
    upload(api, run_on_commit, focus, "oct.csv", october)
    upload(api, run_on_commit, focus, "nov.csv", november)
    upload(api, run_on_commit, focus, "oct.csv", october)  # re-delivered, unchanged
    assert total(focus, date(2024, 11, 1), date(2024, 11, 1)) == 24
    assert total(focus) == 24 * (31 + 30)


def test_a_file_without_billing_periods_replaces_its_days_of_each_month(
    api, run_on_commit, focus
):
    # A cut-down export without BillingPeriodStart cannot say which periods it delivers:
    # it replaces, in each month it holds, the days from its first to its last there.
    no_period = HEADER[1:]
    upload(api, run_on_commit, focus, "oct.csv", month("2024-10", 31, "10"), no_period)
    upload(api, run_on_commit, focus, "patch.csv",
           [("", "2024-10-05T00:00:00Z", "7", "EC2"), ("", "2024-10-06T00:00:00Z", "7", "EC2")],
           no_period)
    assert total(focus) == 310 - 20 + 14
    by_period = CostRecord.objects.filter(provider=focus).values_list("billing_period", flat=True)
    assert set(by_period) == {date(2024, 10, 1)}


def test_the_admin_shows_and_filters_records_by_billing_period(
    api, run_on_commit, focus, admin_client
):
    november = [("2024-11-01T00:00:00Z", "2024-10-03T00:00:00Z", "-1", "Support", "Correction"),
                ("2024-11-01T00:00:00Z", "2024-11-03T00:00:00Z", "5", "EC2")]
    upload(api, run_on_commit, focus, "oct.csv", month("2024-10", 3, "10"))
    upload(api, run_on_commit, focus, "nov.csv", november)
    page = admin_client.get("/admin/costs/costrecord/")
    assert page.status_code == 200 and "Billing period" in page.content.decode()
    page = admin_client.get("/admin/costs/costrecord/?billing_period__gte=2024-11-01")
    assert page.status_code == 200
    assert "Support" in page.content.decode()
    assert list(page.context["cl"].queryset.values_list("day", flat=True).order_by("day")) == [
        date(2024, 10, 3), date(2024, 11, 3)]


@pytest.mark.django_db(transaction=True)
def test_billing_period_migration_gives_existing_records_their_days_month():
    from tests.migrations import migrate_to, migrate_to_latest

    try:
        old = migrate_to([("costs", "0004_syncjobprovider_snapshot"), ("accounts", "0001_initial")])
        organization = old.get_model("accounts", "Organization").objects.create(
            name="Migrated", slug="migrated")
        provider = old.get_model("providers", "Provider").objects.create(
            organization=organization, name="AWS", kind="aws", config={})
        old.get_model("costs", "CostRecord").objects.create(
            organization=organization, provider=provider, day=date(2024, 10, 17),
            service="EC2", region="us-east-1", currency="USD", billed_amount=Decimal(1),
            effective_amount=Decimal(1))
        new = migrate_to([("costs", "0005_costrecord_billing_period")])
        record = new.get_model("costs", "CostRecord").objects.get()
        assert record.billing_period == date(2024, 10, 1)
    finally:
        migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_an_older_import_slower_to_read_does_not_write_over_a_newer_one(
    org, import_root, tmp_path, monkeypatch
):
    # Upload v1, then a restated v2, on two workers; v1 is slower to read. Its write used
    # to land last, so October ended as v1 said. One sync of a provider at a time, from
    # its read to its write, lets v2 read only once v1 is written.
    import threading

    from django.db import connections

    from costs.models import SyncJobProvider
    from costs.services import jobs, sync

    provider = ProviderFactory(organization=org, kind="focus")
    files = {}
    for version, amount in (("v1", "10"), ("v2", "12")):
        files[version] = tmp_path / f"{version}.csv"
        files[version].write_bytes(focus_bytes(month("2024-10", 31, amount)))
    entries = {}
    for version in ("v1", "v2"):
        job = SyncJob.objects.create(organization=org, kind="focus_import")
        entries[version] = SyncJobProvider.objects.create(
            job=job, provider=provider, source_file=str(files[version]))
    reading_v1, real_fetch = threading.Event(), sync._fetch

    def fetch(provider, start, end, source_file, stats):
        totals = real_fetch(provider, start, end, source_file, stats)
        if source_file == str(files["v1"]):
            reading_v1.set()
            threading.Event().wait(0.5)  # a big file: still reading when v2 starts
        return totals

    monkeypatch.setattr(sync, "_fetch", fetch)
    errors = []

    def run(version):
        try:
            if version == "v2":
                reading_v1.wait(10)
            jobs.sync_result_run(result_id=entries[version].id)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(version,)) for version in ("v1", "v2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert total(provider) == 12 * 31


def test_an_export_split_into_parts_is_uploaded_in_one_request(api, run_on_commit, focus):
    # Part 1 and part 2 of October (one per sub-account, say) are one delivery of the
    # period: uploaded one by one, the second replaced the first (155 of 465 left).
    parts = [SimpleUploadedFile(name, focus_bytes(month("2024-10", 31, amount, service)),
                                content_type="text/csv")
             for name, amount, service in (("oct-00001.csv", "10", "EC2"),
                                           ("oct-00002.csv", "5", "S3"))]
    response = run_on_commit(api.post, f"/api/v1/providers/{focus.id}/import",
                             {"file": parts}, format="multipart")
    assert response.status_code == 202, response.content
    job = api.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "succeeded"
    assert job["providers"][0]["rows_read"] == 62
    assert total(focus) == 31 * 15
    # One part uploaded alone is a whole delivery of the period: October is then that.
    upload(api, run_on_commit, focus, "oct-00001.csv", month("2024-10", 31, "10"))
    assert total(focus) == 310


def daily(first: date, last: date, amount="100"):
    """A row per day of first..last, each in its own month's billing period."""
    return [(f"{first + timedelta(days=n):%Y-%m}-01T00:00:00Z",
             f"{first + timedelta(days=n):%Y-%m-%d}T00:00:00Z", amount, "EC2")
            for n in range((last - first).days + 1)]


def active_anomalies(provider, day):
    from costs.models import Anomaly

    return list(Anomaly.objects.filter(provider=provider, date=day, status="active")
                .values_list("service", "actual_amount"))


def test_a_correction_dropped_from_its_period_takes_its_anomaly_with_it(
    api, run_on_commit, focus
):
    # Anomalies were judged again only from the new data's first day: a restated November
    # without its correction of October 20 left October 20's anomaly active at 5,100.
    upload(api, run_on_commit, focus, "may-oct.csv", daily(date(2024, 5, 1), date(2024, 10, 31)))
    november = [*daily(date(2024, 11, 1), date(2024, 11, 30)),
                ("2024-11-01T00:00:00Z", "2024-10-20T00:00:00Z", "5000", "EC2", "Correction")]
    job = upload(api, run_on_commit, focus, "nov.csv", november)
    assert active_anomalies(focus, date(2024, 10, 20))
    assert job.results.get().date_from == date(2024, 10, 20)
    job = upload(api, run_on_commit, focus, "nov-v2.csv", daily(date(2024, 11, 1), date(2024, 11, 30)))
    assert total(focus, date(2024, 10, 20), date(2024, 10, 20)) == 100
    assert active_anomalies(focus, date(2024, 10, 20)) == []
    # The entry's days are the days the import changed, the correction's day included.
    assert job.results.get().date_from == date(2024, 10, 20)


def test_a_day_dropped_from_a_restated_period_takes_its_anomaly_with_it(
    api, run_on_commit, focus
):
    upload(api, run_on_commit, focus, "may-sep.csv", daily(date(2024, 5, 1), date(2024, 9, 30)))
    october = daily(date(2024, 10, 1), date(2024, 10, 31))
    october[0] = (*october[0][:2], "5000", "EC2")
    upload(api, run_on_commit, focus, "oct.csv", october)
    assert active_anomalies(focus, date(2024, 10, 1))
    upload(api, run_on_commit, focus, "oct-v2.csv", daily(date(2024, 10, 2), date(2024, 10, 31)))
    assert total(focus, date(2024, 10, 1), date(2024, 10, 1)) == 0
    assert active_anomalies(focus, date(2024, 10, 1)) == []
