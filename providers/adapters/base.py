"""What every billing adapter produces and raises.

An adapter turns one provider's billing source into a stream of ``CostRow``s. It never
imports the ORM; the sync service (``costs.services.sync``) owns the transaction and
the write. Rows may repeat a natural key (hourly rows, several pages): the sync service
sums them per (day, service, region, account, currency, billing period).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

GLOBAL_REGION = "global"
# No cloud billed before 2000: an earlier day is a broken export's placeholder (a FOCUS
# row dated 0001-01-01) or a mistyped sync window, not a day to read or mark as synced.
EARLIEST_DAY = date(2000, 1, 1)
# Where a Google service account's token comes from; a key file naming another address
# is refused (``providers.configs``) and overridden (``gcp``).
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - an address


@dataclass(frozen=True, slots=True)
class CostRow:
    day: date
    service: str
    region: str
    account: str
    billed: Decimal
    effective: Decimal
    currency: str
    # The first day of the billing period the charge was invoiced in; None: the day's
    # month (the cloud APIs bill calendar months).
    billing_period: date | None = None


@dataclass(frozen=True, slots=True)
class ProviderSnapshot:
    """What an adapter may know of a provider: plain data, no model instance."""

    id: int
    name: str
    kind: str
    config: dict[str, Any]
    credentials: dict[str, Any] = field(repr=False)
    allow_ambient_credentials: bool = False
    # The provider's organization: a local FOCUS path is read only inside its import
    # folder, IMPORT_ROOT/<slug> (``providers.configs.organization_import_folder``).
    organization_slug: str = ""
    # The ExternalId the server gives when it assumes the organization's AWS roles with
    # its own identity (``Organization.aws_external_id``): the server's, never the client's.
    aws_external_id: str = ""


@dataclass(slots=True)
class FetchStats:
    """Filled in by the adapter while it streams; read by the sync service afterwards."""

    rows_read: int = 0
    # The days the source actually covered. API adapters cover the requested window;
    # file adapters cover the days present in the files they read.
    date_from: date | None = None
    date_to: date | None = None
    # Sources that deliver billing periods (FOCUS exports): what they delivered of each
    # (by its first day), whose records their import replaces; None: the source delivers
    # the days date_from..date_to, whose records it replaces.
    billing_periods: dict[date, PeriodDelivered] | None = None


@dataclass(frozen=True, slots=True)
class PeriodDelivered:
    """What a source delivered of one billing period. ``first``..``last``: the period's own
    days in the data (None: only days of other periods, i.e. corrections of them).
    ``whole``: the data named the period (FOCUS ``BillingPeriodStart``), so it is the
    period's delivery and replaces all of the period's records, whatever their days; a
    period only inferred from the days (a file without the column) replaces its records
    of ``first``..``last`` only."""

    first: date | None
    last: date | None
    whole: bool


# An uploaded FOCUS file is stored as "<random hex>--<its uploaded name, made safe>", so
# messages can name the file the client sent.
UPLOAD_NAME_SEPARATOR = "--"


class ProviderError(Exception):
    """A permanent failure; its message is shown to the user on the job, so it must say
    what to fix and must never contain a secret."""


class ProviderThrottled(ProviderError):
    """The provider asked us to slow down; the task retries with backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Adapter(Protocol):
    """One billing source. ``fetch`` streams rows for the UTC days ``start``..``end``
    (inclusive); file-based sources may ignore the window and say what they covered in
    ``stats``. ``replaces_window`` is True when the records of the covered days must be
    replaced by what was read (always, in this product)."""

    default_backfill_days: int

    def __init__(self, provider: ProviderSnapshot) -> None: ...

    def fetch(self, *, start: date, end: date, stats: FetchStats) -> Iterator[CostRow]: ...


# The columns of a DailyTotalsAdapter's table: day (date32), service, region, account,
# currency (strings, no nulls: region "global" and account "" for none), billing_period
# (date32, the period's first day), billed and effective (decimal128, exact).
DAILY_TOTALS_COLUMNS = ("day", "service", "region", "account", "currency", "billing_period",
                        "billed", "effective")


@runtime_checkable
class DailyTotalsAdapter(Protocol):
    """Optional, for sources read with a vectorised engine (FOCUS files): the adapter sums
    rows to daily totals itself and hands over one Arrow table with
    ``DAILY_TOTALS_COLUMNS``, so a million rows never become a million Python objects. A
    key may appear more than once (the sync service sums again). ``stats`` is filled in
    as with ``fetch``. The sync service prefers these methods when an adapter has them."""

    def fetch_daily(self, *, start: date, end: date, stats: FetchStats) -> pa.Table: ...

    def fetch_file_daily(self, path: str, *, stats: FetchStats) -> pa.Table: ...


def normalize_region(region: str | None) -> str:
    region = (region or "").strip()
    return region if region and region.upper() != "NULL" else GLOBAL_REGION
