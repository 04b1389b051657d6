"""The write path of billing data: one provider, one window of days, replaced atomically.

``cost_records_sync`` reads the provider's source through its adapter, outside any
transaction, into daily totals: adapters that can (``DailyTotalsAdapter``, e.g. FOCUS
files) hand over one Arrow table already summed per natural key by a vectorised streaming
query; row adapters (AWS, GCP, Azure APIs) yield ``CostRow``s that are summed here in a
dict. Either way the set is days x services x regions x accounts, small next to the raw
rows. Then, in one transaction under the provider's row lock, ``replace_window`` makes the
provider's records for the covered days exactly that set; for a source that delivers whole
billing periods (FOCUS exports), the records of the periods it delivered, whatever their
days (a later period may correct an earlier period's days, and its import must not touch
the earlier period's own records).

On PostgreSQL the set is COPY'd into a temporary staging table and the window is changed
by difference, in SQL: rows that are not in the new set (gone, or with another amount) are
deleted, rows of the new set that are missing are inserted. Nothing deleted and nothing
inserted means nothing changed: the provider's ``data_version`` is bumped only otherwise,
so re-running a sync with unchanged data writes no record. On SQLite (the embedded
default) the same comparison runs in Python with ``bulk_create``. A failure anywhere
before the commit leaves the previous records untouched.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import TYPE_CHECKING, Union

from django.conf import settings
from django.db import DataError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from costs.models import CostRecord, ServiceDayTotal
from infraaudit.locks import advisory_lock
from providers.adapters.base import (
    CostRow,
    DailyTotalsAdapter,
    FetchStats,
    PeriodDelivered,
    ProviderError,
    ProviderSnapshot,
)
from providers.adapters.registry import adapter_class
from providers.models import Provider

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

# (day, service, region, account, currency, billing period) -> [billed, effective]; a key
# without the period (5 items) is in its day's month.
Key = tuple[date, str, str, str, str, date]
Totals = dict[Key, list[Decimal]]
# What replace_window accepts: summed totals, or an Arrow table with DAILY_TOTALS_COLUMNS
# (keys may repeat across its rows; they are summed).
DailyTotals = Union[Totals, "pa.Table"]

BACKFILL_MONTHS = 13
ANALYZE_AFTER_ROWS = 100_000  # records changed by one sync before it refreshes statistics
_TABLE = CostRecord._meta.db_table
_DECIMALS = CostRecord._meta.get_field("billed_amount").decimal_places
_MAX_DIGITS = CostRecord._meta.get_field("billed_amount").max_digits
_QUANTUM = Decimal(1).scaleb(-_DECIMALS)
_MAX_AMOUNT = Decimal(10) ** (_MAX_DIGITS - _DECIMALS)
_TOO_LARGE = "{what} adds up to more than a cost record holds (1e+18); nothing was imported"
_KEY_COLUMNS = "day, service, region, account, currency, billing_period"


@dataclass(frozen=True)
class SyncOutcome:
    rows_read: int
    records_written: int
    date_from: date | None
    date_to: date | None
    changed: bool


def provider_snapshot(provider: Provider) -> ProviderSnapshot:
    return ProviderSnapshot(
        id=provider.id,
        name=provider.name,
        kind=provider.kind,
        config=dict(provider.config),
        credentials=provider.credentials,
        allow_ambient_credentials=settings.ALLOW_AMBIENT_CREDENTIALS,
        organization_slug=provider.organization.slug,
        aws_external_id=provider.organization.aws_external_id,
    )


def default_window(provider: Provider, *, today: date) -> tuple[date, date]:
    """The days an API provider is re-pulled: the current and previous month (providers
    restate recent days), or 13 months back on a first sync; after a pause, from the day
    after the last synced one (at most 13 months back), so no month between is left
    unsynced and read as no spend."""
    month = today.month - BACKFILL_MONTHS
    backfill_start = date(today.year + (month - 1) // 12, (month - 1) % 12 + 1, 1)
    if provider.coverage_end is None:
        return backfill_start, today
    previous_month_start = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    resume = provider.coverage_end + timedelta(days=1)
    return max(backfill_start, min(previous_month_start, resume)), today


def month_start(day: date) -> date:
    return day.replace(day=1)


def aggregate_rows(rows: Iterable[CostRow]) -> Totals:
    """The rows summed per key, exactly: the default context's 28 digits would round a
    sum of Azure's actual and amortized rows past 1e16 (12 decimals)."""
    totals: Totals = {}
    exact = Context(prec=_MAX_DIGITS + 10)
    for row in rows:
        period = row.billing_period or month_start(row.day)
        key = (row.day, row.service, row.region, row.account, row.currency, period)
        current = totals.get(key)
        if current is None:
            totals[key] = [row.billed, row.effective]
        else:
            current[0] = exact.add(current[0], row.billed)
            current[1] = exact.add(current[1], row.effective)
    return totals


def _fetch(
    provider: Provider, start: date, end: date, source_file: str | None, stats: FetchStats
) -> DailyTotals:
    adapter = adapter_class(provider.kind)(provider_snapshot(provider))
    if isinstance(adapter, DailyTotalsAdapter):
        if source_file is not None:
            return adapter.fetch_file_daily(source_file, stats=stats)
        return adapter.fetch_daily(start=start, end=end, stats=stats)
    if source_file is not None:
        fetch_file = getattr(adapter, "fetch_file", None)
        if fetch_file is None:
            raise ProviderError(f"a {provider.kind} provider does not import files")
        return aggregate_rows(fetch_file(source_file, stats=stats))
    return aggregate_rows(adapter.fetch(start=start, end=end, stats=stats))


def _days_of(totals: DailyTotals) -> tuple[date | None, date | None]:
    if isinstance(totals, dict):
        days = [key[0] for key in totals]
        return (min(days), max(days)) if days else (None, None)
    if totals.num_rows == 0:
        return None, None
    import pyarrow.compute as pc

    bounds = pc.min_max(totals.column("day")).as_py()
    return bounds["min"], bounds["max"]


def cost_records_sync(
    *,
    provider: Provider,
    start: date | None = None,
    end: date | None = None,
    source_file: str | None = None,
) -> SyncOutcome:
    """Pull ``provider``'s billing data for ``start``..``end`` (default window when None)
    and replace its records for the days the source covered, or for the billing periods
    it delivered (FOCUS). ``source_file`` imports an upload (one FOCUS file, or a folder
    of the files of one split export) instead of the provider's configured source.

    One sync of a provider runs at a time, from its read to its write (a PostgreSQL
    advisory lock): two imports of the same provider, the older one slower to read,
    used to write in the order they finished, so the older data won."""
    with advisory_lock(f"costs.sync.provider:{provider.pk}"):
        return _sync(provider, start, end, source_file)


def _sync(
    provider: Provider, start: date | None, end: date | None, source_file: str | None
) -> SyncOutcome:
    today = timezone.now().date()
    if start is None or end is None:
        default_start, default_end = default_window(provider, today=today)
        start, end = start or default_start, end or default_end
    if start > end:
        raise ProviderError(f"empty window: {start} is after {end}")

    stats = FetchStats()
    totals = _fetch(provider, start, end, source_file, stats)

    first, last = _days_of(totals)
    date_from = min(filter(None, [first, stats.date_from]), default=None)
    date_to = max(filter(None, [last, stats.date_to]), default=None)
    if date_from is None or date_to is None:
        # Nothing read and no window known (an empty file): nothing to replace.
        return SyncOutcome(stats.rows_read, 0, None, None, changed=False)

    written = _replace(
        provider=provider, date_from=date_from, date_to=date_to, totals=totals,
        billing_periods=stats.billing_periods,
    )
    # The days changed include those of records deleted outside the data's days (a
    # period's correction of an earlier day, gone in its restatement): the anomalies of
    # those days are judged again too.
    date_from = min(filter(None, [date_from, written.first_gone]))
    date_to = max(filter(None, [date_to, written.last_gone]))
    return SyncOutcome(stats.rows_read, written.records, date_from, date_to, written.changed)


@dataclass(frozen=True)
class _Written:
    """What a replacement did: records written, whether anything changed, and the first
    and last day of the records it deleted (None: none)."""

    records: int
    changed: bool
    first_gone: date | None
    last_gone: date | None


def replace_window(
    *,
    provider: Provider,
    date_from: date,
    date_to: date,
    totals: DailyTotals,
    billing_periods: dict[date, PeriodDelivered] | None = None,
) -> tuple[int, bool]:
    """``_replace``'s (records written, whether anything changed)."""
    written = _replace(provider=provider, date_from=date_from, date_to=date_to,
                       totals=totals, billing_periods=billing_periods)
    return written.records, written.changed


def _replace(
    *,
    provider: Provider,
    date_from: date,
    date_to: date,
    totals: DailyTotals,
    billing_periods: dict[date, PeriodDelivered] | None = None,
) -> _Written:
    """Make the provider's records for date_from..date_to exactly ``totals`` (amounts
    rounded to the column's 12 decimals), atomically. With ``billing_periods`` (what a
    FOCUS export delivered), the records of those periods instead (of a period only
    inferred from its days, those days), whatever their days; the days synced are then
    each period's own; what it did (``_Written``)."""
    scope = _Scope(date_from, date_to, billing_periods)
    if billing_periods is None:
        spans = [(date_from, date_to)]
    else:  # a period with corrections of other periods only marks no day of its own
        spans = [(p.first, p.last) for p in billing_periods.values() if p.first is not None]
    with transaction.atomic():
        # Serializes concurrent syncs of one provider; the loser waits, then compares.
        locked = Provider.objects.select_for_update().get(pk=provider.pk)
        if connection.vendor == "postgresql":
            written = _replace_in_sql(locked, scope, totals)
        else:
            written = _replace_in_python(locked, scope, totals)
        if written.changed:
            locked.data_version += 1
        locked.last_synced_at = timezone.now()
        # Every synced window is kept (the forecast and the detector read a day without
        # records there as no spend). The coverage is the latest of those spans, where a
        # sync after a pause resumes: a later window that does not touch it replaces it, an
        # earlier one is left out, and one that fills a gap joins the spans on both sides.
        # A FOCUS folder of January and March marks those months, not February.
        for first, last in spans:
            locked.synced_spans = locked.synced_spans_with(first, last)
        synced = locked.synced_days()
        if synced:  # none yet: a first import of corrections of periods never imported
            locked.coverage_start, locked.coverage_end = synced[-1]
        locked.save(update_fields=["data_version", "last_synced_at", "coverage_start",
                                   "coverage_end", "synced_spans"])
    provider.refresh_from_db()
    return written


@dataclass(frozen=True)
class _Scope:
    """The records a write replaces: the days date_from..date_to, or, per billing period
    delivered (``periods``), all of its records or (a period inferred from its days)
    those of its days first..last."""

    date_from: date
    date_to: date
    periods: dict[date, PeriodDelivered] | None

    def __str__(self) -> str:
        if self.periods is None:
            return f"{self.date_from}..{self.date_to}"
        return "billing periods " + ", ".join(
            f"{period:%Y-%m-%d}" + ("" if delivered.whole else f" ({delivered.first}..{delivered.last})")
            for period, delivered in sorted(self.periods.items())
        )

    def sql(self) -> tuple[str, dict]:
        """A condition on the records ``r`` and its parameters."""
        if self.periods is None:
            return "r.day BETWEEN %(date_from)s AND %(date_to)s", {
                "date_from": self.date_from, "date_to": self.date_to}
        whole = sorted(p for p, delivered in self.periods.items() if delivered.whole)
        terms, params = ["r.billing_period = ANY(%(whole)s)"], {"whole": whole}
        for i, (period, delivered) in enumerate(sorted(self.periods.items())):
            if not delivered.whole and delivered.first is not None:
                terms.append(f"(r.billing_period = %(p{i})s AND r.day BETWEEN %(f{i})s "
                             f"AND %(l{i})s)")
                params.update({f"p{i}": period, f"f{i}": delivered.first,
                               f"l{i}": delivered.last})
        return f"({' OR '.join(terms)})", params

    def records(self, provider: Provider):
        records = CostRecord.objects.filter(provider=provider)
        if self.periods is None:
            return records.filter(day__gte=self.date_from, day__lte=self.date_to)
        scope = Q(pk__in=[])
        for period, delivered in self.periods.items():
            if delivered.whole:
                scope |= Q(billing_period=period)
            elif delivered.first is not None:
                scope |= Q(billing_period=period, day__gte=delivered.first,
                           day__lte=delivered.last)
        return records.filter(scope)


# -- PostgreSQL: COPY into a staging table, change by difference -----------------------
def _replace_in_sql(provider: Provider, scope: _Scope, totals: DailyTotals) -> _Written:
    in_scope, scope_params = scope.sql()
    window = {"provider": provider.id, **scope_params}
    money = f"numeric({_MAX_DIGITS}, {_DECIMALS})"
    with connection.cursor() as cursor:
        # A savepoint (not a commit) may end our transaction in tests: drop explicitly.
        cursor.execute("DROP TABLE IF EXISTS pg_temp.cost_stage, pg_temp.cost_new")
        cursor.execute(
            "CREATE TEMP TABLE cost_stage (day date NOT NULL, service text NOT NULL, "
            "region text NOT NULL, account text NOT NULL, currency text NOT NULL, "
            "billing_period date NOT NULL, billed numeric NOT NULL, "
            "effective numeric NOT NULL) ON COMMIT DROP"
        )
        _copy_into_stage(cursor, totals)
        # Summed again (adapters may repeat a key across batches) and rounded once.
        try:
            cursor.execute(
                f"CREATE TEMP TABLE cost_new ON COMMIT DROP AS SELECT {_KEY_COLUMNS}, "
                f"sum(billed)::{money} AS billed, sum(effective)::{money} AS effective "
                f"FROM cost_stage GROUP BY {_KEY_COLUMNS}"
            )
        except DataError:  # numeric field overflow: a day's sum beyond _MAX_AMOUNT
            raise ProviderError(_TOO_LARGE.format(what="a day's spend of one service")) from None
        written = cursor.rowcount
        # The key index keeps both anti-joins below index lookups whatever the planner
        # believes of costs_costrecord (its statistics lag right after a big import).
        cursor.execute(f"ALTER TABLE cost_new ADD PRIMARY KEY ({_KEY_COLUMNS})")
        cursor.execute("ANALYZE cost_new")
        # Rows that are not exactly in the new set: gone, or restated.
        # Their days too: a period's records may lie before the new data's first day.
        cursor.execute(
            f"WITH gone AS (DELETE FROM {_TABLE} AS r WHERE r.provider_id = %(provider)s "
            f"AND {in_scope} AND NOT EXISTS ("
            " SELECT 1 FROM cost_new n WHERE n.day = r.day AND n.service = r.service"
            " AND n.region = r.region AND n.account = r.account AND n.currency = r.currency"
            " AND n.billing_period = r.billing_period"
            " AND n.billed = r.billed_amount AND n.effective = r.effective_amount)"
            " RETURNING r.day) SELECT count(*), min(day), max(day) FROM gone",
            window,
        )
        deleted, first_gone, last_gone = cursor.fetchone()
        # What remains matches the new set; insert the rest of it.
        cursor.execute(
            f"INSERT INTO {_TABLE} (organization_id, provider_id, {_KEY_COLUMNS}, "
            "billed_amount, effective_amount) "
            f"SELECT %(organization)s, %(provider)s, {_KEY_COLUMNS}, billed, effective "
            "FROM cost_new n WHERE NOT EXISTS ("
            f" SELECT 1 FROM {_TABLE} r WHERE r.provider_id = %(provider)s"
            " AND r.day = n.day AND r.service = n.service AND r.region = n.region"
            " AND r.account = n.account AND r.currency = n.currency"
            " AND r.billing_period = n.billing_period)",
            {**window, "organization": provider.organization_id},
        )
        inserted = cursor.rowcount
        cursor.execute("DROP TABLE cost_stage, cost_new")
        if deleted + inserted >= ANALYZE_AFTER_ROWS:
            # Autovacuum's statistics lag a big import by minutes; until they catch up the
            # planner takes the records (and the service-day totals the triggers changed)
            # for a small table, and the overview and trend of a 6M-record organization
            # took 6-15 s instead of 1-2 s.
            cursor.execute(f"ANALYZE {_TABLE}, {ServiceDayTotal._meta.db_table}")
    logger.info(
        "provider %s %s: %s records, %s deleted, %s inserted",
        provider.id, scope, written, deleted, inserted,
    )
    return _Written(written, bool(deleted or inserted), first_gone, last_gone)


def _copy_into_stage(cursor, totals: DailyTotals) -> None:
    """COPY the totals into ``cost_stage``: an Arrow table as CSV bytes written by Arrow
    (no Python object per row), a dict row by row (psycopg's text format)."""
    columns = f"cost_stage ({_KEY_COLUMNS}, billed, effective)"
    if isinstance(totals, dict):
        with cursor.copy(f"COPY {columns} FROM STDIN") as copy:
            for key, (billed, effective) in totals.items():
                copy.write_row((*_with_period(key), billed, effective))
        return
    import pyarrow.csv as pa_csv

    from providers.adapters.base import DAILY_TOTALS_COLUMNS

    copy_sql = (
        f"COPY {columns} FROM STDIN "
        "(FORMAT csv, FORCE_NOT_NULL (service, region, account, currency))"
    )
    table = totals.select(list(DAILY_TOTALS_COLUMNS))
    with cursor.copy(copy_sql) as copy:
        for batch in table.to_batches(max_chunksize=50_000):
            buffer = io.BytesIO()
            pa_csv.write_csv(batch, buffer, pa_csv.WriteOptions(include_header=False))
            copy.write(buffer.getbuffer())


def _with_period(key: tuple) -> Key:
    """A totals key with its billing period (a 5-item key is in its day's month)."""
    return key if len(key) == 6 else (*key, month_start(key[0]))


# -- SQLite (embedded default): the same comparison in Python -------------------------
def _as_totals(totals: DailyTotals) -> Totals:
    if isinstance(totals, dict):
        source = ((_with_period(key), amounts) for key, amounts in totals.items())
    else:
        source = (
            ((item["day"], item["service"], item["region"], item["account"], item["currency"],
              item["billing_period"]),
             (item["billed"], item["effective"]))
            for batch in totals.to_batches(max_chunksize=10_000)
            for item in batch.to_pylist()
        )
    summed: Totals = {}
    exact = Context(prec=_MAX_DIGITS + 10)
    for key, (billed, effective) in source:
        current = summed.setdefault(key, [Decimal(0), Decimal(0)])
        current[0] = exact.add(current[0], billed)
        current[1] = exact.add(current[1], effective)
    # PostgreSQL rounds numeric half away from zero; do the same here, with room for every
    # digit a cost record holds (the default context's 28 digits are fewer).
    context = Context(prec=_MAX_DIGITS + 2, rounding=ROUND_HALF_UP)
    rounded = {
        key: [b.quantize(_QUANTUM, context=context), e.quantize(_QUANTUM, context=context)]
        for key, (b, e) in summed.items()
    }
    for (day, service, _region, _account, currency, _period), amounts in rounded.items():
        if max(abs(amounts[0]), abs(amounts[1])) >= _MAX_AMOUNT:
            raise ProviderError(
                _TOO_LARGE.format(what=f"the {currency} spend of {service} on {day}")
            )
    return rounded


def _as_sqlite_holds(totals: Totals) -> Totals:
    """The values as Django reads them back from SQLite (float, 15 digits, quantized)."""
    context, wide = Context(prec=15), Context(prec=_MAX_DIGITS + 2)
    return {
        key: [context.create_decimal_from_float(float(value)).quantize(_QUANTUM, context=wide)
              for value in values]
        for key, values in totals.items()
    }


def _existing_totals(provider: Provider, scope: _Scope) -> Totals:
    rows = scope.records(provider).values_list(
        "day", "service", "region", "account", "currency", "billing_period", "billed_amount",
        "effective_amount",
    )
    return {tuple(row[:6]): [row[6], row[7]] for row in rows.iterator(chunk_size=10_000)}


def _replace_in_python(provider: Provider, scope: _Scope, totals: DailyTotals) -> _Written:
    new = _as_totals(totals)
    existing = _existing_totals(provider, scope)
    if connection.vendor == "sqlite":
        # SQLite keeps decimals as REAL (15 significant digits): compare what it can hold,
        # or every re-run of a large amount would look like a change.
        changed = _as_sqlite_holds(existing) != _as_sqlite_holds(new)
    else:
        changed = existing != new
    gone = [key[0] for key in existing] if changed else []
    if changed:
        scope.records(provider).delete()
        write_records(provider=provider, totals=new)
    return _Written(len(new), changed, min(gone, default=None), max(gone, default=None))


def write_records(*, provider: Provider, totals: Totals) -> None:
    """Insert the aggregated records (the window was emptied by the caller)."""
    CostRecord.objects.bulk_create(
        (
            CostRecord(
                organization_id=provider.organization_id,
                provider_id=provider.id,
                day=day,
                service=service,
                region=region,
                account=account,
                currency=currency,
                billing_period=period,
                billed_amount=billed,
                effective_amount=effective,
            )
            for (day, service, region, account, currency, period), (billed, effective)
            in totals.items()
        ),
        batch_size=5_000,
    )
