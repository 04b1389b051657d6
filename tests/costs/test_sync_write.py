"""The write path: FOCUS files through ``cost_records_sync`` into cost records, on
PostgreSQL (COPY + staging table) and through the Python fallback used on SQLite."""

from __future__ import annotations

import csv
import types
from collections import defaultdict
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from unittest import mock

import pytest

from costs.models import CostRecord
from costs.services import sync
from costs.services.sync import cost_records_sync, replace_window
from providers.adapters.base import CostRow, ProviderError
from tests.factories import CostRecordFactory, ProviderFactory

pytestmark = pytest.mark.django_db

HEADER = ["ChargePeriodStart", "BilledCost", "EffectiveCost", "BillingCurrency", "ServiceName",
          "RegionId", "SubAccountId", "ChargeFrequency"]
SAMPLE = Path(__file__).resolve().parents[2].parent / "shared/data/focus-1.0-sample.csv"


def write(path: Path, rows: list[tuple]) -> Path:
    """rows: (start, billed, service[, region[, account[, currency[, effective]]]])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for start, billed, service, *rest in rows:
            region, account, currency, effective = [*rest, *[None] * 4][:4]
            writer.writerow([start, billed, billed if effective is None else effective,
                             currency or "USD", service, region or "NULL", account or "NULL",
                             "Usage-based"])
    return path


@pytest.fixture(params=["postgresql", "python"])
def write_path(request, monkeypatch):
    """Each test runs on the COPY path and on the Python (SQLite) fallback."""
    if request.param == "python":
        monkeypatch.setattr(sync, "connection", types.SimpleNamespace(vendor="sqlite"))
    return request.param


@pytest.fixture
def root(settings, tmp_path, org):
    """The import folder of ``org``, IMPORT_ROOT/<slug>: the only one its providers read."""
    settings.IMPORT_ROOT = tmp_path / "imports"
    root = settings.IMPORT_ROOT / org.slug
    root.mkdir(parents=True)
    return root


@pytest.fixture
def provider(org, root):
    return ProviderFactory(organization=org, kind="focus", config={"uri": str(root / "export")})


def records(provider) -> dict:
    return {
        (r.day, r.service, r.region, r.account, r.currency): (r.billed_amount, r.effective_amount)
        for r in CostRecord.objects.filter(provider=provider)
    }


def test_sync_writes_daily_records_from_a_folder(write_path, root, provider):
    write(root / "export" / "a.csv", [
        ("2024-09-01T00:00:00Z", "1.5", "EC2", "us-east-1", "111"),
        ("2024-09-01T01:00:00Z", "2.5", "EC2", "us-east-1", "111", None, "2"),
        ("2024-09-01T02:00:00Z", "0.25", "S3"),
    ])
    write(root / "export" / "b.csv", [("2024-09-03 10:00:00", "7", "EC2", "us-east-1", "111")])

    outcome = cost_records_sync(provider=provider)

    assert outcome == sync.SyncOutcome(rows_read=4, records_written=3, date_from=date(2024, 9, 1),
                                       date_to=date(2024, 9, 3), changed=True)
    assert records(provider) == {
        (date(2024, 9, 1), "EC2", "us-east-1", "111", "USD"): (Decimal(4), Decimal("3.5")),
        (date(2024, 9, 1), "S3", "global", "", "USD"): (Decimal("0.25"), Decimal("0.25")),
        (date(2024, 9, 3), "EC2", "us-east-1", "111", "USD"): (Decimal(7), Decimal(7)),
    }
    assert CostRecord.objects.filter(provider=provider, organization=provider.organization).count() == 3
    provider.refresh_from_db()
    assert (provider.data_version, provider.coverage_start, provider.coverage_end) == (
        1, date(2024, 9, 1), date(2024, 9, 3))


def test_sync_rerun_with_unchanged_data_changes_nothing(write_path, root, provider):
    write(root / "export" / "a.csv", [("2024-09-01", "1.5", "EC2"), ("2024-09-02", "3", "S3")])
    cost_records_sync(provider=provider)
    provider.refresh_from_db()
    version, ids = provider.data_version, set(CostRecord.objects.values_list("id", flat=True))

    outcome = cost_records_sync(provider=provider)

    assert outcome.changed is False
    assert outcome.records_written == 2
    provider.refresh_from_db()
    assert provider.data_version == version
    assert set(CostRecord.objects.values_list("id", flat=True)) == ids  # not even rewritten


def test_sync_restatement_leaves_exactly_what_the_file_now_says(write_path, root, provider):
    path = root / "export" / "a.csv"
    write(path, [("2024-09-01", "10", "EC2"), ("2024-09-01", "5", "RDS"),
                 ("2024-09-02", "1", "EC2"), ("2024-09-02", "2", "S3")])
    cost_records_sync(provider=provider)
    before = records(provider)
    outside = CostRecordFactory(provider=provider, day=date(2024, 8, 31), service="Old")
    other = CostRecordFactory(day=date(2024, 9, 1), service="EC2")  # another provider

    # EC2 on the 1st restated, RDS gone, Lambda new; the 2nd unchanged.
    write(path, [("2024-09-01", "12.000000000001", "EC2"), ("2024-09-01", "4", "Lambda"),
                 ("2024-09-02", "1", "EC2"), ("2024-09-02", "2", "S3")])
    outcome = cost_records_sync(provider=provider)

    assert outcome.changed is True
    after = records(provider)
    key = (date(2024, 9, 1), "EC2", "global", "", "USD")
    assert after[key] == (Decimal("12.000000000001"), Decimal("12.000000000001"))
    assert (date(2024, 9, 1), "RDS", "global", "", "USD") not in after
    assert after[(date(2024, 9, 1), "Lambda", "global", "", "USD")] == (Decimal(4), Decimal(4))
    for day_two in [k for k in before if k[0] == date(2024, 9, 2)]:
        assert after[day_two] == before[day_two]
    assert len(after) == 5  # 4 from the file + the untouched day outside the window
    assert CostRecord.objects.filter(pk=outside.pk).exists()
    assert CostRecord.objects.filter(pk=other.pk).exists()
    provider.refresh_from_db()
    assert provider.data_version == 2


def test_sync_bad_row_in_a_later_file_writes_nothing(write_path, root, provider):
    write(root / "export" / "a.csv", [("2024-09-01", "1", "EC2")])
    cost_records_sync(provider=provider)
    before = records(provider)
    provider.refresh_from_db()
    version = provider.data_version

    write(root / "export" / "a.csv", [("2024-09-01", "99", "EC2")])
    write(root / "export" / "b.csv", [("2024-09-02", "1", "EC2"), ("2024-09-02", "1,5", "EC2")])
    with pytest.raises(ProviderError, match=r"b\.csv: column BilledCost, data row 2"):
        cost_records_sync(provider=provider)

    assert records(provider) == before
    provider.refresh_from_db()
    assert provider.data_version == version


class _RowAdapter:
    """A row adapter (like the API adapters) that yields whatever a test gives it."""

    default_backfill_days = 31
    rows: list[CostRow] = []

    def __init__(self, snapshot):
        pass

    def fetch(self, *, start, end, stats):
        stats.date_from, stats.date_to = start, end  # an API covers the window asked for
        for row in self.rows:
            stats.rows_read += 1
            yield row


def _row(day, service, billed, currency="USD"):
    return CostRow(day, service, "us-east-1", "1", Decimal(billed), Decimal(billed), currency)


def test_sync_failure_half_way_through_the_write_leaves_data_untouched(write_path, org, monkeypatch):
    provider = ProviderFactory(organization=org, kind="aws")
    monkeypatch.setattr(sync, "adapter_class", lambda kind: _RowAdapter)
    _RowAdapter.rows = [_row(date(2024, 9, 1), "EC2", "10"), _row(date(2024, 9, 2), "S3", "1")]
    cost_records_sync(provider=provider, start=date(2024, 9, 1), end=date(2024, 9, 2))
    before = records(provider)

    # The old rows are deleted first, then the insert fails (value too long for the column):
    # the transaction must roll the deletion back.
    _RowAdapter.rows = [_row(date(2024, 9, 1), "EC2", "11"), _row(date(2024, 9, 2), "x" * 300, "1")]
    with pytest.raises(Exception):  # noqa: B017 (the database's own error)
        cost_records_sync(provider=provider, start=date(2024, 9, 1), end=date(2024, 9, 2))

    assert records(provider) == before
    provider.refresh_from_db()
    assert provider.data_version == 1


def test_sync_row_adapter_window_and_currencies_in_the_key(write_path, org, monkeypatch):
    provider = ProviderFactory(organization=org, kind="aws")
    monkeypatch.setattr(sync, "adapter_class", lambda kind: _RowAdapter)
    stale = CostRecordFactory(provider=provider, day=date(2024, 9, 3), service="EC2")
    _RowAdapter.rows = [
        _row(date(2024, 9, 1), "EC2", "1.25"), _row(date(2024, 9, 1), "EC2", "1.25"),
        _row(date(2024, 9, 1), "EC2", "2", currency="EUR"),
    ]

    outcome = cost_records_sync(provider=provider, start=date(2024, 9, 1), end=date(2024, 9, 3))

    # API adapters cover the requested window: the 3rd had spend, now it has none.
    assert not CostRecord.objects.filter(pk=stale.pk).exists()
    assert (outcome.rows_read, outcome.records_written) == (3, 2)
    assert records(provider) == {
        (date(2024, 9, 1), "EC2", "us-east-1", "1", "USD"): (Decimal("2.5"), Decimal("2.5")),
        (date(2024, 9, 1), "EC2", "us-east-1", "1", "EUR"): (Decimal(2), Decimal(2)),
    }


def test_sync_keeps_twelve_decimals_exactly(write_path, root, provider):
    write(root / "export" / "tiny.csv",
          [("2024-09-01T00:00:00Z", "0.0000000001", "SQS")] * 7
          + [("2024-09-01T01:00:00Z", "123456789012345.000000000001", "EC2")]
          + [("2024-09-01T02:00:00Z", "0.0000000000004", "SNS", None, None, None, "0.0000000000006")])
    cost_records_sync(provider=provider)
    got = records(provider)
    assert got[(date(2024, 9, 1), "SQS", "global", "", "USD")][0] == Decimal("0.0000000007")
    assert got[(date(2024, 9, 1), "EC2", "global", "", "USD")][0] == Decimal(
        "123456789012345.000000000001")
    # Beyond the column's 12 decimals: rounded half away from zero, both paths alike.
    assert got[(date(2024, 9, 1), "SNS", "global", "", "USD")] == (Decimal(0),
                                                                  Decimal("0.000000000001"))


def test_sync_imports_an_uploaded_file_for_its_days_only(write_path, root, provider, tmp_path):
    write(root / "export" / "a.csv", [("2024-09-01", "1", "EC2"), ("2024-09-02", "2", "EC2")])
    cost_records_sync(provider=provider)
    upload = write(tmp_path / "uploads" / "upload-1", [("2024-09-02", "5", "EC2")])

    outcome = cost_records_sync(provider=provider, source_file=str(upload))

    assert (outcome.date_from, outcome.date_to, outcome.changed) == (
        date(2024, 9, 2), date(2024, 9, 2), True)
    assert {k[0]: v[0] for k, v in records(provider).items()} == {
        date(2024, 9, 1): Decimal(1), date(2024, 9, 2): Decimal(5)}


def test_sync_empty_file_changes_nothing(write_path, root, provider):
    CostRecordFactory(provider=provider, day=date(2024, 9, 1))
    write(root / "export" / "a.csv", [])
    outcome = cost_records_sync(provider=provider)
    assert (outcome.rows_read, outcome.date_from, outcome.changed) == (0, None, False)
    assert CostRecord.objects.filter(provider=provider).count() == 1


def test_replace_window_accepts_totals_dicts(write_path, org):
    provider = ProviderFactory(organization=org)
    key = (date(2024, 9, 1), "EC2", "global", "", "USD")
    written, changed = replace_window(provider=provider, date_from=date(2024, 9, 1),
                                      date_to=date(2024, 9, 1),
                                      totals={key: [Decimal("1.5"), Decimal("1")]})
    assert (written, changed) == (1, True)
    assert replace_window(provider=provider, date_from=date(2024, 9, 1), date_to=date(2024, 9, 1),
                          totals={key: [Decimal("1.50"), Decimal("1.0")]}) == (1, False)


def test_replace_window_refuses_a_day_larger_than_a_record_holds(write_path, org):
    provider = ProviderFactory(organization=org)
    key = (date(2024, 9, 1), "EC2", "global", "", "USD")
    replace_window(provider=provider, date_from=date(2024, 9, 1), date_to=date(2024, 9, 1),
                   totals={key: [Decimal(1), Decimal(1)]})
    with pytest.raises(ProviderError, match="more than a cost record holds"):
        replace_window(provider=provider, date_from=date(2024, 9, 1), date_to=date(2024, 9, 1),
                       totals={key: [Decimal("2E18"), Decimal(1)]})
    # Nothing of the refused window was written: the day keeps its earlier total.
    assert CostRecord.objects.get(provider=provider).billed_amount == Decimal(1)


def test_a_large_write_refreshes_the_planner_statistics(org, monkeypatch):
    from django.db import connection

    monkeypatch.setattr(sync, "ANALYZE_AFTER_ROWS", 3)

    def planner_rows() -> float:
        """What the planner believes the table holds (ANALYZE sets it, in this transaction)."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
                           [CostRecord._meta.db_table])
            return cursor.fetchone()[0]

    provider = ProviderFactory(organization=org)
    totals = {(date(2024, 9, day), "EC2", "global", "", "USD"): [Decimal(day), Decimal(day)]
              for day in range(1, 3)}
    replace_window(provider=provider, date_from=date(2024, 9, 1), date_to=date(2024, 9, 2),
                   totals=totals)  # 2 rows: under the threshold
    totals[(date(2024, 9, 3), "EC2", "global", "", "USD")] = [Decimal(3), Decimal(3)]
    replace_window(provider=provider, date_from=date(2024, 9, 1), date_to=date(2024, 9, 3),
                   totals=totals)  # 1 row: under it
    assert planner_rows() != 3  # not analyzed, though the table now holds 3 records
    replace_window(provider=provider, date_from=date(2024, 9, 1), date_to=date(2024, 9, 3),
                   totals={key: [v[0] + 1, v[1]] for key, v in totals.items()})  # 3 deleted, 3 in
    assert planner_rows() == 3


def test_sync_takes_the_provider_row_lock(root, provider):
    write(root / "export" / "a.csv", [("2024-09-01", "1", "EC2")])
    with mock.patch.object(sync.Provider.objects, "select_for_update",
                           wraps=sync.Provider.objects.select_for_update) as locking:
        cost_records_sync(provider=provider)
    locking.assert_called_once()


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"reference data absent: {SAMPLE} (../shared/data)")
def test_sync_focus_sample_matches_the_trend_to_the_cent(api, org, settings, tmp_path):
    daily: dict[date, Decimal] = defaultdict(Decimal)
    with SAMPLE.open(newline="") as handle:
        for item in csv.DictReader(handle):
            daily[date.fromisoformat(item["ChargePeriodStart"][:10])] += Decimal(item["BilledCost"])
    settings.IMPORT_ROOT = tmp_path  # the organization's folder is the sample's
    (tmp_path / org.slug).symlink_to(SAMPLE.parent, target_is_directory=True)
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": SAMPLE.name})

    outcome = cost_records_sync(provider=provider)
    assert outcome.rows_read == 1000
    assert (outcome.date_from, outcome.date_to) == (min(daily), max(daily))

    today = max(daily)
    days = (today - min(daily)).days + 1
    with mock.patch("costs.selectors.utc_today", return_value=today):
        response = api.get(f"/api/v1/costs/trend?days={days}&granularity=day")
    assert response.status_code == 200
    trend = {item["date"]: Decimal(str(item["amount"])) for item in response.json()["data"]}
    expected = {day.isoformat(): total.quantize(Decimal("0.01"), ROUND_HALF_UP) for day, total in daily.items()}
    assert len(trend) == days
    assert {day: amount for day, amount in trend.items() if day in expected} == expected
    assert all(amount == 0 for day, amount in trend.items() if day not in expected)


def test_sync_rerun_with_large_amounts_is_unchanged(write_path, root, provider):
    # SQLite keeps 15 significant digits: the fallback must not see a change every time.
    write(root / "export" / "a.csv", [("2024-09-01", "123456789012.123456789", "EC2")])
    assert cost_records_sync(provider=provider).changed is True
    assert cost_records_sync(provider=provider).changed is False
    provider.refresh_from_db()
    assert provider.data_version == 1


def test_sync_sums_api_rows_without_rounding_them_first(write_path, provider):
    # Azure's actual and amortized rows of one key are added together: in Python's default
    # 28-digit context 12345678901234567.123456789012 twice came out ...134.24691357802.
    big = Decimal("12345678901234567.123456789012")
    twice = Decimal("24691357802469134.246913578024")
    rows = [CostRow(date(2024, 9, 1), "VMs", "eastus", "", big, big, "USD")] * 2
    totals = sync.aggregate_rows(rows)
    assert totals[(date(2024, 9, 1), "VMs", "eastus", "", "USD", date(2024, 9, 1))] == [
        twice, twice]
    replace_window(provider=provider, date_from=date(2024, 9, 1), date_to=date(2024, 9, 1),
                   totals=totals)
    assert CostRecord.objects.get(provider=provider).billed_amount == twice
