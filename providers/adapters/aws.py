"""AWS billing through Cost Explorer (``ce:GetCostAndUsage``).

One request shape: ``DAILY`` granularity, metrics ``UnblendedCost`` (billed) and
``AmortizedCost`` (effective), grouped by ``SERVICE`` and ``REGION``, for the whole window
at once (Cost Explorer keeps 14 months, which covers our first-sync backfill). The API's
end date is exclusive; our window end is inclusive, so we ask for ``end + 1 day`` (capped
at tomorrow: Cost Explorer refuses an end past the first of next month).

Paging: boto3 has no paginator for this call, so we follow ``NextPageToken`` by hand.
Every request is billed by AWS, so no page is ever requested twice on purpose:

* botocore's own retries are off, so that a throttled page reaches this module;
* a throttled (or transiently failing) *first* page raises ``ProviderThrottled`` at once:
  nothing has been read, the Celery task backs off and nothing is wasted;
* a throttled *later* page is retried in place with the same token (exponential backoff,
  ``PAGE_RETRIES`` times); the pages already read are kept. Only if that page stays
  throttled do we give up with ``ProviderThrottled`` — the task then re-reads the window,
  which is the rare, bounded price of not holding a worker forever.

Credentials: the provider's access key pair (encrypted ``credentials``), or
``config.role_arn`` assumed through STS. Role assumption may start from the key pair
(then with ``config.external_id`` if the role asks for one: the client's own identity
assumes it) or, when the provider has none, from the server's own identity: the
standard cross-account pattern, where the customer's role trusts our account and
requires the external id the server generated for the organization
(``Organization.aws_external_id``, never taken from a client). An external id a client
chooses would stop nobody: another organization could name the same role and id and
have the server read that account for it (the confused-deputy problem).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

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

BILLED_METRIC = "UnblendedCost"
EFFECTIVE_METRIC = "AmortizedCost"
# A later page that stays throttled is retried this many times before we give up.
PAGE_RETRIES = 5
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 30.0
ROLE_SESSION_NAME = "infraaudit-costs"

# botocore retries disabled: throttling must reach us (see the module docstring).
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 1},
    connect_timeout=10,
    read_timeout=60,
    user_agent_extra="infraaudit-costs",
)

# Error codes AWS uses to say "slow down" (or "try again"): retried, never shown as permanent.
RETRYABLE_CODES = frozenset(
    {
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalFailure",
    }
)

_KEYS_HINT = (
    "check aws_access_key_id and aws_secret_access_key in the provider's credentials "
    "(the key may be wrong, deactivated or deleted)"
)
# Permanent errors, by code: what the user must fix. AWS's own message is not repeated
# for these (authentication messages can echo request details).
ERROR_MESSAGES: dict[str, str] = {
    "UnrecognizedClientException": f"AWS does not recognize the access key: {_KEYS_HINT}",
    "InvalidClientTokenId": f"AWS does not recognize the access key: {_KEYS_HINT}",
    "InvalidSignatureException": f"AWS rejected the request signature: {_KEYS_HINT}",
    "SignatureDoesNotMatch": f"AWS rejected the request signature: {_KEYS_HINT}",
    "IncompleteSignature": f"AWS rejected the request signature: {_KEYS_HINT}",
    "ExpiredTokenException": "the AWS session token has expired; sync again",
    "AccessDeniedException": (
        "AWS denied access to Cost Explorer: the IAM user or role needs the "
        "ce:GetCostAndUsage permission, and Cost Explorer must be enabled for the account "
        "(Billing console > Cost Explorer)"
    ),
    "AccessDenied": (
        "AWS denied access to Cost Explorer: the IAM user or role needs the "
        "ce:GetCostAndUsage permission"
    ),
    "OptInRequired": "Cost Explorer is not enabled for this AWS account: enable it in the Billing console",
    "DataUnavailableException": (
        "Cost Explorer has no data for this account yet (it can take 24 hours after "
        "Cost Explorer is enabled); sync again later"
    ),
    "BillExpirationException": (
        "the requested days are older than Cost Explorer keeps (14 months by default); "
        "sync a more recent window"
    ),
    "InvalidNextTokenException": "Cost Explorer rejected its own page token; sync again",
    "RequestChangedException": "Cost Explorer reported the request changed between pages; sync again",
}

_ASSUME_ROLE_MESSAGES: dict[str, str] = {
    "AccessDenied": (
        "AWS refused to let us assume the role {role_arn}: its trust policy must allow "
        "{principal} to call sts:AssumeRole, with the sts:ExternalId condition {external_id}"
    ),
    "RegionDisabledException": (
        "STS is disabled in region {region}: activate it in the IAM console or set "
        "config.region to an active region"
    ),
}


def _new_client(service: str, **kwargs: Any) -> BaseClient:
    """Every boto3 client of this module is made here (tests attach a Stubber to it)."""
    return boto3.session.Session().client(service, config=_CLIENT_CONFIG, **kwargs)


def _ce_region(provider: ProviderSnapshot) -> str:
    # Cost Explorer has one endpoint per partition.
    region = provider.config.get("region") or "us-east-1"
    return "cn-northwest-1" if region.startswith("cn-") else "us-east-1"


def _ce_client(provider: ProviderSnapshot) -> BaseClient:
    """A Cost Explorer client with the provider's own identity (keys or assumed role)."""
    credentials = provider.credentials or {}
    key_id = credentials.get("aws_access_key_id")
    secret = credentials.get("aws_secret_access_key")
    keys: dict[str, str] = (
        {"aws_access_key_id": key_id, "aws_secret_access_key": secret} if key_id and secret else {}
    )
    role_arn = provider.config.get("role_arn")
    if role_arn:
        # With the server's identity, only the organization's server-generated id.
        external_id = provider.config.get("external_id") if keys else provider.aws_external_id
        if not keys and not external_id:
            raise ProviderError("this organization has no AWS external id; contact the operator")
        keys = _assume_role(provider, base=keys, role_arn=role_arn, external_id=external_id)
    elif not keys and not provider.allow_ambient_credentials:
        raise ProviderError(
            "this AWS provider has no credentials: add an access key pair "
            "(aws_access_key_id, aws_secret_access_key) or set config.role_arn to a role "
            "that trusts our AWS account with the organization's external id (or, for a "
            "single-organization install, set INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS to use "
            "the server's own AWS identity)"
        )
    return _new_client("ce", region_name=_ce_region(provider), **keys)


def _assume_role(
    provider: ProviderSnapshot, *, base: dict[str, str], role_arn: str, external_id: str | None
) -> dict[str, str]:
    region = provider.config.get("region") or "us-east-1"
    params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": ROLE_SESSION_NAME}
    if external_id:
        params["ExternalId"] = external_id
    try:
        response = _new_client("sts", region_name=region, **base).assume_role(**params)
    except ClientError as exc:
        code = _error_code(exc)
        template = _ASSUME_ROLE_MESSAGES.get(code)
        if template:
            server = external_id == provider.aws_external_id and not base
            raise ProviderError(template.format(
                role_arn=role_arn, region=region,
                principal="our AWS account" if server else "the provider's access key",
                external_id=(f"{external_id} (this organization's external id)" if server
                             else "of config.external_id, if it has one"),
            )) from None
        raise _translate(exc, action=f"assuming the role {role_arn}") from None
    except BotoCoreError as exc:
        raise _translate(exc, action=f"assuming the role {role_arn}") from None
    temporary = response["Credentials"]
    return {
        "aws_access_key_id": temporary["AccessKeyId"],
        "aws_secret_access_key": temporary["SecretAccessKey"],
        "aws_session_token": temporary["SessionToken"],
    }


def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return _error_code(exc) in RETRYABLE_CODES or status == 429 or status >= 500
    # A read timeout or a dropped connection (HTTPClientError: ReadTimeoutError,
    # ConnectionClosedError) is as transient as a refused connection: botocore's own
    # retry modes say so, and ours are off (total_max_attempts 1).
    return isinstance(exc, BotoConnectionError | HTTPClientError)


def _translate(exc: Exception, *, action: str) -> ProviderError:
    """An SDK error as ProviderThrottled (retry later) or ProviderError (what to fix)."""
    if isinstance(exc, NoCredentialsError):
        return ProviderError(
            f"no AWS credentials were available for {action}: add an access key pair to the "
            "provider's credentials"
        )
    if _is_transient(exc):
        return ProviderThrottled(f"AWS throttled or failed transiently while {action}; will retry")
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        if code in ERROR_MESSAGES:
            return ProviderError(ERROR_MESSAGES[code])
        message = str(exc.response.get("Error", {}).get("Message", ""))[:300]
        return ProviderError(f"AWS error {code or 'unknown'} while {action}: {message}")
    return ProviderError(f"AWS request failed while {action}: {type(exc).__name__}")


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _backoff(attempt: int) -> float:
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
    return delay / 2 + random.uniform(0, delay / 2)


def _region(value: str) -> str:
    if value.strip().lower() in {"noregion", "global"}:
        return GLOBAL_REGION
    return normalize_region(value)


class AwsCostExplorerAdapter:
    """Daily unblended (billed) and amortized (effective) cost per service and region."""

    # Cost Explorer keeps 14 months of daily data by default.
    default_backfill_days = 13 * 31

    def __init__(self, provider: ProviderSnapshot) -> None:
        self.provider = provider
        self.account = str(provider.config.get("account_id") or "")

    def fetch(self, *, start: date, end: date, stats: FetchStats) -> Iterator[CostRow]:
        client = _ce_client(self.provider)
        stats.date_from, stats.date_to = start, end
        # Cost Explorer's end is exclusive, and it refuses an end past the first of next
        # month: days after today have no data anyway, so the request stops at tomorrow.
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        end_exclusive = min(end + timedelta(days=1), tomorrow)
        if start >= end_exclusive:
            return
        request: dict[str, Any] = {
            "TimePeriod": {"Start": start.isoformat(), "End": end_exclusive.isoformat()},
            "Granularity": "DAILY",
            "Metrics": [BILLED_METRIC, EFFECTIVE_METRIC],
            "GroupBy": [
                {"Type": "DIMENSION", "Key": "SERVICE"},
                {"Type": "DIMENSION", "Key": "REGION"},
            ],
        }
        token: str | None = None
        first_page = True
        while True:
            page = self._page(client, request, token=token, first_page=first_page)
            first_page = False
            for row in self._rows(page):
                stats.rows_read += 1
                yield row
            token = page.get("NextPageToken")
            if not token:
                return

    def _page(
        self, client: BaseClient, request: dict[str, Any], *, token: str | None, first_page: bool
    ) -> dict[str, Any]:
        """One page; a later page that is throttled is retried with the same token."""
        params = {**request, "NextPageToken": token} if token else request
        attempt = 0
        while True:
            try:
                return client.get_cost_and_usage(**params)
            except (BotoCoreError, ClientError) as exc:
                if first_page or not _is_transient(exc) or attempt >= PAGE_RETRIES:
                    raise _translate(exc, action="reading Cost Explorer") from None
                logger.info(
                    "Cost Explorer page throttled for provider %s; retrying the same page",
                    self.provider.id,
                )
                _sleep(_backoff(attempt))
                attempt += 1

    def _rows(self, page: dict[str, Any]) -> Iterator[CostRow]:
        for result in page.get("ResultsByTime", []):
            day = date.fromisoformat(result["TimePeriod"]["Start"])
            for group in result.get("Groups", []):
                keys = [*group.get("Keys", []), "", ""]
                metrics = group.get("Metrics", {})
                billed = metrics.get(BILLED_METRIC, {})
                effective = metrics.get(EFFECTIVE_METRIC, {})
                yield CostRow(
                    day=day,
                    service=keys[0] or "Unknown",
                    region=_region(keys[1]),
                    account=self.account,
                    billed=Decimal(billed.get("Amount") or "0"),
                    effective=Decimal(effective.get("Amount") or "0"),
                    currency=billed.get("Unit") or effective.get("Unit") or "USD",
                )
