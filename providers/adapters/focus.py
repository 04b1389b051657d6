"""FOCUS 1.0-1.2 exports (CSV, CSV.gz, Parquet) from S3, a local folder or an upload.

Where the files come from (``config.uri``):

* ``s3://bucket/prefix/`` (or one object): listed and downloaded with boto3, one file at a
  time into a temporary directory, with the provider's own access key pair; the server's
  ambient credentials only when ``INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS`` is on;
* a local file or folder (read recursively), which must resolve inside the import folder
  of the provider's organization, ``IMPORT_ROOT/<organization slug>/`` (the import root is
  shared by every organization; see ``providers.configs``). The check runs again at read
  time, against the provider's organization (not anything in its config), for the
  configured path and for every file found in a folder, so a path stored around
  the API, a symlink planted after the config was validated (or one inside the folder
  pointing elsewhere) is refused;
* an uploaded file the server stored (``fetch_file``).

Which files of a folder or prefix are read: only the latest delivery of each billing period
(an export that keeps earlier runs next to the new one would otherwise be summed twice):
AWS Data Exports manifests (``metadata/BILLING_PERIOD=YYYY-MM/*-Manifest.json``) and Azure
run manifests (``YYYYMMDD-YYYYMMDD/<run>/manifest.json``) are followed; without one, the
newest sub-folder of a period folder wins; files under no period folder are all read. The
rule, its sources and its limits are in ``focus_discovery``; what was skipped is logged.

How a file is read: one streaming polars query per file (``scan_csv``/``scan_parquet``,
streaming engine) that keeps only the seven columns we use, parses them vectorised and
sums them per (UTC day, service, region, account, currency) on the fly. Memory is bound by
the number of distinct daily keys, not by the rows; amounts are ``Decimal(38, 18)`` from
the text up (never a float), so 10+ decimal places survive. The per-file sums are merged
into one Arrow table, which the sync service writes (``fetch_daily`` / ``fetch_file_daily``,
see ``DailyTotalsAdapter`` in ``base``).

Validation: the query also counts rows whose values do not parse. Only when that count is
not zero is the file scanned a second time, with row numbers, to name the first bad row,
so the fast path pays nothing for the good message. Any error raises ``ProviderError``
before anything is written.

Mapping: billed = ``BilledCost``, effective = ``EffectiveCost``, day = UTC date of
``ChargePeriodStart`` (an explicit offset is honoured), billing period = the date of
``BillingPeriodStart`` as written (the invoice's own calendar; absent or null: the day's
month), service = ``ServiceName`` (null →
``Unknown``), region = ``RegionId`` (null/empty → ``global``), account = ``SubAccountId``
(null → ""), currency = ``BillingCurrency`` (upper-cased; must be 3 letters). The literal
``NULL`` (any case) and empty strings are nulls; enum columns and extra columns are not
read, so their case drift or presence changes nothing.

What an import replaces: the records of the billing periods it delivers (``stats.
billing_periods``), whatever their days. A period's export may hold days of another
period: a ``Correction`` of October in November's export, or an export in local time whose
last hours are the next period's first UTC day. Those rows are records of their own
period, so re-importing October leaves November's correction of it in place, and a
folder of January and March leaves an uploaded February alone. The days marked as synced
are each period's own days in the data.
"""

from __future__ import annotations

import csv
import gzip
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from providers.adapters import focus_discovery as discovery
from providers.adapters.base import (
    EARLIEST_DAY,
    GLOBAL_REGION,
    UPLOAD_NAME_SEPARATOR,
    CostRow,
    FetchStats,
    PeriodDelivered,
    ProviderError,
    ProviderSnapshot,
    ProviderThrottled,
)

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("ChargePeriodStart", "BilledCost", "EffectiveCost", "BillingCurrency",
                    "ServiceName")
# Conditional in FOCUS: the column may be absent from some exports; absent means null.
# BillingPeriodStart is mandatory in FOCUS; exports cut down to fewer columns go without it.
OPTIONAL_COLUMNS = ("RegionId", "SubAccountId", "BillingPeriodStart")
NULL_LITERALS = ["", "NULL", "null", "Null"]
UNKNOWN_SERVICE = "Unknown"
# 20 integer digits, 18 decimals: exact for every amount a bill holds.
AMOUNT = pl.Decimal(38, 18)
KEY = ["day", "service", "region", "account", "currency", "billing_period"]
# Column widths of CostRecord: longer values are reported, not truncated.
MAX_LENGTHS = {"service": 200, "region": 64, "account": 128}
# The days a bill can cover: from EARLIEST_DAY (2000), and no charge period starts more
# than a year ahead. A row outside them is a broken export (a 0001-01-01 or 9999-12-31
# placeholder), not spend: read as a day, it would stretch the provider's coverage over
# centuries and break every date computed from it.
FUTURE_DAYS = 366
# No bill has a line of 10^15, even in yen or rupiah: a larger amount is a broken export
# (or a unit mix-up), and a day's sum of such lines would overflow what a cost record holds.
MAX_LINE_AMOUNT = 10**15
# Merge the per-file sums every so many files, so a prefix of thousands of files stays small.
MERGE_EVERY = 16
# What a file may hold before it is read: a 1 MB .csv.gz of one 1 GiB line took 7.5 GB of
# memory to parse, and a 689 KB Parquet file of 20 million dictionary-encoded rows in one
# row group 1.6 GB. FOCUS lines are a few KB (tags included); exporters cut row groups
# far smaller. A gzip is decompressed to a temporary file by streaming (polars would
# decompress it whole, in memory), up to MAX_TEXT_BYTES of text.
MAX_LINE_BYTES = 4 * 1024**2
MAX_TEXT_BYTES = 64 * 1024**3
MAX_ROW_GROUP_ROWS = 8_000_000
_CHUNK = 4 * 1024**2

_ISO_DATETIME = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?"
    r"\s*(?:Z|UTC|[+-]\d{2}:?\d{2})?$"
)
_OFFSET = r"[T ](\d{2}):(\d{2})(?::\d{2}(?:\.\d{1,9})?)?\s*([+-])(\d{2}):?(\d{2})$"
_CURRENCY = r"^[A-Z]{3}$"

_S3_RETRYABLE = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
    "ServiceUnavailable", "InternalError", "RequestTimeout",
})


@dataclass(frozen=True)
class _Source:
    path: Path  # what we read (local)
    label: str  # what messages call it: a path relative to the import folder, or s3://...


@dataclass(frozen=True)
class _Check:
    """One validation: ``column`` (the FOCUS name), the bad-row flag, and what is wrong."""

    column: str
    flag: pl.Expr
    problem: str


class FocusAdapter:
    """Reads FOCUS exports; see the module docstring. Files carry their own window: the
    requested ``start``/``end`` are ignored and ``stats`` says which days the data held."""

    default_backfill_days = 0

    def __init__(self, provider: ProviderSnapshot) -> None:
        self.provider = provider

    # -- the adapter protocol ---------------------------------------------------------
    def fetch(self, *, start: date, end: date, stats: FetchStats) -> Iterator[CostRow]:
        yield from _rows(self.fetch_daily(start=start, end=end, stats=stats))

    def fetch_file(self, path: str, *, stats: FetchStats) -> Iterator[CostRow]:
        yield from _rows(self.fetch_file_daily(path, stats=stats))

    # -- vectorised: daily totals as one Arrow table -----------------------------------
    def fetch_daily(self, *, start: date, end: date, stats: FetchStats) -> pa.Table:
        uri = (self.provider.config.get("uri") or "").strip()
        if not uri:
            raise ProviderError(
                "this FOCUS provider has no config.uri; set one (s3://bucket/prefix/ or a "
                "path inside the organization's import folder) or upload a file"
            )
        if uri.startswith("s3://"):
            return _daily_totals(_s3_sources(self.provider, uri), stats, where=uri)
        folder = _import_folder(self.provider)
        _refuse_other_schemes(uri, folder)
        return _daily_totals(_local_sources(uri, folder), stats, where=uri)

    def fetch_file_daily(self, path: str, *, stats: FetchStats) -> pa.Table:
        """An upload the server stored (a server-chosen path, not user input): one file,
        or a folder of the files of one split export, read together. Each is named in
        messages by the name it was uploaded under (``upload_label``)."""
        upload = Path(path)
        files = sorted(upload.iterdir()) if upload.is_dir() and not upload.is_symlink() else [upload]
        sources = []
        for file in files:
            label = upload_label(file.name)
            if file.is_symlink() or not file.is_file():
                raise ProviderError(f"the uploaded file {label} is missing or not a regular file")
            sources.append(_Source(file, label))
        if not sources:
            raise ProviderError("the upload holds no file")
        where = sources[0].label if len(sources) == 1 else f"{len(sources)} uploaded files"
        return _daily_totals(iter(sources), stats, where=where)


def upload_label(stored_name: str) -> str:
    """The name a stored upload was uploaded under, for messages (the stored name when it
    has none)."""
    _, separator, original = stored_name.partition(UPLOAD_NAME_SEPARATOR)
    return original if separator and original else stored_name


def _rows(table: pa.Table) -> Iterator[CostRow]:
    for batch in table.to_batches(max_chunksize=10_000):
        for item in batch.to_pylist():
            yield CostRow(
                day=item["day"], service=item["service"], region=item["region"],
                account=item["account"], billed=item["billed"],
                effective=item["effective"], currency=item["currency"],
                billing_period=item["billing_period"],
            )


# -- locating files --------------------------------------------------------------------
_is_data_file = discovery.is_data_file


def _import_folder(provider: ProviderSnapshot) -> Path:
    """The import folder of the provider's organization: the only local folder it may read.
    It comes from the provider's organization (the snapshot's ``organization_slug``), never
    from its config, which is the tenant's own input and may have been written around the
    API."""
    from rest_framework.exceptions import ValidationError

    from providers.configs import organization_import_folder

    try:
        return organization_import_folder(provider.organization_slug)
    except ValidationError as exc:
        raise ProviderError(f"no local folder can be read: {_detail(exc)}") from None


def _detail(exc: Exception) -> str:
    detail = getattr(exc, "detail", str(exc))
    return str(detail[0] if isinstance(detail, list) else detail)


def _refuse_other_schemes(uri: str, folder: Path) -> None:
    """A stored ``gs://…`` or ``https://…`` is refused by name, not read as a local path."""
    from providers.configs import unsupported_scheme

    scheme = unsupported_scheme(uri)
    if scheme is not None:
        raise ProviderError(
            f"config.uri {uri!r} is refused: unsupported scheme {scheme!r}; use "
            f"s3://bucket/prefix/ or a path inside this organization's import folder {folder}"
        )


def _inside_folder(value: str | Path, folder: Path) -> Path:
    """``value`` resolved (symlinks followed) and checked to be inside ``folder``."""
    from rest_framework.exceptions import ValidationError

    from providers.configs import resolve_import_path

    try:
        return resolve_import_path(str(value), folder)
    except ValidationError as exc:
        raise ProviderError(f"config.uri {str(value)!r} is refused: {_detail(exc)}") from None


def _local_sources(uri: str, folder: Path) -> Iterator[_Source]:
    """The files to read under ``uri``, every one checked to be inside ``folder`` (the
    organization's import folder) when listed and again when read."""

    def inside(path: str | Path) -> Path:
        return _inside_folder(path, folder)

    target = inside(uri)
    if target.is_file():
        yield _Source(target, _relative(target, folder))
        return
    if not target.is_dir():
        raise ProviderError(f"config.uri {uri!r} does not exist")
    # Every file is checked, read or skipped: a symlink inside the folder may point out.
    try:
        data, manifests = discovery.local_listing(target, folder, inside)
    except discovery.DiscoveryError as exc:
        raise ProviderError(str(exc)) from None
    if not data:
        raise ProviderError(f"no FOCUS files (.csv, .csv.gz, .parquet) under {uri}")
    plan = _plan(data, manifests, lambda found: discovery.read_local_json(found, inside),
                 lambda found: "/".join(found.parts))
    for found in plan.files:
        # Again at read time: the folder may have changed since it was listed.
        yield _Source(inside(found.ref), "/".join(found.parts))


def _plan(data: list[discovery.Found], manifests: list[discovery.Found],
          read_json: Any, label: Any) -> discovery.Plan:
    try:
        return discovery.choose(data, manifests, read_json, label)
    except discovery.DiscoveryError as exc:
        raise ProviderError(str(exc)) from None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _s3_client(provider: ProviderSnapshot) -> Any:
    """The S3 client of ``provider`` (patched in tests)."""
    import boto3
    from botocore.config import Config

    credentials = provider.credentials or {}
    keys = {
        "aws_access_key_id": credentials.get("aws_access_key_id"),
        "aws_secret_access_key": credentials.get("aws_secret_access_key"),
    }
    if not all(keys.values()):
        if not provider.allow_ambient_credentials:
            raise ProviderError(
                "this FOCUS provider reads S3 and needs credentials (aws_access_key_id, "
                "aws_secret_access_key); the server's own identity is not used unless "
                "INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS is on"
            )
        keys = {}
    session = boto3.session.Session(**keys)
    return session.client(
        "s3",
        region_name=provider.config.get("region") or "us-east-1",
        config=Config(connect_timeout=10, read_timeout=120, retries={"mode": "standard"}),
    )


def _s3_error(exc: Exception, uri: str) -> ProviderError:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _S3_RETRYABLE:
            return ProviderThrottled(f"S3 asked us to slow down reading {uri} ({code})")
        if code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}:
            return ProviderError(
                f"access to {uri} was denied ({code}); check the access key and that it "
                "may s3:ListBucket and s3:GetObject there"
            )
        if code in {"NoSuchBucket", "NoSuchKey", "404"}:
            return ProviderError(f"{uri} does not exist ({code})")
        return ProviderError(f"S3 refused reading {uri} ({code})")
    return ProviderThrottled(f"S3 could not be reached for {uri} ({type(exc).__name__})")


def _s3_sources(provider: ProviderSnapshot, uri: str) -> Iterator[_Source]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = _s3_client(provider)
    try:
        if prefix and not prefix.endswith("/") and _is_data_file(prefix.rsplit("/", 1)[-1]):
            keys = [prefix]
        else:
            data, manifests = discovery.s3_listing(client, bucket, prefix)
            if not data:
                raise ProviderError(f"no FOCUS files (.csv, .csv.gz, .parquet) under {uri}")
            plan = _plan(data, manifests,
                         lambda found: discovery.read_s3_json(found, client, bucket),
                         lambda found: f"s3://{bucket}/{found.ref}")
            keys = [found.ref for found in plan.files]
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(exc, uri) from None
    with tempfile.TemporaryDirectory(prefix="focus-s3-") as folder:
        for number, key in enumerate(keys):
            local = Path(folder) / f"{number}-{key.rsplit('/', 1)[-1]}"
            try:
                client.download_file(bucket, key, str(local))
            except (ClientError, BotoCoreError) as exc:
                raise _s3_error(exc, f"s3://{bucket}/{key}") from None
            yield _Source(local, f"s3://{bucket}/{key}")
            local.unlink(missing_ok=True)


# -- reading one file ------------------------------------------------------------------
def _daily_totals(sources: Iterator[_Source], stats: FetchStats, *, where: str) -> pa.Table:
    """Sum every file of ``sources`` to daily keys; one Arrow table, keys unique."""
    parts: list[pl.DataFrame] = []
    named: set[date] = set()  # periods a file named in its BillingPeriodStart column
    for source in sources:
        with _bounded(source) as readable:
            frame, rows, names_periods = _read_file(readable)
        stats.rows_read += rows
        if names_periods:
            named.update(frame["billing_period"].unique().to_list())
        parts.append(frame)
        if len(parts) >= MERGE_EVERY:
            parts = [_merge(parts)]
    merged = _merge(parts) if parts else _empty()
    if merged.height:
        first, last = merged["day"].min(), merged["day"].max()
        stats.date_from = min(filter(None, [stats.date_from, first]))
        stats.date_to = max(filter(None, [stats.date_to, last]))
    stats.billing_periods = {**(stats.billing_periods or {}), **_periods(merged, named)}
    logger.info("FOCUS %s: %s rows -> %s daily records", where, stats.rows_read, merged.height)
    return merged.to_arrow(compat_level=pl.CompatLevel.oldest())


def _periods(totals: pl.DataFrame, named: set[date]) -> dict[date, PeriodDelivered]:
    """What ``totals`` deliver of each billing period: the first and last of its own days
    (from its first day to the day before the next month's; corrections of other periods
    are not its days), and whether a file named it (``PeriodDelivered``)."""
    own = pl.col("day").is_between(
        pl.col("billing_period"), pl.col("billing_period").dt.offset_by("1mo"), closed="left"
    )
    spans = totals.group_by("billing_period").agg(
        first=pl.col("day").filter(own).min(), last=pl.col("day").filter(own).max()
    )
    return {
        period: PeriodDelivered(first, last, whole=period in named)
        for period, first, last in spans.iter_rows()
    }


@contextmanager
def _bounded(source: _Source) -> Iterator[_Source]:
    """``source`` checked against the limits above before anything parses it: a gzip as a
    temporary plain file (decompressed by streaming), its lines measured on the way; a
    CSV's lines measured; a Parquet file's row groups counted from its footer."""
    kind, name = _file_format(source.path), source.path.name.lower()
    # The content decides how a file is read (a .csv that is gzipped is read), but a file
    # named .parquet or .gz that is not one is broken: say so, not "missing column".
    if name.endswith(".parquet") and kind != "parquet":
        raise ProviderError(f"{source.label}: is not a Parquet file (it does not start with PAR1)")
    if name.endswith(".gz") and kind != "gzip":
        raise ProviderError(f"{source.label}: is not gzip-compressed, though its name ends in .gz")
    if kind == "parquet":
        _check_row_groups(source)
        yield source
    elif kind == "gzip":
        with tempfile.TemporaryDirectory(prefix="focus-gunzip-") as folder:
            plain = Path(folder) / "export.csv"
            try:
                with gzip.open(source.path, "rb") as packed, plain.open("wb") as out:
                    _copy_lines(packed, out, source)
            except (OSError, EOFError) as exc:  # not gzip after all, or cut short
                raise _unreadable(source, "gzip", exc) from None
            yield _Source(plain, source.label)
    else:
        with source.path.open("rb") as handle:
            _copy_lines(handle, None, source)
        yield source


def _copy_lines(data, out, source: _Source) -> None:
    """Read ``data`` in chunks (written to ``out`` when given), refusing a line longer than
    MAX_LINE_BYTES or a text longer than MAX_TEXT_BYTES. Vectorised: the newlines of a
    chunk are found by numpy, not by a Python loop."""
    line, length, total = 1, 0, 0  # the current line, its bytes so far, the text's bytes
    while chunk := data.read(_CHUNK):
        total += len(chunk)
        if total > MAX_TEXT_BYTES:
            raise ProviderError(f"{source.label}: holds more than {MAX_TEXT_BYTES} bytes of text; "
                                "nothing was imported")
        ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
        starts = np.concatenate([[0], ends + 1])
        lengths = np.append(ends, len(chunk)) - starts  # each line's bytes in this chunk
        lengths[0] += length
        too_long = np.flatnonzero(lengths > MAX_LINE_BYTES)
        if too_long.size:
            raise ProviderError(
                f"{source.label}: line {line + int(too_long[0])} is longer than "
                f"{MAX_LINE_BYTES // 1024**2} MiB; not a FOCUS export line, nothing was imported"
            )
        line, length = line + ends.size, int(lengths[-1])
        if out is not None:
            out.write(chunk)


def _check_row_groups(source: _Source) -> None:
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(source.path).metadata
    except (OSError, ValueError):
        return  # a broken file: reading it says so (``_columns``)
    for index in range(metadata.num_row_groups):
        rows = metadata.row_group(index).num_rows
        if rows > MAX_ROW_GROUP_ROWS:
            raise ProviderError(
                f"{source.label}: row group {index + 1} holds {rows} rows, more than the "
                f"{MAX_ROW_GROUP_ROWS} read at once; write it with smaller row groups "
                "(nothing was imported)"
            )


def _merge(parts: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(parts).group_by(KEY).agg(pl.col("billed").sum(), pl.col("effective").sum())


def _empty() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"day": pl.Date, "service": pl.String, "region": pl.String,
                "account": pl.String, "currency": pl.String, "billing_period": pl.Date,
                "billed": AMOUNT, "effective": AMOUNT}
    )


def _file_format(path: Path) -> str:
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic == b"PAR1":
        return "parquet"
    return "gzip" if magic[:2] == b"\x1f\x8b" else "csv"


def _open(source: _Source) -> tuple[pl.LazyFrame, str]:
    kind = _file_format(source.path)  # names were checked against contents (``_bounded``)
    try:
        if kind == "parquet":
            return pl.scan_parquet(source.path), kind
        # Everything as text: we parse the few columns we use ourselves, exactly.
        return pl.scan_csv(source.path, infer_schema=False), kind
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ProviderError(
            f"{source.label}: cannot be read as FOCUS {kind}: {_first_line(exc)}"
        ) from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _columns(lf: pl.LazyFrame, source: _Source) -> dict[str, tuple[str, pl.DataType]]:
    """FOCUS column name -> (name in the file, dtype); names matched ignoring case/space."""
    try:
        schema = lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError, EOFError) as exc:  # OSError: a broken gzip
        raise ProviderError(f"{source.label}: cannot be read: {_first_line(exc)}") from None
    present = {
        name.strip().lstrip("\ufeff").lower(): (name, dtype) for name, dtype in schema.items()
    }
    found: dict[str, tuple[str, pl.DataType]] = {}
    for column in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        if column.lower() in present:
            found[column] = present[column.lower()]
        elif column in REQUIRED_COLUMNS:
            raise ProviderError(
                f"{source.label}: missing required FOCUS column {column} "
                f"(the header has {len(schema)} columns; is this a FOCUS 1.0-1.2 export?)"
            )
    return found


def _text(name: str, dtype: pl.DataType) -> pl.Expr:
    """The column as stripped text, null for empty strings and the literal NULL."""
    expr = pl.col(name) if dtype == pl.String else pl.col(name).cast(pl.String)
    expr = expr.str.strip_chars()
    return pl.when(expr.is_in(NULL_LITERALS)).then(None).otherwise(expr)


def _raw(name: str, dtype: pl.DataType) -> pl.Expr:
    """Stage 1 form of a column: typed Parquet values stay typed (floats become their
    shortest text, never a binary fraction); text is cleaned by ``_text``."""
    if isinstance(dtype, (pl.Datetime, pl.Date, pl.Decimal)) or dtype.is_integer():
        return pl.col(name)
    return _text(name, dtype)


def _parsed_day(dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr, pl.Expr | None]:
    """Stage 2 of ChargePeriodStart (``r_day``): (day, is-valid flag, offset parts or None)."""
    column = pl.col("r_day")
    if isinstance(dtype, pl.Datetime):
        value = column.dt.convert_time_zone("UTC") if dtype.time_zone else column
        return value.dt.date(), column.is_not_null(), None
    if dtype == pl.Date:
        return column, column.is_not_null(), None
    day = column.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    valid = column.str.contains(_ISO_DATETIME).fill_null(False) & day.is_not_null()
    return day, valid, column.str.extract_groups(_OFFSET)


def _parsed_period(dtype: pl.DataType | None) -> tuple[pl.Expr, pl.Expr]:
    """Stage 2 of BillingPeriodStart (``r_period``): (its date as written, is-valid flag);
    null where the column is absent or null (the day's month, in stage 3)."""
    column = pl.col("r_period")
    if isinstance(dtype, pl.Datetime):
        return column.dt.date(), pl.lit(True)
    if dtype == pl.Date:
        return column, pl.lit(True)
    period = column.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    valid = column.is_null() | (column.str.contains(_ISO_DATETIME).fill_null(False)
                                & period.is_not_null())
    return period, valid


def _utc_day() -> pl.Expr:
    """Stage 3: an explicit non-UTC offset may move the instant to the previous or next
    UTC day (``offset`` holds hour, minute, sign, offset hours, offset minutes)."""
    parts = pl.col("offset").struct
    local = parts.field("1").cast(pl.Int32) * 60 + parts.field("2").cast(pl.Int32)
    offset = parts.field("4").cast(pl.Int32) * 60 + parts.field("5").cast(pl.Int32)
    sign = pl.when(parts.field("3") == "-").then(-1).otherwise(1)
    shift = ((local - sign * offset) // 1440).fill_null(0)
    return pl.col("day") + pl.duration(days=shift)


def _prepare(
    lf: pl.LazyFrame, source: _Source, *, diagnose: bool = False
) -> tuple[pl.LazyFrame, list[_Check]]:
    """Normalised KEY + amounts + one flag column per check, in three projections so that
    each cleaned or parsed value is computed once. ``diagnose`` keeps the row number and
    the raw text, for the error message."""
    cols = _columns(lf, source)
    if diagnose:
        lf = lf.with_row_index("row", offset=1)
    keep = [pl.col("row")] if diagnose else []
    missing = pl.lit(None, dtype=pl.String)
    stage1 = lf.select(
        *keep,
        r_day=_raw(*cols["ChargePeriodStart"]),
        r_billed=_raw(*cols["BilledCost"]),
        r_effective=_raw(*cols["EffectiveCost"]),
        r_currency=_raw(*cols["BillingCurrency"]),
        r_service=_raw(*cols["ServiceName"]),
        r_region=_raw(*cols["RegionId"]) if "RegionId" in cols else missing,
        r_account=_raw(*cols["SubAccountId"]) if "SubAccountId" in cols else missing,
        r_period=(_raw(*cols["BillingPeriodStart"]) if "BillingPeriodStart" in cols
                  else missing),
    )
    day, day_valid, offset = _parsed_day(cols["ChargePeriodStart"][1])
    period, period_valid = _parsed_period(cols.get("BillingPeriodStart", (None, None))[1])
    raws = [pl.col(f"r_{name}") for name in ("day", "billed", "effective", "currency",
                                               "service", "region", "account", "period")]
    stage2 = stage1.select(
        *keep,
        *(raws if diagnose else []),
        day=day,
        day_valid=day_valid,
        offset=offset if offset is not None else pl.lit(None),
        billed=pl.col("r_billed").cast(AMOUNT, strict=False),
        effective=pl.col("r_effective").cast(AMOUNT, strict=False),
        currency=pl.col("r_currency").str.to_uppercase(),
        service=pl.col("r_service").fill_null(UNKNOWN_SERVICE),
        region=pl.col("r_region").fill_null(GLOBAL_REGION),
        account=pl.col("r_account").fill_null(""),
        period=period,
        period_valid=period_valid,
    )
    latest = datetime.now(UTC).date() + timedelta(days=FUTURE_DAYS)
    checks = [
        _Check("ChargePeriodStart", ~pl.col("day_valid"), "is not a date/time (ISO 8601)"),
        _Check("ChargePeriodStart",
               pl.col("day_valid") & ~pl.col("day").is_between(EARLIEST_DAY, latest).fill_null(True),
               f"is outside the days a bill can cover ({EARLIEST_DAY} to {latest})"),
        _Check("BillingPeriodStart", ~pl.col("period_valid"), "is not a date/time (ISO 8601)"),
        _Check("BilledCost", pl.col("billed").is_null(), "is not a decimal amount"),
        _Check("EffectiveCost", pl.col("effective").is_null(), "is not a decimal amount"),
        *(
            _Check(focus, pl.col(name).abs().ge(MAX_LINE_AMOUNT).fill_null(False),
                   f"is larger than any bill line (must be under {MAX_LINE_AMOUNT:.0e} in absolute value)")
            for focus, name in (("BilledCost", "billed"), ("EffectiveCost", "effective"))
        ),
        _Check("BillingCurrency", ~pl.col("currency").str.contains(_CURRENCY).fill_null(False),
               "is not a 3-letter currency code"),
        *(
            _Check(focus, pl.col(name).str.len_chars() > limit,
                   f"is longer than {limit} characters")
            for focus, name, limit in (
                ("ServiceName", "service", MAX_LENGTHS["service"]),
                ("RegionId", "region", MAX_LENGTHS["region"]),
                ("SubAccountId", "account", MAX_LENGTHS["account"]),
            )
        ),
    ]
    stage3 = stage2.select(
        *keep,
        *(raws if diagnose else []),
        day=_utc_day() if offset is not None else pl.col("day"),
        **{name: pl.col(name) for name in KEY[1:-1]},
        billing_period=pl.coalesce(
            pl.col("period"),
            (_utc_day() if offset is not None else pl.col("day")).dt.month_start(),
        ),
        billed=pl.col("billed"),
        effective=pl.col("effective"),
        **{f"bad{i}": check.flag for i, check in enumerate(checks)},
    )
    return stage3, checks


_RAW_OF = {
    "ChargePeriodStart": "r_day", "BilledCost": "r_billed", "EffectiveCost": "r_effective",
    "BillingCurrency": "r_currency", "ServiceName": "r_service", "RegionId": "r_region",
    "SubAccountId": "r_account", "BillingPeriodStart": "r_period",
}


def _read_file(source: _Source) -> tuple[pl.DataFrame, int, bool]:
    """(daily sums of one file, rows read, whether it has a BillingPeriodStart column);
    ProviderError naming file/column/row."""
    lf, kind = _open(source)
    names_periods = "BillingPeriodStart" in _columns(lf, source)
    normalised, checks = _prepare(lf, source)
    flags = [pl.col(f"bad{i}") for i in range(len(checks))]
    query = normalised.group_by(KEY).agg(
        pl.col("billed").sum(), pl.col("effective").sum(),
        rows=pl.len(), bad=pl.any_horizontal(flags).sum(),
    )
    try:
        frame = query.collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError, EOFError) as exc:  # OSError: a broken gzip
        raise _unreadable(source, kind, exc) from None
    if frame.height and frame["bad"].sum():
        raise _first_bad_row(lf, source, checks)
    rows = int(frame["rows"].sum()) if frame.height else 0
    return frame.drop("rows", "bad"), rows, names_periods


def _first_bad_row(lf: pl.LazyFrame, source: _Source, checks: list[_Check]) -> ProviderError:
    """The slow path, only for a file known to hold a bad value: find the first one."""
    normalised, _ = _prepare(lf, source, diagnose=True)
    flags = [f"bad{i}" for i in range(len(checks))]
    # Only the raw text and the flags: a parsed value may not be one Python can hold (an
    # offset moves 9999-12-31T20:00-05:00 into the year 10000).
    hit = (
        normalised.filter(pl.any_horizontal(flags))
        .select("row", *_RAW_OF.values(), *flags)
        .head(1)
        .collect(engine="streaming")
    )
    found = hit.row(0, named=True)
    for flag, check in zip(flags, checks, strict=True):
        if found[flag]:
            value = found[_RAW_OF[check.column]]
            shown = "empty" if value is None else repr(str(value)[:60])
            return ProviderError(
                f"{source.label}: column {check.column}, data row {found['row']}: "
                f"value {shown} {check.problem}; nothing was imported"
            )
    return ProviderError(f"{source.label}: data row {found['row']} is invalid")


def _unreadable(source: _Source, kind: str, exc: Exception) -> ProviderError:
    """A file polars could not parse as a table; for CSV, find the line with Python's csv
    (slow, but only on this error path)."""
    problem = _csv_problem(source.path, kind) if kind in {"csv", "gzip"} else None
    return ProviderError(
        f"{source.label}: cannot be read as FOCUS {'Parquet' if kind == 'parquet' else 'CSV'}"
        f"{f' ({problem})' if problem else ''}: {_first_line(exc)}; nothing was imported"
    )


def _csv_problem(path: Path, kind: str) -> str | None:
    opener = gzip.open if kind == "gzip" else open
    line = 1
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, [])
            for record in reader:
                line = reader.line_num
                if len(record) > len(header):
                    return f"line {line}: {len(record)} fields, the header has {len(header)}"
    except UnicodeDecodeError:
        return f"after line {line}: not UTF-8 text"
    except csv.Error as exc:
        return f"line {line + 1}: {exc}"
    except (OSError, EOFError):
        return None
    return None


__all__ = ["FocusAdapter"]
