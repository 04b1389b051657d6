"""Azure billing through the Cost Management Query API, subscription scope.

Two queries per window — ``ActualCost`` (billed: purchases on the day they are billed)
and ``AmortizedCost`` (effective: reservations and savings plans spread over their
term) — each ``timeframe: Custom``, ``granularity: Daily``, ``Sum`` of ``Cost``, grouped by
``ServiceName`` and ``ResourceLocation``. Actual rows are yielded with effective 0 and
amortized rows with billed 0: the sync service sums rows per natural key, so the two
streams merge into one record per (day, service, region, currency) without this module
holding either query in memory. The window is split at calendar months (a query may not
span more than a year, and monthly slices keep responses small).

Why plain azure-core and not azure-mgmt-costmanagement: the query API is one POST (plus
``nextLink`` pages), so one SDK fewer to install, audit and upgrade; azure-core still
gives us the pipeline (bearer token with refresh, transport, logging) that the generated
SDK would use.

Rows come back as arrays in ``properties.rows``, named by ``properties.columns``;
``UsageDate`` is an integer like 20240115. The JSON is parsed with
``parse_float=Decimal``, so amounts are exact from the wire on. Locations are lower-cased
(Azure mixes ``EastUS`` and ``eastus``); empty, ``Unassigned`` and ``global`` become
``global``. The record's account is the subscription id.

Throttling: azure-core's retry policy is told not to retry 429, so that it reaches us.
A 429 before anything was read raises ``ProviderThrottled`` with the server's retry-after
(``x-ms-ratelimit-microsoft.costmanagement-*-retry-after`` or ``Retry-After``), and the
task backs off. A 429 on a later page (or on the second query) is retried in place — same
``nextLink``, same body — after the retry-after, ``PAGE_RETRIES`` times, so the work
already done is kept; past that, or when the wait is longer than ``MAX_INLINE_WAIT``, we
give up with ``ProviderThrottled``.

Credentials: a service principal (tenant_id, client_id, client_secret) from the
provider's encrypted credentials; ``DefaultAzureCredential`` (the server's identity) only
when ``INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS`` is on.
"""

from __future__ import annotations

import calendar
import json
import logging
import math
import re
import time
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    HttpLoggingPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest, HttpResponse

from providers.adapters.base import (
    GLOBAL_REGION,
    CostRow,
    FetchStats,
    ProviderError,
    ProviderSnapshot,
    ProviderThrottled,
    normalize_region,
)

logger = logging.getLogger(__name__)

MANAGEMENT_HOST = "management.azure.com"
MANAGEMENT_URL = f"https://{MANAGEMENT_HOST}"
TOKEN_SCOPE = f"{MANAGEMENT_URL}/.default"
API_VERSION = "2023-03-01"
COST_COLUMN = "Cost"
# Columns the aggregate may come back under (older offers name it PreTaxCost).
COST_COLUMNS = (COST_COLUMN, "PreTaxCost", "totalCost")
PAGE_RETRIES = 3
MAX_INLINE_WAIT = 60.0
DEFAULT_RETRY_AFTER = 10.0
RETRY_AFTER_HEADERS = re.compile(
    r"^(x-ms-ratelimit-microsoft\.costmanagement-[a-z]+-retry-after|retry-after)$", re.I
)
_AADSTS = re.compile(r"AADSTS\d+")
_SUBSCRIPTION = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
MAX_RETRY_AFTER = 3600.0
_NO_REGION = {"", "unassigned", "global", "unknown", "none"}

# Permanent errors by HTTP status: what the user must fix.
ERROR_MESSAGES: dict[int, str] = {
    400: "Azure rejected the cost query ({code}): {detail}",
    401: (
        "Azure did not accept the service principal's token ({code}): check that tenant_id "
        "is the tenant of subscription {subscription}"
    ),
    403: (
        "the service principal (client_id {client_id}) may not read the costs of "
        "subscription {subscription} ({code}): assign it the Cost Management Reader role "
        "on the subscription"
    ),
    404: (
        "Azure found no subscription {subscription} ({code}): check config.subscription_id "
        "and that the service principal's tenant holds it"
    ),
}


class _NoThrottleRetryPolicy(RetryPolicy):
    """Connection errors and 5xx are retried by azure-core; 429, and an answer asking to
    wait longer than ``MAX_INLINE_WAIT``, reach the adapter, which hands the wait to
    Celery (azure-core sleeps a 5xx's whole Retry-After in place, up to three times)."""

    def is_retry(self, settings, response):
        if response.http_response.status_code == 429:
            return False
        if (_asks_to_wait(response.http_response) or 0.0) > MAX_INLINE_WAIT:
            return False
        return super().is_retry(settings, response)


def _credential(provider: ProviderSnapshot) -> TokenCredential:
    credentials = provider.credentials or {}
    tenant_id = credentials.get("tenant_id")
    client_id = credentials.get("client_id")
    client_secret = credentials.get("client_secret")
    if tenant_id and client_id and client_secret:
        from azure.identity import ClientSecretCredential

        try:
            return ClientSecretCredential(tenant_id, client_id, client_secret)
        except ValueError:  # the job said only "internal error (ValueError)"
            raise ProviderError(
                "credentials.tenant_id is not an Azure tenant id: use the directory (tenant) "
                "id, a GUID, or its domain (contoso.onmicrosoft.com)"
            ) from None
    if not provider.allow_ambient_credentials:
        raise ProviderError(
            "this Azure provider has no credentials: add a service principal (tenant_id, "
            "client_id, client_secret) with the Cost Management Reader role on the "
            "subscription (or, for a single-organization install, set "
            "INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS to use the server's own Azure identity)"
        )
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _cost_client(provider: ProviderSnapshot) -> PipelineClient:
    """An azure-core client for management.azure.com with the provider's identity."""
    credential = _credential(provider)
    return PipelineClient(
        base_url=MANAGEMENT_URL,
        policies=[
            RequestIdPolicy(),
            HeadersPolicy({"Accept": "application/json"}),
            UserAgentPolicy(sdk_moniker="infraaudit-costs"),
            _NoThrottleRetryPolicy(retry_total=3),
            BearerTokenCredentialPolicy(credential, TOKEN_SCOPE),
            HttpLoggingPolicy(),
        ],
    )


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _retry_after(response: HttpResponse) -> float:
    seconds = _asks_to_wait(response)
    return DEFAULT_RETRY_AFTER if seconds is None else seconds


def _asks_to_wait(response: HttpResponse) -> float | None:
    """The longest wait the answer's retry-after headers ask for (capped), or None."""
    values = []
    for name, value in response.headers.items():
        if RETRY_AFTER_HEADERS.match(name):
            try:
                seconds = float(value)
            except ValueError:
                continue
            if math.isfinite(seconds):
                values.append(min(max(seconds, 0.0), MAX_RETRY_AFTER))
    return max(values) if values else None


def _json(response: HttpResponse) -> Any:
    try:
        return json.loads(response.text() or "null", parse_float=Decimal)
    except ValueError:
        return None


def _error_of(response: HttpResponse) -> tuple[str, str]:
    body = _json(response)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {response.status_code}", ""
    return str(error.get("code") or f"HTTP {response.status_code}"), str(error.get("message") or "")


def _months(start: date, end: date) -> Iterator[tuple[date, date]]:
    """start..end (inclusive) cut at calendar month boundaries."""
    current = start
    while current <= end:
        month_end = current.replace(day=calendar.monthrange(current.year, current.month)[1])
        yield current, min(month_end, end)
        current = month_end + timedelta(days=1)


def _usage_date(value: Any) -> date:
    text = str(value)
    if text.isdigit() and len(text) == 8:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    return date.fromisoformat(text[:10])


def _region(value: Any) -> str:
    text = str(value or "").strip().lower()
    return GLOBAL_REGION if text in _NO_REGION else normalize_region(text)


def _amount(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | str):
        return Decimal(value)
    raise ProviderError(f"unexpected cost value from Azure: {type(value).__name__}")


class AzureCostManagementAdapter:
    """Daily actual (billed) and amortized (effective) cost per service and location."""

    # Cost Management serves 13 months and more at subscription scope.
    default_backfill_days = 13 * 31

    def __init__(self, provider: ProviderSnapshot) -> None:
        self.provider = provider
        self.subscription = str(provider.config.get("subscription_id") or "")
        self.read_anything = False

    def fetch(self, *, start: date, end: date, stats: FetchStats) -> Iterator[CostRow]:
        if not _SUBSCRIPTION.match(self.subscription):
            raise ProviderError("config.subscription_id must be the subscription id (a GUID)")
        client = _cost_client(self.provider)
        self.read_anything = False
        stats.date_from, stats.date_to = start, end
        url = (
            f"{MANAGEMENT_URL}/subscriptions/{self.subscription}"
            f"/providers/Microsoft.CostManagement/query?api-version={API_VERSION}"
        )
        try:
            for cost_type, is_billed in (("ActualCost", True), ("AmortizedCost", False)):
                for chunk_start, chunk_end in _months(start, end):
                    body = self._body(cost_type, chunk_start, chunk_end)
                    for row in self._query(client, url, body, is_billed=is_billed):
                        stats.rows_read += 1
                        yield row
        finally:
            client.close()

    @staticmethod
    def _body(cost_type: str, start: date, end: date) -> dict[str, Any]:
        return {
            "type": cost_type,
            "timeframe": "Custom",
            "timePeriod": {
                "from": f"{start.isoformat()}T00:00:00Z",
                "to": f"{end.isoformat()}T23:59:59Z",
            },
            "dataset": {
                "granularity": "Daily",
                "aggregation": {"totalCost": {"name": COST_COLUMN, "function": "Sum"}},
                "grouping": [
                    {"type": "Dimension", "name": "ServiceName"},
                    {"type": "Dimension", "name": "ResourceLocation"},
                ],
            },
        }

    def _query(
        self, client: PipelineClient, url: str, body: dict[str, Any], *, is_billed: bool
    ) -> Iterator[CostRow]:
        next_url: str | None = url
        while next_url:
            properties = self._page(client, next_url, body).get("properties") or {}
            self.read_anything = True
            yield from self._rows(properties, is_billed=is_billed)
            next_url = properties.get("nextLink") or None
            if next_url and urlsplit(next_url).netloc.lower() != MANAGEMENT_HOST:
                # Never send the bearer token anywhere but Azure Resource Manager.
                raise ProviderError("Azure returned a nextLink outside management.azure.com")

    def _page(self, client: PipelineClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST the query body to ``url``; a throttled later page is retried in place."""
        attempt = 0
        while True:
            response = self._send(client, url, body)
            if response.status_code == 429:
                wait = _retry_after(response)
                if not self.read_anything or attempt >= PAGE_RETRIES or wait > MAX_INLINE_WAIT:
                    raise ProviderThrottled(
                        "Azure Cost Management is throttling this subscription's queries; "
                        "will retry",
                        retry_after=wait,
                    )
                logger.info(
                    "Cost Management throttled a page for provider %s; retrying it in %ss",
                    self.provider.id,
                    wait,
                )
                _sleep(wait)
                attempt += 1
                continue
            if response.status_code >= 400:
                raise self._error(response)
            page = _json(response)
            if not isinstance(page, dict):
                raise ProviderError("Azure Cost Management returned a response that is not JSON")
            return page

    def _send(self, client: PipelineClient, url: str, body: dict[str, Any]) -> HttpResponse:
        try:
            return client.send_request(HttpRequest("POST", url, json=body))
        except ClientAuthenticationError as exc:
            if isinstance(exc.__cause__, (ServiceRequestError, ServiceResponseError)):
                # The token request never got an answer (DNS, network): nothing was
                # rejected, so no credential to check; transient like any network error.
                raise ProviderThrottled("could not reach Azure AD to sign in; will retry") from None
            code = _AADSTS.search(str(exc))
            raise ProviderError(
                "Azure AD rejected the service principal"
                + (f" ({code.group(0)})" if code else "")
                + ": check tenant_id, client_id and client_secret in the provider's "
                "credentials (the secret may have expired)"
            ) from None
        except (ServiceRequestError, ServiceResponseError):
            raise ProviderThrottled("could not reach Azure Cost Management; will retry") from None
        except AzureError as exc:
            raise ProviderError(f"Azure request failed: {type(exc).__name__}") from None

    def _error(self, response: HttpResponse) -> ProviderError:
        code, detail = _error_of(response)
        if response.status_code >= 500:
            return ProviderThrottled(
                f"Azure Cost Management failed transiently ({code}); will retry",
                retry_after=_retry_after(response),
            )
        template = ERROR_MESSAGES.get(
            response.status_code, "Azure Cost Management error ({code}): {detail}"
        )
        return ProviderError(
            template.format(
                code=code,
                detail=detail[:300],
                subscription=self.subscription,
                client_id=(self.provider.credentials or {}).get("client_id") or "of the server",
            )
        )

    def _rows(self, properties: dict[str, Any], *, is_billed: bool) -> Iterator[CostRow]:
        names = [str(column.get("name")) for column in properties.get("columns") or []]
        index = {name.lower(): position for position, name in enumerate(names)}
        cost_at = next((index[c.lower()] for c in COST_COLUMNS if c.lower() in index), None)
        rows = properties.get("rows") or []
        if rows and (cost_at is None or "usagedate" not in index):
            raise ProviderError(f"unexpected Azure Cost Management columns: {', '.join(names)}")
        for values in rows:
            amount = _amount(values[cost_at])
            yield CostRow(
                day=_usage_date(values[index["usagedate"]]),
                service=str(self._value(values, index, "servicename") or "Unknown"),
                region=_region(self._value(values, index, "resourcelocation")),
                account=self.subscription,
                billed=amount if is_billed else Decimal(0),
                effective=Decimal(0) if is_billed else amount,
                currency=str(self._value(values, index, "currency") or "USD"),
            )

    @staticmethod
    def _value(values: list[Any], index: dict[str, int], name: str) -> Any:
        position = index.get(name)
        return values[position] if position is not None else None
