"""Google Cloud billing from the standard usage cost export in BigQuery.

One parameterised query over the table in ``config.billing_table``
(``project.dataset.gcp_billing_export_v1_XXXXXX``) returns daily cost per service
(``service.description``), region (``location.region``, null -> ``global``), project
(``project.id``, the record's account) and currency:

* billed = effective = ``cost`` + credits (credits are negative: sustained and committed
  use discounts, free tier, promotions): what the invoice charges, as AWS's
  ``UnblendedCost`` and FOCUS's ``BilledCost`` count credits (``cost`` alone overstated a
  $1,000 month with $300 of credits as $1,000). Credits are summed per export row in a
  sub-select over ``UNNEST(credits)``; joining the array instead would repeat the row's
  cost once per credit.
* Exact money: the export's ``cost`` and ``credits.amount`` are FLOAT64, so each is cast to
  NUMERIC (rounded to 9 decimals, far below a cent) before summing; BigQuery NUMERIC
  comes back as ``Decimal``. No float reaches a ``CostRow``.
* The day is ``DATE(usage_start_time, "UTC")``, the product's billing day.
* The table is partitioned by ``_PARTITIONTIME``; the query filters on it to scan only
  the partitions that can hold the window. Partition days follow Pacific time and export
  time, so a UTC day's rows can sit in the previous day's partition: the filter starts
  ``PARTITION_SLACK_DAYS`` before the window. It has no upper bound because late rows
  (restatements, credits) land in later partitions.
* Dates are query parameters. The table name cannot be a parameter; it is checked
  against a strict pattern here (as well as at config validation) and quoted in backticks.

Paging: results are read with ``query_and_wait`` page by page (``PAGE_SIZE`` rows);
reading a page does not re-run the query, and a throttled page read is retried in place
by the client's RPC retry (bounded by ``RPC_RETRY_DEADLINE_SECONDS``). Failed query jobs
are not re-run automatically (``job_retry=None``): a re-run scans, and is billed for,
the table again, so it is left to the task's backoff.

Credentials: the provider's service-account key (``credentials.service_account_json``);
the server's application default credentials only when
``INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS`` is on. The query runs (and is billed) in
``config.project_id``, else the service account's project, else the table's project.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import google.auth
import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery
from google.oauth2 import service_account

from providers.adapters.base import (
    GOOGLE_TOKEN_URI,
    CostRow,
    FetchStats,
    ProviderError,
    ProviderSnapshot,
    ProviderThrottled,
    normalize_region,
)

logger = logging.getLogger(__name__)

SCOPES = (
    "https://www.googleapis.com/auth/bigquery.readonly",
    "https://www.googleapis.com/auth/cloud-platform.read-only",
)
PAGE_SIZE = 10_000
PARTITION_SLACK_DAYS = 3
RPC_RETRY_DEADLINE_SECONDS = 120.0
QUERY_WAIT_SECONDS = 600.0

# project.dataset.table, each part restricted to characters that cannot break out of a
# backtick-quoted identifier.
_TABLE = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_$-]{1,1024}$")

QUERY = """
SELECT
  DATE(usage_start_time, "UTC") AS usage_day,
  IFNULL(service.description, "") AS service,
  location.region AS region,
  IFNULL(project.id, "") AS account,
  currency,
  SUM(
    CAST(cost AS NUMERIC)
    + IFNULL((SELECT SUM(CAST(c.amount AS NUMERIC)) FROM UNNEST(credits) AS c), 0)
  ) AS billed
FROM `{table}`
WHERE _PARTITIONTIME >= TIMESTAMP(@partition_from)
  AND usage_start_time >= TIMESTAMP(@window_start)
  AND usage_start_time < TIMESTAMP(@window_end)
GROUP BY usage_day, service, region, account, currency
"""

# BigQuery error reasons (errors[0].reason) that mean "slow down" or "try again".
THROTTLING_REASONS = frozenset(
    {
        "rateLimitExceeded",
        "quotaExceeded",
        "backendError",
        "internalError",
        "badGateway",
        "jobRateLimitExceeded",
        "jobBackendError",
        "jobInternalError",
    }
)
# Exception types that are transient whatever their reason.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    api_exceptions.TooManyRequests,
    api_exceptions.InternalServerError,
    api_exceptions.BadGateway,
    api_exceptions.ServiceUnavailable,
    api_exceptions.GatewayTimeout,
    auth_exceptions.TransportError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    concurrent.futures.TimeoutError,
)


class _Context:
    """What error messages may name: nothing secret."""

    def __init__(self, *, table: str, location: str, project: str, principal: str):
        self.table, self.location, self.project, self.principal = (
            table,
            location,
            project,
            principal,
        )


# Permanent errors by exception type: what the user must fix.
ERROR_MESSAGES: dict[type[BaseException], str] = {
    api_exceptions.Unauthorized: (
        "Google rejected the service account key: create a new key for {principal} and "
        "update credentials.service_account_json"
    ),
    api_exceptions.Forbidden: (
        "{principal} may not read the billing export: grant it roles/bigquery.dataViewer on "
        "the dataset of {table} and roles/bigquery.jobUser on project {project}"
    ),
    api_exceptions.NotFound: (
        "BigQuery found no table {table} in location {location}: check config.billing_table "
        "(the standard usage cost export, gcp_billing_export_v1_...) and config.location "
        "(the dataset's location, e.g. US or EU)"
    ),
    auth_exceptions.RefreshError: (
        "Google rejected the service account key of {principal} (deleted, disabled or "
        "wrong): create a new key and update credentials.service_account_json"
    ),
    auth_exceptions.DefaultCredentialsError: (
        "no Google application default credentials are available on the server: add a "
        "service-account key to the provider's credentials"
    ),
}


def _service_account_info(provider: ProviderSnapshot) -> dict[str, Any] | None:
    raw = (provider.credentials or {}).get("service_account_json")
    if not raw:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ProviderError(
                "credentials.service_account_json is not valid JSON: paste the service "
                "account key file"
            ) from None
    if not isinstance(raw, dict):
        raise ProviderError("credentials.service_account_json must be a service account key")
    return raw


def _credentials(provider: ProviderSnapshot) -> tuple[Any, str | None, str]:
    """(credentials, their project, who they are for messages)."""
    info = _service_account_info(provider)
    if info is not None:
        # Only Google's token endpoint, whatever the stored key file says (see
        # providers.configs): a key file is tenant input, not a place to send requests.
        info = {**info, "token_uri": GOOGLE_TOKEN_URI, "universe_domain": "googleapis.com"}
        try:
            credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        except (ValueError, KeyError):
            raise ProviderError(
                "credentials.service_account_json is not a usable service account key "
                "(client_email, private_key and token_uri are needed): download a new key"
            ) from None
        return credentials, info.get("project_id"), f"service account {info.get('client_email')}"
    if not provider.allow_ambient_credentials:
        raise ProviderError(
            "this Google Cloud provider has no credentials: add a service-account key "
            "(credentials.service_account_json) with read access to the billing export (or, "
            "for a single-organization install, set INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS to "
            "use the server's application default credentials)"
        )
    try:
        credentials, project = google.auth.default(scopes=SCOPES)
    except auth_exceptions.DefaultCredentialsError:
        raise ProviderError(ERROR_MESSAGES[auth_exceptions.DefaultCredentialsError]) from None
    return credentials, project, "the server's Google identity"


def _table(provider: ProviderSnapshot) -> str:
    table = str(provider.config.get("billing_table") or "")
    if not _TABLE.match(table):
        raise ProviderError(
            "config.billing_table must be project.dataset.table of the standard billing "
            "export (e.g. my-project.billing.gcp_billing_export_v1_012345_6789AB_CDEF01)"
        )
    return table


def _bq_client(provider: ProviderSnapshot) -> tuple[bigquery.Client, _Context]:
    """The BigQuery client for this provider, and what error messages may say about it."""
    table = _table(provider)
    credentials, credentials_project, principal = _credentials(provider)
    project = provider.config.get("project_id") or credentials_project or table.split(".")[0]
    location = provider.config.get("location") or "US"
    client = bigquery.Client(project=project, credentials=credentials, location=location)
    return client, _Context(table=table, location=location, project=project, principal=principal)


def _rpc_retry():
    return bigquery.DEFAULT_RETRY.with_timeout(RPC_RETRY_DEADLINE_SECONDS)


def _reason(exc: BaseException) -> str:
    try:
        return str(exc.errors[0]["reason"])  # type: ignore[attr-defined]
    except (AttributeError, IndexError, KeyError, TypeError):
        return ""


def _translate(exc: BaseException, context: _Context) -> ProviderError:
    """An SDK error as ProviderThrottled (retry later) or ProviderError (what to fix)."""
    if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
        exc = exc.cause
    if isinstance(exc, TRANSIENT_ERRORS) or _reason(exc) in THROTTLING_REASONS:
        cause = _reason(exc) or type(exc).__name__
        return ProviderThrottled(f"BigQuery throttled or failed transiently ({cause}); will retry")
    fields = vars(context)
    for error_type, template in ERROR_MESSAGES.items():
        if isinstance(exc, error_type):
            return ProviderError(template.format(**fields))
    if isinstance(exc, api_exceptions.BadRequest):
        detail = (str(getattr(exc, "message", "") or "").splitlines() or [""])[0][:300]
        return ProviderError(
            f"BigQuery rejected the billing query ({detail}): check that {context.table} is "
            "the standard usage cost export table"
        )
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return ProviderError(f"BigQuery error {exc.code}: {type(exc).__name__}")
    return ProviderError(f"BigQuery request failed: {type(exc).__name__}")


def _decimal(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    # NUMERIC arrives as Decimal; anything else goes through its text, never a float.
    return value if isinstance(value, Decimal) else Decimal(str(value))


class GcpBillingExportAdapter:
    """Daily cost net of credits (billed and effective) per service, region, project."""

    # The export holds what was exported since it was enabled; 13 months is our backfill.
    default_backfill_days = 13 * 31

    def __init__(self, provider: ProviderSnapshot) -> None:
        self.provider = provider

    def fetch(self, *, start: date, end: date, stats: FetchStats) -> Iterator[CostRow]:
        client, context = _bq_client(self.provider)
        stats.date_from, stats.date_to = start, end
        job_config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(
                    "partition_from", "DATE", start - timedelta(days=PARTITION_SLACK_DAYS)
                ),
                bigquery.ScalarQueryParameter("window_start", "DATE", start),
                bigquery.ScalarQueryParameter("window_end", "DATE", end + timedelta(days=1)),
            ],
            use_legacy_sql=False,
            labels={"app": "infraaudit-costs"},
        )
        try:
            rows = client.query_and_wait(
                QUERY.format(table=context.table),
                job_config=job_config,
                location=context.location,
                page_size=PAGE_SIZE,
                retry=_rpc_retry(),
                job_retry=None,
                wait_timeout=QUERY_WAIT_SECONDS,
            )
            for row in rows:  # later pages are fetched lazily, with the page token
                stats.rows_read += 1
                yield self._row(row)
        except (
            api_exceptions.GoogleAPIError,
            auth_exceptions.GoogleAuthError,
            requests.exceptions.RequestException,
            concurrent.futures.TimeoutError,
        ) as exc:
            raise _translate(exc, context) from None
        finally:
            client.close()

    @staticmethod
    def _row(row: Any) -> CostRow:
        billed = _decimal(row["billed"])
        return CostRow(
            day=row["usage_day"],
            service=row["service"] or "Unknown",
            region=normalize_region(row["region"]),
            account=row["account"] or "",
            billed=billed,
            effective=billed,  # the export amortizes nothing
            currency=row["currency"] or "USD",
        )
