"""The Cost Explorer adapter against real boto3 clients whose transport is a botocore Stubber.

``aws._new_client`` is wrapped, not replaced: the adapter builds real clients (with the
credentials it chose, which the tests check) and each gets a Stubber loaded with the
responses queued for its service. Stubber fails on any request it does not expect, in
order and with exact parameters, so "the earlier page was not re-requested" is checked
by construction.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from botocore.stub import Stubber

from costs.services.sync import cost_records_sync
from providers.adapters import aws
from providers.adapters.base import FetchStats, ProviderError, ProviderSnapshot, ProviderThrottled
from tests.factories import ProviderFactory
from tests.providers.records import records

KEYS = {"aws_access_key_id": "AKIAEXAMPLEKEY000001", "aws_secret_access_key": "s3cr3t/EXAMPLE+key"}
ROLE_ARN = "arn:aws:iam::210987654321:role/InfraAuditCosts"
START, END = date(2024, 1, 14), date(2024, 1, 15)


class AwsStubs:
    """Responses queued per service; attached to each client the adapter creates."""

    def __init__(self) -> None:
        self.queued: dict[str, list[tuple[str, tuple, dict]]] = defaultdict(list)
        self.clients: list[tuple[str, dict[str, Any]]] = []
        self.stubbers: list[Stubber] = []

    def respond(self, service: str, method: str, response: dict, expected_params=None):
        self.queued[service].append(("response", (method, response, expected_params), {}))

    def fail(self, service: str, method: str, code: str, status: int = 400, expected_params=None):
        self.queued[service].append(
            (
                "error",
                (method,),
                {
                    "service_error_code": code,
                    "service_message": f"{code} happened",
                    "http_status_code": status,
                    "expected_params": expected_params,
                },
            )
        )

    def make_client(self, real_new_client, service: str, **kwargs):
        self.clients.append((service, kwargs))
        client = real_new_client(service, **kwargs)
        stubber = Stubber(client)
        for kind, args, kw in self.queued.pop(service, []):
            if kind == "response":
                stubber.add_response(*args)
            else:
                stubber.add_client_error(*args, **kw)
        stubber.activate()
        self.stubbers.append(stubber)
        return client

    def credentials_of(self, service: str) -> dict[str, Any]:
        return next(kwargs for name, kwargs in self.clients if name == service)


@pytest.fixture
def stubs(monkeypatch):
    # Never reach an instance metadata endpoint or a real account from a test.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAAMBIENTSERVER001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ambient-server-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    state = AwsStubs()
    real = aws._new_client
    monkeypatch.setattr(
        aws, "_new_client", lambda service, **kwargs: state.make_client(real, service, **kwargs)
    )
    sleeps: list[float] = []
    monkeypatch.setattr(aws, "_sleep", sleeps.append)
    state.sleeps = sleeps
    yield state
    for stubber in state.stubbers:
        stubber.assert_no_pending_responses()


def snapshot(*, config=None, credentials=None, ambient=False) -> ProviderSnapshot:
    return ProviderSnapshot(
        id=1,
        name="AWS Production",
        kind="aws",
        config={"account_id": "123456789012", **(config or {})},
        credentials=KEYS if credentials is None else credentials,
        allow_ambient_credentials=ambient,
    )


def group(service: str, region: str, billed: str, effective: str, unit: str = "USD") -> dict:
    return {
        "Keys": [service, region],
        "Metrics": {
            "UnblendedCost": {"Amount": billed, "Unit": unit},
            "AmortizedCost": {"Amount": effective, "Unit": unit},
        },
    }


def day_result(day: str, *groups: dict) -> dict:
    following = date.fromordinal(date.fromisoformat(day).toordinal() + 1).isoformat()
    return {
        "TimePeriod": {"Start": day, "End": following},
        "Total": {},
        "Groups": list(groups),
        "Estimated": False,
    }


def page(*results: dict, token: str | None = None) -> dict:
    response: dict[str, Any] = {
        "GroupDefinitions": [
            {"Type": "DIMENSION", "Key": "SERVICE"},
            {"Type": "DIMENSION", "Key": "REGION"},
        ],
        "ResultsByTime": list(results),
        "DimensionValueAttributes": [],
    }
    if token:
        response["NextPageToken"] = token
    return response


def request(start: date = START, end_exclusive: str = "2024-01-16", token: str | None = None):
    params: dict[str, Any] = {
        "TimePeriod": {"Start": start.isoformat(), "End": end_exclusive},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost", "AmortizedCost"],
        "GroupBy": [
            {"Type": "DIMENSION", "Key": "SERVICE"},
            {"Type": "DIMENSION", "Key": "REGION"},
        ],
    }
    if token:
        params["NextPageToken"] = token
    return params


def fetch_all(provider: ProviderSnapshot, start=START, end=END):
    stats = FetchStats()
    rows = list(aws.AwsCostExplorerAdapter(provider).fetch(start=start, end=end, stats=stats))
    return rows, stats


def test_aws_fetch_reads_exact_amounts_per_service_and_region(stubs):
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(
            day_result(
                "2024-01-14",
                group(
                    "Amazon Elastic Compute Cloud - Compute", "us-east-1", "180.0000000001", "150.5"
                ),
                group("AWS Support (Business)", "NoRegion", "12.34", "12.34"),
                group("Tax", "global", "3.10", "3.10"),
            ),
            day_result(
                "2024-01-15", group("Amazon Simple Storage Service", "eu-west-1", "0.1", "0.2")
            ),
        ),
        expected_params=request(),  # the inclusive end becomes Cost Explorer's exclusive end
    )

    rows, stats = fetch_all(snapshot())

    assert [(r.day, r.service, r.region, r.billed, r.effective) for r in rows] == [
        (
            date(2024, 1, 14),
            "Amazon Elastic Compute Cloud - Compute",
            "us-east-1",
            Decimal("180.0000000001"),
            Decimal("150.5"),
        ),
        (date(2024, 1, 14), "AWS Support (Business)", "global", Decimal("12.34"), Decimal("12.34")),
        (date(2024, 1, 14), "Tax", "global", Decimal("3.10"), Decimal("3.10")),
        (
            date(2024, 1, 15),
            "Amazon Simple Storage Service",
            "eu-west-1",
            Decimal("0.1"),
            Decimal("0.2"),
        ),
    ]
    assert {(r.account, r.currency) for r in rows} == {("123456789012", "USD")}
    assert all(isinstance(r.billed, Decimal) and isinstance(r.effective, Decimal) for r in rows)
    assert (stats.rows_read, stats.date_from, stats.date_to) == (4, START, END)
    assert stubs.credentials_of("ce") == {"region_name": "us-east-1", **KEYS}


def test_aws_fetch_follows_next_page_token(stubs):
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(day_result("2024-01-14", group("EC2", "us-east-1", "1", "1")), token="t-1"),
        expected_params=request(),
    )
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(day_result("2024-01-14", group("S3", "us-east-1", "2", "2")), token="t-2"),
        expected_params=request(token="t-1"),
    )
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(day_result("2024-01-15", group("EC2", "us-east-1", "3", "3"))),
        expected_params=request(token="t-2"),
    )

    rows, stats = fetch_all(snapshot())

    assert [(r.service, r.billed) for r in rows] == [
        ("EC2", Decimal("1")),
        ("S3", Decimal("2")),
        ("EC2", Decimal("3")),
    ]
    assert stats.rows_read == 3


def test_aws_fetch_retries_a_throttled_later_page_with_its_token(stubs):
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(day_result("2024-01-14", group("EC2", "us-east-1", "1", "1")), token="t-1"),
        expected_params=request(),
    )
    stubs.fail(
        "ce", "get_cost_and_usage", "LimitExceededException", expected_params=request(token="t-1")
    )
    stubs.fail(
        "ce", "get_cost_and_usage", "ThrottlingException", expected_params=request(token="t-1")
    )
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(day_result("2024-01-15", group("EC2", "us-east-1", "2", "2"))),
        expected_params=request(token="t-1"),
    )

    rows, _ = fetch_all(snapshot())

    # The first page was requested once (Stubber would fail on a repeat); page 2 three times.
    assert [r.billed for r in rows] == [Decimal("1"), Decimal("2")]
    assert len(stubs.sleeps) == 2


def test_aws_fetch_throttled_first_page_raises_provider_throttled(stubs):
    stubs.fail("ce", "get_cost_and_usage", "LimitExceededException", expected_params=request())

    with pytest.raises(ProviderThrottled):
        fetch_all(snapshot())
    assert stubs.sleeps == []  # nothing read yet: the task backs off instead of a worker


def test_aws_fetch_later_page_throttled_past_retries_raises_provider_throttled(stubs):
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(day_result("2024-01-14", group("EC2", "us-east-1", "1", "1")), token="t-1"),
    )
    for _ in range(aws.PAGE_RETRIES + 1):
        stubs.fail(
            "ce",
            "get_cost_and_usage",
            "LimitExceededException",
            expected_params=request(token="t-1"),
        )

    with pytest.raises(ProviderThrottled):
        fetch_all(snapshot())
    assert len(stubs.sleeps) == aws.PAGE_RETRIES


def test_aws_fetch_rejected_key_raises_actionable_error_without_secret(stubs):
    stubs.fail("ce", "get_cost_and_usage", "UnrecognizedClientException")

    with pytest.raises(ProviderError) as caught:
        fetch_all(snapshot())

    assert not isinstance(caught.value, ProviderThrottled)
    message = str(caught.value)
    assert "aws_access_key_id" in message and "aws_secret_access_key" in message
    assert KEYS["aws_secret_access_key"] not in message
    assert KEYS["aws_access_key_id"] not in message


def test_aws_fetch_access_denied_names_the_missing_permission(stubs):
    stubs.fail("ce", "get_cost_and_usage", "AccessDeniedException")

    with pytest.raises(ProviderError, match="ce:GetCostAndUsage"):
        fetch_all(snapshot())


def test_aws_fetch_assumes_role_with_external_id_from_server_identity(stubs):
    stubs.respond(
        "sts",
        "assume_role",
        {
            "Credentials": {
                "AccessKeyId": "ASIATEMPORARY0000001",
                "SecretAccessKey": "temporary-secret",
                "SessionToken": "temporary-session-token",
                "Expiration": "2024-01-16T00:00:00Z",
            },
            "AssumedRoleUser": {"AssumedRoleId": "AROAEXAMPLE:infraaudit-costs", "Arn": ROLE_ARN},
        },
        expected_params={
            "RoleArn": ROLE_ARN,
            "RoleSessionName": "infraaudit-costs",
            "ExternalId": "org-42-x1",
        },
    )
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(day_result("2024-01-14", group("EC2", "us-east-1", "5.5", "5.0"))),
    )

    provider = snapshot(
        config={"role_arn": ROLE_ARN, "external_id": "org-42-x1"}, credentials={}, ambient=False
    )
    rows, _ = fetch_all(provider)

    assert [r.billed for r in rows] == [Decimal("5.5")]
    # STS is called with the server's identity (no keys passed), Cost Explorer with the role's.
    assert stubs.credentials_of("sts") == {"region_name": "us-east-1"}
    assert stubs.credentials_of("ce") == {
        "region_name": "us-east-1",
        "aws_access_key_id": "ASIATEMPORARY0000001",
        "aws_secret_access_key": "temporary-secret",
        "aws_session_token": "temporary-session-token",
    }


def test_aws_fetch_assume_role_from_access_keys(stubs):
    stubs.respond(
        "sts",
        "assume_role",
        {
            "Credentials": {
                "AccessKeyId": "ASIATEMPORARY0000002",
                "SecretAccessKey": "s",
                "SessionToken": "t",
                "Expiration": "2024-01-16T00:00:00Z",
            }
        },
        expected_params={"RoleArn": ROLE_ARN, "RoleSessionName": "infraaudit-costs"},
    )
    stubs.respond("ce", "get_cost_and_usage", page())

    fetch_all(snapshot(config={"role_arn": ROLE_ARN, "region": "eu-west-1"}))

    assert stubs.credentials_of("sts") == {"region_name": "eu-west-1", **KEYS}
    assert stubs.credentials_of("ce")["aws_session_token"] == "t"


def test_aws_fetch_assume_role_denied_explains_trust_policy(stubs):
    stubs.fail("sts", "assume_role", "AccessDenied", status=403)

    provider = snapshot(config={"role_arn": ROLE_ARN, "external_id": "org-42-x1"}, credentials={})
    with pytest.raises(ProviderError) as caught:
        fetch_all(provider)

    message = str(caught.value)
    assert ROLE_ARN in message and "external_id" in message and "trust policy" in message
    assert "org-42-x1" not in message


def test_aws_fetch_without_credentials_asks_for_them(stubs):
    with pytest.raises(ProviderError) as caught:
        fetch_all(snapshot(credentials={}, ambient=False))

    assert "access key" in str(caught.value)
    assert "INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS" in str(caught.value)
    assert stubs.clients == []  # nothing was attempted with the server's identity


def test_aws_fetch_role_without_external_id_refuses_server_identity(stubs):
    with pytest.raises(ProviderError, match="external_id"):
        fetch_all(snapshot(config={"role_arn": ROLE_ARN}, credentials={}, ambient=False))
    assert stubs.clients == []


def test_aws_fetch_ambient_credentials_when_allowed(stubs):
    stubs.respond("ce", "get_cost_and_usage", page())

    fetch_all(snapshot(credentials={}, ambient=True))

    assert stubs.credentials_of("ce") == {"region_name": "us-east-1"}


def test_aws_fetch_stops_the_request_at_tomorrow(stubs):
    today = datetime.now(UTC).date()
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(),
        expected_params=request(
            start=today - timedelta(days=1), end_exclusive=(today + timedelta(days=1)).isoformat()
        ),
    )

    _, stats = fetch_all(
        snapshot(), start=today - timedelta(days=1), end=today + timedelta(days=40)
    )

    assert stats.date_to == today + timedelta(days=40)


def test_aws_fetch_window_in_the_future_requests_nothing(stubs):
    today = datetime.now(UTC).date()

    rows, _ = fetch_all(snapshot(), start=today + timedelta(days=2), end=today + timedelta(days=5))

    assert rows == []


def test_aws_fetch_empty_data_yields_nothing_but_covers_window(stubs):
    stubs.respond(
        "ce", "get_cost_and_usage", page(day_result("2024-01-14"), day_result("2024-01-15"))
    )

    rows, stats = fetch_all(snapshot())

    assert rows == []
    assert (stats.rows_read, stats.date_from, stats.date_to) == (0, START, END)


# --- through the sync service, into the database -------------------------------------


@pytest.fixture
def aws_provider(db):
    provider = ProviderFactory(kind="aws", config={"account_id": "123456789012"})
    provider.credentials = dict(KEYS)
    provider.save()
    return provider


@pytest.mark.django_db
def test_aws_sync_writes_cost_records(stubs, aws_provider):
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(
            day_result(
                "2024-01-14",
                group("EC2", "us-east-1", "10.123456789012", "9"),
                group("Support", "NoRegion", "1", "1"),
            ),
            token="t-1",
        ),
        expected_params=request(),
    )
    # Page 2 continues the same day and group: the sync sums rows per natural key.
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(day_result("2024-01-14", group("EC2", "us-east-1", "0.000000000001", "1"))),
        expected_params=request(token="t-1"),
    )

    outcome = cost_records_sync(provider=aws_provider, start=START, end=END)

    assert (outcome.rows_read, outcome.records_written) == (3, 2)
    assert records(aws_provider) == {
        (
            START,
            "EC2",
            "us-east-1",
            "123456789012",
            "USD",
            Decimal("10.123456789013"),
            Decimal("10"),
        ),
        (START, "Support", "global", "123456789012", "USD", Decimal("1"), Decimal("1")),
    }
    aws_provider.refresh_from_db()
    assert (aws_provider.coverage_start, aws_provider.coverage_end) == (START, END)


@pytest.mark.django_db
def test_aws_sync_restatement_ends_as_the_provider_now_reports(stubs, aws_provider):
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(
            day_result(
                "2024-01-14",
                group("EC2", "us-east-1", "10", "10"),
                group("S3", "us-east-1", "2", "2"),
            ),
            day_result("2024-01-15", group("EC2", "us-east-1", "11", "11")),
        ),
    )
    cost_records_sync(provider=aws_provider, start=START, end=END)
    # AWS restates: EC2 on the 14th changes, S3 disappears (refund), a new region appears.
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(
            day_result("2024-01-14", group("EC2", "us-east-1", "9.5", "8")),
            day_result(
                "2024-01-15",
                group("EC2", "us-east-1", "11", "11"),
                group("EC2", "eu-west-1", "0.25", "0.25"),
            ),
        ),
    )

    outcome = cost_records_sync(provider=aws_provider, start=START, end=END)

    assert outcome.changed
    assert records(aws_provider) == {
        (
            date(2024, 1, 14),
            "EC2",
            "us-east-1",
            "123456789012",
            "USD",
            Decimal("9.5"),
            Decimal("8"),
        ),
        (
            date(2024, 1, 15),
            "EC2",
            "us-east-1",
            "123456789012",
            "USD",
            Decimal("11"),
            Decimal("11"),
        ),
        (
            date(2024, 1, 15),
            "EC2",
            "eu-west-1",
            "123456789012",
            "USD",
            Decimal("0.25"),
            Decimal("0.25"),
        ),
    }


@pytest.mark.django_db
def test_aws_sync_empty_data_clears_the_window(stubs, aws_provider):
    stubs.respond(
        "ce",
        "get_cost_and_usage",
        page(day_result("2024-01-14", group("EC2", "us-east-1", "10", "10"))),
    )
    cost_records_sync(provider=aws_provider, start=START, end=END)
    stubs.respond(
        "ce", "get_cost_and_usage", page(day_result("2024-01-14"), day_result("2024-01-15"))
    )

    outcome = cost_records_sync(provider=aws_provider, start=START, end=END)

    assert (outcome.rows_read, outcome.records_written, outcome.changed) == (0, 0, True)
    assert records(aws_provider) == set()
