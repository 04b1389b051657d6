"""The write path of billing data: one provider, one window of days, replaced atomically.

``cost_records_sync`` streams rows from the provider's adapter, sums them per natural key
in memory (the aggregated set is days x services x regions x accounts, small next to the
raw rows), then, in one transaction, replaces the provider's records for the covered days
with the new set. Re-running it with unchanged provider data changes nothing (and does not
bump the provider's data version); a failure before the commit leaves the old data intact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from costs.models import CostRecord
from providers.adapters.base import CostRow, FetchStats, ProviderError, ProviderSnapshot
from providers.adapters.registry import adapter_class
from providers.models import Provider

logger = logging.getLogger(__name__)

# (day, service, region, account, currency) -> [billed, effective]
Key = tuple[date, str, str, str, str]
Totals = dict[Key, list[Decimal]]

BACKFILL_MONTHS = 13


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
    )


def default_window(provider: Provider, *, today: date) -> tuple[date, date]:
    """The days an API provider is re-pulled: the current and previous month (providers
    restate recent days), or 13 months back on a first sync."""
    if provider.coverage_end is None:
        month = today.month - BACKFILL_MONTHS
        year = today.year + (month - 1) // 12
        month = (month - 1) % 12 + 1
        return date(year, month, 1), today
    previous_month_start = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    return previous_month_start, today


def aggregate_rows(rows: Iterable[CostRow]) -> Totals:
    totals: Totals = {}
    for row in rows:
        key = (row.day, row.service, row.region, row.account, row.currency)
        current = totals.get(key)
        if current is None:
            totals[key] = [row.billed, row.effective]
        else:
            current[0] += row.billed
            current[1] += row.effective
    return totals


def cost_records_sync(
    *,
    provider: Provider,
    start: date | None = None,
    end: date | None = None,
    source_file: str | None = None,
) -> SyncOutcome:
    """Pull ``provider``'s billing data for ``start``..``end`` (default window when None)
    and replace its records for the days the source covered. ``source_file`` imports one
    uploaded FOCUS file instead of the provider's configured source."""
    today = timezone.now().date()
    if start is None or end is None:
        default_start, default_end = default_window(provider, today=today)
        start, end = start or default_start, end or default_end
    if start > end:
        raise ProviderError(f"empty window: {start} is after {end}")

    adapter = adapter_class(provider.kind)(provider_snapshot(provider))
    stats = FetchStats()
    if source_file is not None:
        rows = adapter.fetch_file(source_file, stats=stats)
    else:
        rows = adapter.fetch(start=start, end=end, stats=stats)
    totals = aggregate_rows(rows)

    date_from = stats.date_from
    date_to = stats.date_to
    if totals:
        days = [key[0] for key in totals]
        date_from = min([*days, *([date_from] if date_from else [])])
        date_to = max([*days, *([date_to] if date_to else [])])
    if date_from is None or date_to is None:
        # Nothing read and no window known (an empty file): nothing to replace.
        return SyncOutcome(stats.rows_read, 0, None, None, changed=False)

    written, changed = replace_window(
        provider=provider, date_from=date_from, date_to=date_to, totals=totals
    )
    return SyncOutcome(stats.rows_read, written, date_from, date_to, changed)


def _existing_totals(provider: Provider, date_from: date, date_to: date) -> Totals:
    rows = CostRecord.objects.filter(
        provider=provider, day__gte=date_from, day__lte=date_to
    ).values_list("day", "service", "region", "account", "currency", "billed_amount",
                  "effective_amount")
    return {(d, s, r, a, c): [b, e] for d, s, r, a, c, b, e in rows.iterator(chunk_size=10_000)}


def replace_window(
    *, provider: Provider, date_from: date, date_to: date, totals: Totals
) -> tuple[int, bool]:
    """Make the provider's records for date_from..date_to exactly ``totals``, atomically.
    Returns (records written, whether anything changed)."""
    quantum = Decimal(1).scaleb(-CostRecord._meta.get_field("billed_amount").decimal_places)
    new = {
        key: [billed.quantize(quantum), effective.quantize(quantum)]
        for key, (billed, effective) in totals.items()
    }
    with transaction.atomic():
        # Serializes concurrent syncs of one provider; the loser waits, then compares.
        locked = Provider.objects.select_for_update().get(pk=provider.pk)
        changed = _existing_totals(locked, date_from, date_to) != new
        if changed:
            CostRecord.objects.filter(
                provider=locked, day__gte=date_from, day__lte=date_to
            ).delete()
            write_records(provider=locked, totals=new)
            locked.data_version += 1
        locked.last_synced_at = timezone.now()
        locked.coverage_start = min(filter(None, [locked.coverage_start, date_from]))
        locked.coverage_end = max(filter(None, [locked.coverage_end, date_to]))
        locked.save(
            update_fields=["data_version", "last_synced_at", "coverage_start", "coverage_end"]
        )
    provider.refresh_from_db()
    return len(new), changed


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
                billed_amount=billed,
                effective_amount=effective,
            )
            for (day, service, region, account, currency), (billed, effective) in totals.items()
        ),
        batch_size=5_000,
    )
