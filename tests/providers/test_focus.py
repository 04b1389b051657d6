"""The FOCUS adapter reading files the tests write: CSV, CSV.gz, Parquet, folders, S3
(moto), uploads; parsing quirks; errors naming file, column and row; path confinement to
the organization's import folder (more in test_import_folders)."""

from __future__ import annotations

import csv
import gzip
import json
import os
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from providers.adapters.base import (
    CostRow,
    DailyTotalsAdapter,
    FetchStats,
    ProviderError,
    ProviderSnapshot,
    ProviderThrottled,
)
from providers.adapters.focus import FocusAdapter

# The organization of every provider here: local paths are read below IMPORT_ROOT/acme.
ORG_SLUG = "acme"

HEADER = [
    "BilledCost", "BillingCurrency", "ChargeCategory", "ChargeFrequency", "ChargePeriodEnd",
    "ChargePeriodStart", "EffectiveCost", "ProviderName", "RegionId", "ServiceName",
    "SubAccountId",
]
KEYS = {"aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "secret"}


def row(start="2024-09-01 00:00:00", billed="1.00", service="EC2", region="us-east-1",
        account="111", currency="USD", effective=None, **extra) -> dict:
    return {
        "BilledCost": billed, "BillingCurrency": currency, "ChargeCategory": "Usage",
        "ChargeFrequency": "Usage-Based", "ChargePeriodEnd": start,
        "ChargePeriodStart": start, "EffectiveCost": billed if effective is None else effective,
        "ProviderName": "AWS", "RegionId": region, "ServiceName": service,
        "SubAccountId": account, **extra,
    }


def write_csv(path: Path, rows: list[dict], header: list[str] | None = None) -> Path:
    header = header or list(dict.fromkeys(key for item in rows for key in item)) or HEADER
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def adapter(uri: str = "", *, credentials=None, ambient=False, region="eu-west-1") -> FocusAdapter:
    """An adapter of a provider of organization ``acme``, its config as given, unvalidated."""
    return FocusAdapter(ProviderSnapshot(
        id=1, name="FOCUS", kind="focus", config={"uri": uri, "region": region},
        credentials=credentials or {}, allow_ambient_credentials=ambient,
        organization_slug=ORG_SLUG,
    ))


def read(uri: str, **kwargs) -> tuple[dict, FetchStats]:
    """{(day, service, region, account, currency): (billed, effective)} and the stats."""
    stats = FetchStats()
    table = adapter(uri, **kwargs).fetch_daily(start=date(2024, 1, 1), end=date(2024, 1, 1),
                                               stats=stats)
    totals = {}
    for item in table.to_pylist():
        key = (item["day"], item["service"], item["region"], item["account"], item["currency"])
        assert key not in totals
        totals[key] = (item["billed"], item["effective"])
    return totals, stats


@pytest.fixture
def root(settings, tmp_path):
    """The import folder of ``acme``, IMPORT_ROOT/acme: what its providers may read."""
    settings.IMPORT_ROOT = tmp_path / "imports"
    root = tmp_path / "imports" / ORG_SLUG
    root.mkdir(parents=True)
    return root


def test_focus_adapter_is_a_daily_totals_adapter():
    assert isinstance(adapter(), DailyTotalsAdapter)


def test_focus_hourly_rows_sum_to_utc_days(root):
    rows = [row(f"2024-09-01T{hour:02d}:00:00Z", "0.5") for hour in range(24)]
    rows += [row("2024-09-02T00:00:00Z", "2.25", effective="2.00")]
    write_csv(root / "hourly.csv", rows)
    totals, stats = read(str(root / "hourly.csv"))
    assert totals == {
        (date(2024, 9, 1), "EC2", "us-east-1", "111", "USD"): (Decimal("12"), Decimal("12")),
        (date(2024, 9, 2), "EC2", "us-east-1", "111", "USD"): (Decimal("2.25"), Decimal("2")),
    }
    assert (stats.rows_read, stats.date_from, stats.date_to) == (25, date(2024, 9, 1),
                                                                 date(2024, 9, 2))


def test_focus_explicit_offsets_move_to_the_utc_day(root):
    write_csv(root / "tz.csv", [
        row("2024-09-02T01:00:00+02:00", "1"),  # 2024-09-01 23:00 UTC
        row("2024-09-01T22:30:00-0330", "2"),  # 2024-09-02 02:00 UTC
        row("2024-09-01T12:00:00.000Z", "4"),
        row("2024-09-01", "8"),
    ])
    totals, _ = read(str(root / "tz.csv"))
    by_day = {key[0]: value[0] for key, value in totals.items()}
    assert by_day == {date(2024, 9, 1): Decimal("13"), date(2024, 9, 2): Decimal("2")}


def test_focus_null_literal_and_empty_values(root):
    write_csv(root / "nulls.csv", [
        row(region="NULL", account="NULL"),
        row(region="", account="", billed="2"),
        row(region="null", account=" 222 ", billed="3", currency="usd"),
    ])
    totals, _ = read(str(root / "nulls.csv"))
    assert totals == {
        (date(2024, 9, 1), "EC2", "global", "", "USD"): (Decimal("3"), Decimal("3")),
        (date(2024, 9, 1), "EC2", "global", "222", "USD"): (Decimal("3"), Decimal("3")),
    }


def test_focus_enum_case_drift_extra_columns_and_column_order(root):
    header = ["x_Discount", "Id", *reversed(HEADER), "Tags"]
    write_csv(root / "drift.csv", [
        row(ChargeFrequency="Usage-based", ChargeCategory="usage", Id="1", x_Discount="n/a"),
        row(ChargeFrequency="USAGE-BASED", Tags='{"a": "b, c"}', billed="-0.5"),
    ], header=header)
    totals, _ = read(str(root / "drift.csv"))
    assert totals == {
        (date(2024, 9, 1), "EC2", "us-east-1", "111", "USD"): (Decimal("0.5"), Decimal("0.5")),
    }


def test_focus_header_names_match_ignoring_case_and_bom(root):
    path = root / "bom.csv"
    path.write_bytes(
        "\ufeffbilledcost,billingcurrency,chargeperiodstart,effectivecost,servicename\n"
        "1.5,USD,2024-09-01 00:00:00,1.25,S3\n".encode()
    )
    totals, _ = read(str(path))
    assert totals == {
        (date(2024, 9, 1), "S3", "global", "", "USD"): (Decimal("1.5"), Decimal("1.25")),
    }


def test_focus_amounts_stay_exact_decimals(root):
    tiny = "0.0000000001"
    write_csv(root / "tiny.csv", [row(billed=tiny, effective="0.00000000007") for _ in range(3)]
              + [row(billed="12345678901234.1234567891", effective="1E-10")])
    totals, _ = read(str(root / "tiny.csv"))
    billed, effective = totals[(date(2024, 9, 1), "EC2", "us-east-1", "111", "USD")]
    assert billed == Decimal("12345678901234.1234567894")
    assert effective == Decimal("0.00000000031")


def test_focus_gzip_file_and_currency_kept_apart(root):
    write_csv(root / "export.csv.gz", [
        row(billed="1.1"), row(billed="2.2", currency="EUR"), row(billed="3.3"),
    ])
    totals, stats = read(str(root / "export.csv.gz"))
    assert totals == {
        (date(2024, 9, 1), "EC2", "us-east-1", "111", "USD"): (Decimal("4.4"), Decimal("4.4")),
        (date(2024, 9, 1), "EC2", "us-east-1", "111", "EUR"): (Decimal("2.2"), Decimal("2.2")),
    }
    assert stats.rows_read == 3


def _parquet_typed(path: Path) -> Path:
    """Typed columns as AWS Data Exports write them: UTC timestamps, decimal amounts."""
    table = pa.table({
        "ChargePeriodStart": pa.array(
            [datetime(2024, 9, 1, 23, tzinfo=UTC), datetime(2024, 9, 2, 1, tzinfo=UTC),
             datetime(2024, 9, 2, 2, tzinfo=UTC)],
            pa.timestamp("ms", tz="UTC"),
        ),
        "BilledCost": pa.array([Decimal("0.0000000012"), Decimal("1.5"), Decimal("2")],
                               pa.decimal128(20, 10)),
        "EffectiveCost": pa.array([Decimal("0.0000000012"), Decimal("1"), Decimal("2")],
                                  pa.decimal128(20, 10)),
        "BillingCurrency": ["USD", "USD", "USD"],
        "ServiceName": ["EC2", "EC2", "S3"],
        "RegionId": ["us-east-1", "us-east-1", None],
        "SubAccountId": [None, None, "222"],
        "ChargeFrequency": ["Usage-based", "Usage-Based", "Recurring"],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=2)
    return path


def test_focus_parquet_typed_columns(root):
    _parquet_typed(root / "part-0.parquet")
    totals, stats = read(str(root / "part-0.parquet"))
    assert totals == {
        (date(2024, 9, 1), "EC2", "us-east-1", "", "USD"):
            (Decimal("0.0000000012"), Decimal("0.0000000012")),
        (date(2024, 9, 2), "EC2", "us-east-1", "", "USD"): (Decimal("1.5"), Decimal("1")),
        (date(2024, 9, 2), "S3", "global", "222", "USD"): (Decimal("2"), Decimal("2")),
    }
    assert stats.rows_read == 3


def test_focus_parquet_text_and_float_columns(root):
    pq.write_table(pa.table({
        "ChargePeriodStart": ["2024-09-01T00:00:00Z", "2024-09-01T05:00:00Z"],
        "BilledCost": [0.1, 0.2],  # floats: read through their shortest text, 0.1 stays 0.1
        "EffectiveCost": ["0.1", "NULL "],
        "BillingCurrency": ["USD", "USD"],
        "ServiceName": ["EC2", "EC2"],
    }), root / "floats.parquet")
    with pytest.raises(ProviderError) as info:
        read(str(root / "floats.parquet"))
    assert str(info.value).startswith("floats.parquet: column EffectiveCost, data row 2:")
    pq.write_table(pa.table({
        "ChargePeriodStart": ["2024-09-01T00:00:00Z", "2024-09-01T05:00:00Z"],
        "BilledCost": [0.1, 0.2],
        "EffectiveCost": ["0.1", "0.3"],
        "BillingCurrency": ["USD", "USD"],
        "ServiceName": ["EC2", "EC2"],
    }), root / "floats.parquet")
    totals, _ = read(str(root / "floats.parquet"))
    assert totals == {(date(2024, 9, 1), "EC2", "global", "", "USD"):
                      (Decimal("0.3"), Decimal("0.4"))}


def test_focus_folder_reads_every_file_and_skips_other_files(root):
    folder = root / "exports"
    write_csv(folder / "2024-09" / "a.csv", [row("2024-09-03 00:00:00", "1")])
    write_csv(folder / "2024-09" / "b.csv.gz", [row("2024-09-03 05:00:00", "2")])
    _parquet_typed(folder / "2024-10" / "part-0.snappy.parquet")
    (folder / "manifest.json").write_text("{}")
    (folder / ".hidden.csv").write_text("garbage")
    totals, stats = read(str(folder))
    assert totals[(date(2024, 9, 3), "EC2", "us-east-1", "111", "USD")] == (Decimal("3"),
                                                                             Decimal("3"))
    assert len(totals) == 4
    assert (stats.rows_read, stats.date_from, stats.date_to) == (5, date(2024, 9, 1),
                                                                date(2024, 9, 3))


def test_focus_relative_uri_is_inside_the_organizations_folder(root):
    write_csv(root / "team" / "a.csv", [row()])
    totals, _ = read("team")
    assert len(totals) == 1


def test_focus_empty_folder_and_missing_uri_fail_clearly(root):
    (root / "empty").mkdir()
    with pytest.raises(ProviderError, match="no FOCUS files"):
        read(str(root / "empty"))
    with pytest.raises(ProviderError, match="does not exist"):
        read(str(root / "nowhere"))
    with pytest.raises(ProviderError, match=r"no config\.uri"):
        read("")


def test_focus_header_only_file_reads_nothing(root):
    write_csv(root / "empty.csv", [], header=HEADER)
    totals, stats = read(str(root / "empty.csv"))
    assert totals == {}
    assert (stats.rows_read, stats.date_from) == (0, None)


def test_focus_missing_required_column_names_file_and_column(root):
    header = [name for name in HEADER if name != "EffectiveCost"]
    write_csv(root / "sub" / "no-effective.csv", [row()], header=header)
    with pytest.raises(ProviderError) as info:
        read(str(root / "sub"))
    message = str(info.value)
    assert "sub/no-effective.csv" in message
    assert "missing required FOCUS column EffectiveCost" in message


@pytest.mark.parametrize(
    ("field", "value", "column", "problem"),
    [
        ("billed", "12,5", "BilledCost", "'12,5' is not a decimal amount"),
        ("billed", "NULL", "BilledCost", "empty is not a decimal amount"),
        ("effective", "abc", "EffectiveCost", "'abc' is not a decimal amount"),
        ("start", "2024-13-01 00:00:00", "ChargePeriodStart", "is not a date/time"),
        ("start", "01/09/2024", "ChargePeriodStart", "is not a date/time"),
        ("start", "NULL", "ChargePeriodStart", "empty is not a date/time"),
        ("start", "0001-01-01 00:00:00", "ChargePeriodStart", "is outside the days a bill can cover"),
        ("start", "1999-12-31T23:00:00Z", "ChargePeriodStart", "is outside the days a bill can cover"),
        ("start", "9999-12-31", "ChargePeriodStart", "is outside the days a bill can cover (2000-01-01 to"),
        # The offset moves it into the year 10000, which no Python date holds.
        ("start", "9999-12-31T20:00:00-05:00", "ChargePeriodStart", "is outside the days"),
        ("start", "0001-01-01T00:00:00+05:00", "ChargePeriodStart", "is outside the days"),
        ("billed", "10000000000000000", "BilledCost", "is larger than any bill line"),
        ("effective", "-1e17", "EffectiveCost", "is larger than any bill line"),
        ("currency", "US Dollar", "BillingCurrency", "is not a 3-letter currency code"),
        ("service", "x" * 201, "ServiceName", "is longer than 200 characters"),
    ],
)
def test_focus_unparseable_value_names_file_column_and_row(root, field, value, column, problem):
    rows = [row(), row(), row(), row()]
    rows[2] = row(**{field: value})
    write_csv(root / "bad.csv", rows)
    with pytest.raises(ProviderError) as info:
        read(str(root / "bad.csv"))
    message = str(info.value)
    assert message.startswith(f"bad.csv: column {column}, data row 3: value ")
    assert problem in message


def test_focus_truncated_gzip_is_a_clean_error(root):
    whole = write_csv(root / "whole.csv.gz", [row() for _ in range(2000)])
    (root / "cut.csv.gz").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ProviderError, match=r"^cut.csv.gz: cannot be read"):
        read(str(root / "cut.csv.gz"))


def test_focus_bad_value_in_gzip_names_the_row(root):
    write_csv(root / "bad.csv.gz", [row() for _ in range(1000)] + [row(billed="1.2.3")])
    with pytest.raises(ProviderError, match=r"bad.csv.gz: column BilledCost, data row 1001:"):
        read(str(root / "bad.csv.gz"))


@pytest.mark.parametrize(
    ("tail", "problem"),
    [
        (b'1,USD,Usage,Usage-Based,x,2024-09-01,"1,AWS,r,EC2,111\n', "line 4: unexpected end of data"),
        (b"1,USD,Usage,Usage-Based,x,2024-09-01,1,AWS,\xff\xfe,EC2,111\n", "not UTF-8"),
    ],
)
def test_focus_malformed_csv_names_the_line(root, tail, problem):
    path = write_csv(root / "broken.csv", [row(), row()], header=HEADER)
    with path.open("ab") as handle:
        handle.write(tail)
    with pytest.raises(ProviderError) as info:
        read(str(path))
    message = str(info.value)
    assert message.startswith("broken.csv: cannot be read as FOCUS CSV (")
    assert problem in message


def test_focus_extra_trailing_field_shifting_values_is_caught_by_the_checks(root):
    path = write_csv(root / "shifted.csv", [row(), row()], header=HEADER)
    with path.open("a") as handle:  # an unquoted comma inside the amount
        handle.write("1,5,USD,Usage,Usage-Based,x,2024-09-01,1,AWS,r,EC2,111\n")
    with pytest.raises(ProviderError, match=r"shifted\.csv: column ChargePeriodStart, data row 3"):
        read(str(path))


def test_focus_path_with_dotdot_is_refused(root):
    write_csv(root.parent / "outside.csv", [row()])
    with pytest.raises(ProviderError, match=r"must not contain '\.\.'"):
        read(str(root / ".." / "outside.csv"))
    with pytest.raises(ProviderError, match=r"must not contain '\.\.'"):
        read("../outside.csv")


def test_focus_absolute_path_elsewhere_is_refused(root, tmp_path):
    outside = write_csv(tmp_path / "elsewhere" / "a.csv", [row()])
    inside_folder = f"must be inside this organization's import folder {root}"
    with pytest.raises(ProviderError, match=inside_folder):
        read(str(outside))
    with pytest.raises(ProviderError, match=inside_folder):
        read("/etc/passwd")


def test_focus_symlink_out_of_the_folder_is_refused_at_read_time(root, tmp_path):
    outside = write_csv(tmp_path / "secret" / "a.csv", [row()])
    folder = root / "exports"
    write_csv(folder / "ok.csv", [row()])
    assert len(read(str(folder))[0]) == 1  # valid when configured...
    (folder / "link.csv").symlink_to(outside)  # ...then a link out is planted inside
    with pytest.raises(ProviderError, match="must be inside this organization's import folder"):
        read(str(folder))
    (root / "linked").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(ProviderError, match="must be inside this organization's import folder"):
        read(str(root / "linked"))


def test_focus_fetch_file_reads_an_upload_anywhere(tmp_path):
    upload = write_csv(tmp_path / "uploads" / "8f3a", [row(billed="1"), row(billed="2")])
    stats = FetchStats()
    rows = list(adapter().fetch_file(str(upload), stats=stats))
    assert rows == [CostRow(date(2024, 9, 1), "EC2", "us-east-1", "111", Decimal(3),
                            Decimal(3), "USD", billing_period=date(2024, 9, 1))]
    assert stats.rows_read == 2
    with pytest.raises(ProviderError, match="missing or not a regular file"):
        list(adapter().fetch_file(str(tmp_path / "uploads" / "gone"), stats=FetchStats()))


def test_focus_fetch_yields_cost_rows(root):
    write_csv(root / "a.csv", [row(billed="1"), row(billed="2", service="S3")])
    rows = list(adapter(str(root / "a.csv")).fetch(start=date(2024, 1, 1), end=date(2024, 1, 2),
                                                   stats=FetchStats()))
    assert sorted(r.service for r in rows) == ["EC2", "S3"]


# -- S3 -----------------------------------------------------------------------------
@pytest.fixture
def bucket():
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1", **KEYS)
        client.create_bucket(Bucket="billing-exports",
                             CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def _put_csv(client, key: str, rows: list[dict], tmp_path: Path) -> None:
    local = write_csv(tmp_path / "s3-src" / key.replace("/", "_"), rows)
    client.upload_file(str(local), "billing-exports", key)


def test_focus_s3_prefix_reads_every_file(bucket, tmp_path):
    _put_csv(bucket, "focus/data/BILLING_PERIOD=2024-09/part-1.csv", [row(billed="1")], tmp_path)
    _put_csv(bucket, "focus/data/BILLING_PERIOD=2024-09/part-2.csv.gz",
             [row("2024-09-02T03:00:00Z", "2")], tmp_path)
    bucket.upload_file(str(_parquet_typed(tmp_path / "p.parquet")), "billing-exports",
                       "focus/data/BILLING_PERIOD=2024-09/part-3.snappy.parquet")
    bucket.put_object(Bucket="billing-exports", Key="focus/metadata/manifest.json", Body=b"{}")
    _put_csv(bucket, "other/ignored.csv", [row(billed="100")], tmp_path)
    totals, stats = read("s3://billing-exports/focus/", credentials=KEYS)
    assert stats.rows_read == 5
    assert totals[(date(2024, 9, 1), "EC2", "us-east-1", "111", "USD")] == (Decimal(1),
                                                                             Decimal(1))
    assert totals[(date(2024, 9, 2), "EC2", "us-east-1", "111", "USD")] == (Decimal(2),
                                                                             Decimal(2))
    assert sum(billed for billed, _ in totals.values()) == Decimal("6.5000000012")


def test_focus_s3_single_object_and_error_names_the_object(bucket, tmp_path):
    _put_csv(bucket, "focus/one.csv", [row(), row(billed="x")], tmp_path)
    with pytest.raises(ProviderError) as info:
        read("s3://billing-exports/focus/one.csv", credentials=KEYS)
    assert str(info.value).startswith(
        "s3://billing-exports/focus/one.csv: column BilledCost, data row 2:"
    )


def test_focus_s3_needs_the_providers_credentials(bucket, settings):
    with pytest.raises(ProviderError, match="needs credentials"):
        read("s3://billing-exports/focus/")
    # With ambient credentials allowed, the server's identity (here moto's env) is used.
    with pytest.raises(ProviderError, match="no FOCUS files"):
        read("s3://billing-exports/focus/", ambient=True)


def test_focus_s3_missing_bucket_and_throttling_are_translated(bucket, monkeypatch):
    with pytest.raises(ProviderError, match="does not exist"):
        read("s3://no-such-bucket/focus/", credentials=KEYS)
    from botocore.exceptions import ClientError

    def slow_down(*args, **kwargs):
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "x"}}, "ListObjectsV2")

    import providers.adapters.focus as focus

    monkeypatch.setattr(focus, "_s3_client", lambda provider: _Paginating(slow_down))
    with pytest.raises(ProviderThrottled):
        read("s3://billing-exports/focus/", credentials=KEYS)


class _Paginating:
    def __init__(self, fail):
        self.fail = fail

    def get_paginator(self, name):
        return self

    def paginate(self, **kwargs):
        self.fail()


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("zero.csv", b"", "zero.csv: cannot be read: empty CSV"),
    ("broken.parquet", b"PAR1 not really", "broken.parquet: cannot be read: parquet"),
])
def test_focus_empty_or_corrupt_file_fails_clearly(root, name, content, problem):
    (root / name).write_bytes(content)
    with pytest.raises(ProviderError) as info:
        read(str(root / name))
    assert str(info.value).startswith(problem)


# -- latest delivery of each billing period (re-delivered periods are not summed twice) --
NOW = 1_727_000_000  # a fixed POSIX time; deliveries are dated relative to it
EXPORT = "focus-export"


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({key: [item[key] for item in rows] for key in HEADER}), path)
    return path


def dated(folder: Path, seconds: int) -> None:
    """Set the mtime of every file under ``folder`` (deliveries are told apart by it)."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_file():
            os.utime(path, (NOW + seconds, NOW + seconds))


def write_json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def aws_manifest(period: str, *files: str, bucket: str = "billing-exports") -> dict:
    """An AWS Data Exports manifest: ``dataFiles`` are S3 URIs of the original bucket."""
    return {
        "exportArn": "arn:aws:bcm-data-exports:us-east-1:111:export/x",
        "exportName": EXPORT,
        "billingPeriod": {"start": f"{period}-01T00:00:00Z"},
        "dataFiles": [f"s3://{bucket}/cur/{EXPORT}/data/BILLING_PERIOD={period}/{name}"
                      for name in files],
        "additionalOutputFiles": [],
    }


def azure_manifest(prefix: str, run: str, parts: list[str], submitted: str | None) -> dict:
    content = {
        "manifestVersion": "2024-04-01",
        "exportConfig": {"exportName": "focus-daily", "type": "FocusCost", "dataVersion": "1.0"},
        "blobs": [{"blobName": f"{prefix}/{run}/{part}", "dataRowCount": 1} for part in parts],
    }
    if submitted:
        content["runInfo"] = {"runId": run, "submittedTime": submitted}
    return content


def by_day(totals: dict) -> dict:
    days: dict = {}
    for key, (billed, _effective) in totals.items():
        days[key[0]] = days.get(key[0], Decimal(0)) + billed
    return days


def test_focus_delivery_aws_manifest_reads_only_the_files_it_lists(root, caplog):
    export = root / "cur" / EXPORT
    period = export / "data" / "BILLING_PERIOD=2024-09"
    # First delivery: the whole month so far.
    write_parquet(period / "exec-1" / f"{EXPORT}-00001.snappy.parquet",
                  [row("2024-09-01T00:00:00Z", "10"), row("2024-09-02T00:00:00Z", "20")])
    # Re-delivery of the same period, in two parts; the manifest lists only these.
    write_parquet(period / "exec-2" / f"{EXPORT}-00001.snappy.parquet",
                  [row("2024-09-01T00:00:00Z", "11.5")])
    write_csv(period / "exec-2" / f"{EXPORT}-00002.csv.gz", [row("2024-09-02T03:00:00Z", "21.25")])
    dated(period / "exec-2", 0)
    dated(period / "exec-1", 3600)  # the old folder touched later: the manifest still decides
    write_json(export / "metadata" / "BILLING_PERIOD=2024-09" / f"{EXPORT}-Manifest.json",
               aws_manifest("2024-09", f"exec-2/{EXPORT}-00001.snappy.parquet",
                            f"exec-2/{EXPORT}-00002.csv.gz"))
    # Another period with one delivery and no manifest: read as it is.
    write_csv(export / "data" / "BILLING_PERIOD=2024-08" / "exec-0" / "a.csv",
              [row("2024-08-31T00:00:00Z", "5")])
    caplog.set_level("INFO", logger="providers.adapters.focus_discovery")

    totals, stats = read(str(root / "cur"))

    assert by_day(totals) == {date(2024, 8, 31): Decimal("5"), date(2024, 9, 1): Decimal("11.5"),
                              date(2024, 9, 2): Decimal("21.25")}
    assert (stats.rows_read, stats.date_from, stats.date_to) == (3, date(2024, 8, 31),
                                                                date(2024, 9, 2))
    assert "skipped 1 other file(s) in cur/focus-export/data/BILLING_PERIOD=2024-09/exec-1" in (
        caplog.text)


def test_focus_delivery_aws_manifest_listing_a_missing_file_fails(root):
    export = root / "cur" / EXPORT
    write_csv(export / "data" / "BILLING_PERIOD=2024-09" / "exec-1" / "a.csv", [row()])
    write_json(export / "metadata" / "BILLING_PERIOD=2024-09" / f"{EXPORT}-Manifest.json",
               aws_manifest("2024-09", "exec-2/b.csv"))
    with pytest.raises(ProviderError, match=r"lists 1 data file\(s\) that are not there"):
        read(str(export))
    (export / "metadata" / "BILLING_PERIOD=2024-09" / f"{EXPORT}-Manifest.json").write_text("{")
    with pytest.raises(ProviderError, match="manifest is not valid JSON"):
        read(str(export))


def test_focus_delivery_aws_without_manifest_reads_the_newest_execution_folder(root, caplog):
    period = root / "cur" / EXPORT / "data" / "BILLING_PERIOD=2024-09"
    # The older delivery holds a day the newer one dropped, and a file that would not even
    # parse: it must be neither counted nor opened.
    write_csv(period / "run-b" / f"{EXPORT}-00001.csv.gz",
              [row("2024-09-01T00:00:00Z", "100"), row("2024-09-30T00:00:00Z", "100")])
    (period / "run-b" / f"{EXPORT}-00002.csv").write_text("not,a\nfocus,file,at all\n")
    write_csv(period / "run-a" / f"{EXPORT}-00001.csv.gz", [row("2024-09-01T00:00:00Z", "1.01")])
    write_csv(period / "run-a" / f"{EXPORT}-00002.csv.gz", [row("2024-09-02T00:00:00Z", "2.02")])
    dated(period / "run-b", 0)
    dated(period / "run-a", 60)  # newer by mtime, though its name sorts first
    caplog.set_level("INFO", logger="providers.adapters.focus_discovery")

    totals, stats = read(str(root / "cur"))

    assert by_day(totals) == {date(2024, 9, 1): Decimal("1.01"), date(2024, 9, 2): Decimal("2.02")}
    assert (stats.rows_read, stats.date_from, stats.date_to) == (2, date(2024, 9, 1),
                                                                date(2024, 9, 2))
    assert "read the newest delivery run-a" in caplog.text
    assert "skipped 2 other file(s) in cur/focus-export/data/BILLING_PERIOD=2024-09/run-b" in (
        caplog.text)


def test_focus_delivery_direct_files_compete_with_subfolders(root):
    period = root / "exports" / "BILLING_PERIOD=2024-09"
    write_csv(period / "part-1.csv", [row(billed="3")])  # an old overwrite-mode delivery
    write_csv(period / "2024-10-02T00:00:00.000Z-abc" / "part-1.csv", [row(billed="4")])
    dated(period, 0)
    dated(period / "2024-10-02T00:00:00.000Z-abc", 10)
    assert by_day(read(str(root / "exports"))[0]) == {date(2024, 9, 1): Decimal("4")}
    os.utime(period / "part-1.csv", (NOW + 20, NOW + 20))  # now the direct file is the newest
    assert by_day(read(str(root / "exports"))[0]) == {date(2024, 9, 1): Decimal("3")}


def test_focus_delivery_azure_runs_read_only_the_newest_manifest(root, caplog):
    prefix = "costs/focus-daily/20240901-20240930"
    period = root / prefix
    old, new, unfinished = ("0b7c8b3e-0000-0000-0000-000000000001",
                            "9f1d2c4a-0000-0000-0000-000000000002",
                            "ffffffff-0000-0000-0000-000000000003")
    write_parquet(period / old / "part_0_0001.parquet",
                  [row("2024-09-01T00:00:00Z", "50"), row("2024-09-02T00:00:00Z", "50")])
    write_json(period / old / "manifest.json",
               azure_manifest(prefix, old, ["part_0_0001.parquet"], "2024-10-01T06:00:00.1234567Z"))
    write_csv(period / new / "part_0_0001.csv.gz", [row("2024-09-01T00:00:00Z", "0.0000000001")])
    write_csv(period / new / "part_1_0001.csv.gz", [row("2024-09-02T00:00:00Z", "-2.5"),
                                                   row("2024-09-03T00:00:00Z", "7")])
    write_csv(period / new / "stray-not-listed.csv", [row(billed="999")])
    write_json(period / new / "manifest.json",
               azure_manifest(prefix, new, ["part_0_0001.csv.gz", "part_1_0001.csv.gz"],
                              "2024-10-02T06:00:00Z"))
    # A run still being written (no manifest yet) is newer by mtime but not a delivery.
    write_csv(period / unfinished / "part_0_0001.csv", [row(billed="1000")])
    dated(period / new, 0)
    dated(period / old, 100)  # the older run's manifest was touched later: its timestamp wins
    dated(period / unfinished, 200)
    caplog.set_level("INFO", logger="providers.adapters.focus_discovery")

    totals, stats = read(str(root / "costs"))

    assert by_day(totals) == {date(2024, 9, 1): Decimal("0.0000000001"),
                              date(2024, 9, 2): Decimal("-2.5"), date(2024, 9, 3): Decimal("7")}
    assert (stats.rows_read, stats.date_from, stats.date_to) == (3, date(2024, 9, 1),
                                                                date(2024, 9, 3))
    assert f"read run {new}" in caplog.text
    assert "skipped 3 other file(s)" in caplog.text


def test_focus_delivery_azure_manifest_without_timestamp_or_blobs_uses_mtime(root):
    period = root / "costs" / "20240901-20240930"
    for run, billed, seconds in (("run-1", "1", 50), ("run-2", "2", 0)):
        write_csv(period / run / "part_0_0001.csv", [row(billed=billed)])
        write_json(period / run / "manifest.json", {"exportConfig": {"type": "FocusCost"}})
        dated(period / run, seconds)
    assert by_day(read(str(root / "costs"))[0]) == {date(2024, 9, 1): Decimal("1")}


def test_focus_delivery_plain_folder_reads_every_file(root, caplog):
    folder = root / "uploads"
    write_csv(folder / "team-a" / "2024-09.csv", [row("2024-09-01T00:00:00Z", "1.1")])
    write_csv(folder / "team-a" / "2024-09-again.csv", [row("2024-09-01T00:00:00Z", "2.2")])
    write_csv(folder / "team-b" / "x" / "old.csv.gz", [row("2024-09-02T00:00:00Z", "3.3")])
    write_parquet(folder / "top.parquet", [row("2024-09-03T00:00:00Z", "4.4")])
    dated(folder / "team-b", 500)
    caplog.set_level("INFO", logger="providers.adapters.focus_discovery")

    totals, stats = read(str(folder))

    assert by_day(totals) == {date(2024, 9, 1): Decimal("3.3"), date(2024, 9, 2): Decimal("3.3"),
                              date(2024, 9, 3): Decimal("4.4")}
    assert stats.rows_read == 4
    assert "skipped" not in caplog.text


def test_focus_delivery_uri_inside_one_delivery_reads_it(root):
    period = root / "cur" / EXPORT / "data" / "BILLING_PERIOD=2024-09"
    write_csv(period / "exec-1" / "a.csv", [row(billed="1")])
    write_csv(period / "exec-2" / "a.csv", [row(billed="2")])
    dated(period / "exec-2", 10)
    assert by_day(read(str(period / "exec-1"))[0]) == {date(2024, 9, 1): Decimal("1")}


class _Recording:
    """The moto client, recording which objects are downloaded."""

    def __init__(self, client):
        self.client = client
        self.downloaded: list[str] = []

    def download_file(self, bucket, key, filename):
        self.downloaded.append(key)
        return self.client.download_file(bucket, key, filename)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_focus_delivery_s3_aws_and_azure_layouts(bucket, tmp_path, monkeypatch):
    import providers.adapters.focus as focus

    data = f"cur/{EXPORT}/data/BILLING_PERIOD=2024-09"
    _put_csv(bucket, f"{data}/20241001T000000Z-1/{EXPORT}-00001.csv.gz",
             [row("2024-09-01T00:00:00Z", "40")], tmp_path)
    _put_csv(bucket, f"{data}/20241002T000000Z-2/{EXPORT}-00001.csv.gz",
             [row("2024-09-01T00:00:00Z", "4.25")], tmp_path)
    bucket.put_object(
        Bucket="billing-exports", Key=f"cur/{EXPORT}/metadata/BILLING_PERIOD=2024-09/"
        f"{EXPORT}-Manifest.json",
        Body=json.dumps(aws_manifest("2024-09", f"20241002T000000Z-2/{EXPORT}-00001.csv.gz")),
    )
    azure = "cur/azure/focus-daily/20240801-20240831"
    for run, billed, submitted in (("run-new", "8.5", "2024-09-02T00:00:00Z"),
                                   ("run-old", "80", "2024-09-01T00:00:00Z")):
        _put_csv(bucket, f"{azure}/{run}/part_0_0001.csv", [row("2024-08-30T00:00:00Z", billed)],
                 tmp_path)
        bucket.put_object(Bucket="billing-exports", Key=f"{azure}/{run}/manifest.json",
                          Body=json.dumps(azure_manifest(azure, run, ["part_0_0001.csv"],
                                                         submitted)))
    recording = _Recording(focus._s3_client(adapter(credentials=KEYS).provider))
    monkeypatch.setattr(focus, "_s3_client", lambda provider: recording)

    totals, stats = read("s3://billing-exports/cur/", credentials=KEYS)

    assert by_day(totals) == {date(2024, 8, 30): Decimal("8.5"), date(2024, 9, 1): Decimal("4.25")}
    assert (stats.rows_read, stats.date_from, stats.date_to) == (2, date(2024, 8, 30),
                                                                date(2024, 9, 1))
    # Skipped deliveries are never downloaded.
    assert sorted(recording.downloaded) == [
        f"{azure}/run-new/part_0_0001.csv", f"{data}/20241002T000000Z-2/{EXPORT}-00001.csv.gz",
    ]


def test_focus_delivery_s3_without_manifest_reads_the_newest_folder(bucket, tmp_path):
    data = f"cur/{EXPORT}/data/BILLING_PERIOD=2024-09"
    _put_csv(bucket, f"{data}/2024-10-01T00:00:00.000Z-a/part.csv", [row(billed="1")], tmp_path)
    _put_csv(bucket, f"{data}/2024-10-02T00:00:00.000Z-b/part.csv", [row(billed="2")], tmp_path)
    totals, _ = read(f"s3://billing-exports/{data}/", credentials=KEYS)
    assert by_day(totals) == {date(2024, 9, 1): Decimal("2")}


def test_focus_delivery_broken_symlink_in_folder_fails_clearly(root):
    folder = root / "exports"
    write_csv(folder / "ok.csv", [row()])
    (folder / "gone.csv").symlink_to(folder / "nowhere.csv")
    with pytest.raises(ProviderError, match=r"exports/gone\.csv: cannot be read"):
        read(str(folder))


# -- limits checked before a file is parsed (decompression bombs) -----------------------
@pytest.mark.parametrize("name", ["export.csv", "export.csv.gz"])
def test_focus_line_longer_than_the_limit_is_refused_before_parsing(root, monkeypatch, name):
    # A 1 MB .csv.gz of one 1 GiB ServiceName took 7.5 GB of memory to parse before its
    # length check ran. The limit is small here; the lines are measured across chunks.
    from providers.adapters import focus

    monkeypatch.setattr(focus, "MAX_LINE_BYTES", 200)
    monkeypatch.setattr(focus, "_CHUNK", 64)
    fits = write_csv(root / "fits" / name, [row(), row(service="E" * 100)])
    assert read(str(fits.parent))[1].rows_read == 2
    write_csv(root / "long" / name, [row(), row(), row(service="S" * 300), row()])
    with pytest.raises(ProviderError, match=rf"{name}: line 4 is longer than 0 MiB"):
        read(str(root / "long"))


def test_focus_gzip_is_decompressed_by_streaming_up_to_the_text_limit(root, monkeypatch):
    from providers.adapters import focus

    write_csv(root / "big" / "export.csv.gz", [row()] * 50)
    monkeypatch.setattr(focus, "_CHUNK", 100)
    assert read(str(root / "big"))[1].rows_read == 50
    monkeypatch.setattr(focus, "MAX_TEXT_BYTES", 1000)
    with pytest.raises(ProviderError, match=r"export\.csv\.gz: holds more than 1000 bytes of text"):
        read(str(root / "big"))


def test_focus_parquet_row_group_larger_than_the_limit_is_refused(root, monkeypatch):
    # 689 KB of 20 million dictionary-encoded rows in one row group took 1.6 GB.
    from providers.adapters import focus

    table = pa.Table.from_pylist([row(billed=str(n)) for n in range(20)])
    folder = root / "parquet"
    folder.mkdir()
    pq.write_table(table, folder / "export.parquet", row_group_size=20)
    monkeypatch.setattr(focus, "MAX_ROW_GROUP_ROWS", 10)
    with pytest.raises(ProviderError, match="row group 1 holds 20 rows, more than the 10"):
        read(str(folder))
    pq.write_table(table, folder / "export.parquet", row_group_size=10)
    assert read(str(folder))[1].rows_read == 20
