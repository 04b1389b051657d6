"""The Cost Management adapter with a real azure-core pipeline and a real
``ClientSecretCredential``, their HTTP answered by ``responses``.

The credential really fetches its token from the (stubbed) Azure AD endpoints, and the
adapter's PipelineClient really sends the queries through azure-core's transport; only
the wire is fake. Any request not stubbed fails, so nothing reaches the network.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal

import pytest
import requests
import responses

from costs.services.sync import cost_records_sync
from providers.adapters import azure
from providers.adapters.base import FetchStats, ProviderError, ProviderSnapshot, ProviderThrottled
from tests.factories import ProviderFactory
from tests.providers.records import records

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
CREDENTIALS = {
    "tenant_id": TENANT,
    "client_id": "a1b2c3d4-client",
    "client_secret": "Sup3r~Secret.Value",
}
AUTHORITY = f"https://login.microsoftonline.com/{TENANT}"
QUERY_URL = (
    f"https://management.azure.com/subscriptions/{SUBSCRIPTION}"
    "/providers/Microsoft.CostManagement/query?api-version=2023-03-01"
)
START, END = date(2024, 1, 14), date(2024, 1, 15)
COLUMNS = [
    {"name": "Cost", "type": "Number"},
    {"name": "UsageDate", "type": "Number"},
    {"name": "ServiceName", "type": "String"},
    {"name": "ResourceLocation", "type": "String"},
    {"name": "Currency", "type": "String"},
]


@pytest.fixture
def http():
    # Token endpoints may be cached by MSAL between calls, so "all fired" is not asserted
    # globally; tests count the Cost Management calls themselves.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def aad(http):
    """Azure AD for the tenant: discovery document and token endpoint."""
    http.get(
        f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
        json={
            "token_endpoint": f"{AUTHORITY}/oauth2/v2.0/token",
            "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
            "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        },
    )
    http.post(
        f"{AUTHORITY}/oauth2/v2.0/token",
        json={"token_type": "Bearer", "expires_in": 3599, "access_token": "eyJ0eXAi.test.token"},
    )


@pytest.fixture
def sleeps(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(azure, "_sleep", slept.append)
    return slept


def snapshot(*, credentials=None, ambient=False) -> ProviderSnapshot:
    return ProviderSnapshot(
        id=3,
        name="Azure Production",
        kind="azure",
        config={"subscription_id": SUBSCRIPTION},
        credentials=CREDENTIALS if credentials is None else credentials,
        allow_ambient_credentials=ambient,
    )


def result(*rows, next_link=None) -> dict:
    return {
        "id": f"subscriptions/{SUBSCRIPTION}/providers/Microsoft.CostManagement/query/q-1",
        "name": "q-1",
        "type": "Microsoft.CostManagement/query",
        "location": None,
        "sku": None,
        "eTag": None,
        "properties": {"nextLink": next_link, "columns": COLUMNS, "rows": [list(r) for r in rows]},
    }


def answer(http, url: str, payload: dict | str, status: int = 200, headers=None):
    http.post(
        url,
        body=payload if isinstance(payload, str) else json.dumps(payload),
        status=status,
        headers=headers or {},
        content_type="application/json",
    )


def cost_calls(http) -> list:
    return [c for c in http.calls if c.request.url.startswith("https://management.azure.com/")]


def bodies(http) -> list[dict]:
    return [json.loads(c.request.body) for c in cost_calls(http)]


def fetch_all(provider, start=START, end=END):
    stats = FetchStats()
    rows = list(azure.AzureCostManagementAdapter(provider).fetch(start=start, end=end, stats=stats))
    return rows, stats


def test_azure_fetch_reads_actual_and_amortized_costs_exactly(http, aad):
    # More digits than a float holds: the amount must survive exactly.
    actual = json.dumps(result(next_link=None)).replace(
        '"rows": []',
        '"rows": [[12.345678901234567891, 20240114, "Virtual Machines", "EastUS", "USD"],'
        ' [3, 20240114, "Azure DNS", "", "USD"], [0.5, 20240115, "Storage", "Unassigned", "USD"]]',
    )
    answer(http, QUERY_URL, actual)
    answer(http, QUERY_URL, result([10.25, 20240114, "Virtual Machines", "eastus", "USD"]))

    rows, stats = fetch_all(snapshot())

    assert [(r.day, r.service, r.region, r.billed, r.effective) for r in rows] == [
        (
            date(2024, 1, 14),
            "Virtual Machines",
            "eastus",
            Decimal("12.345678901234567891"),
            Decimal(0),
        ),
        (date(2024, 1, 14), "Azure DNS", "global", Decimal(3), Decimal(0)),
        (date(2024, 1, 15), "Storage", "global", Decimal("0.5"), Decimal(0)),
        (date(2024, 1, 14), "Virtual Machines", "eastus", Decimal(0), Decimal("10.25")),
    ]
    assert {(r.account, r.currency) for r in rows} == {(SUBSCRIPTION, "USD")}
    assert (stats.rows_read, stats.date_from, stats.date_to) == (4, START, END)
    actual_body, amortized_body = bodies(http)
    assert actual_body == {
        "type": "ActualCost",
        "timeframe": "Custom",
        "timePeriod": {"from": "2024-01-14T00:00:00Z", "to": "2024-01-15T23:59:59Z"},
        "dataset": {
            "granularity": "Daily",
            "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
            "grouping": [
                {"type": "Dimension", "name": "ServiceName"},
                {"type": "Dimension", "name": "ResourceLocation"},
            ],
        },
    }
    assert amortized_body == {**actual_body, "type": "AmortizedCost"}
    assert all(
        c.request.headers["Authorization"] == "Bearer eyJ0eXAi.test.token" for c in cost_calls(http)
    )


def test_azure_fetch_follows_next_link_with_the_same_body(http, aad):
    page_2 = QUERY_URL + "&$skiptoken=AAAA"
    answer(http, QUERY_URL, result([1, 20240114, "VM", "eastus", "USD"], next_link=page_2))
    answer(http, page_2, result([2, 20240115, "VM", "eastus", "USD"]))
    answer(http, QUERY_URL, result([3, 20240114, "VM", "eastus", "USD"]))

    rows, _ = fetch_all(snapshot())

    assert [(r.billed, r.effective) for r in rows] == [
        (Decimal(1), Decimal(0)),
        (Decimal(2), Decimal(0)),
        (Decimal(0), Decimal(3)),
    ]
    calls = cost_calls(http)
    assert [c.request.url for c in calls] == [QUERY_URL, page_2, QUERY_URL]
    assert calls[0].request.body == calls[1].request.body


def test_azure_fetch_splits_the_window_at_months(http, aad):
    for _ in range(4):
        answer(http, QUERY_URL, result())

    fetch_all(snapshot(), start=date(2024, 1, 30), end=date(2024, 2, 2))

    assert [(b["type"], b["timePeriod"]) for b in bodies(http)] == [
        ("ActualCost", {"from": "2024-01-30T00:00:00Z", "to": "2024-01-31T23:59:59Z"}),
        ("ActualCost", {"from": "2024-02-01T00:00:00Z", "to": "2024-02-02T23:59:59Z"}),
        ("AmortizedCost", {"from": "2024-01-30T00:00:00Z", "to": "2024-01-31T23:59:59Z"}),
        ("AmortizedCost", {"from": "2024-02-01T00:00:00Z", "to": "2024-02-02T23:59:59Z"}),
    ]


def test_azure_fetch_throttled_first_page_raises_with_retry_after(http, aad, sleeps):
    answer(
        http,
        QUERY_URL,
        {"error": {"code": "429", "message": "Too many requests"}},
        status=429,
        headers={
            "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "25",
            "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after": "40",
        },
    )

    with pytest.raises(ProviderThrottled) as caught:
        fetch_all(snapshot())

    assert caught.value.retry_after == 40
    assert sleeps == []
    assert len(cost_calls(http)) == 1  # azure-core did not retry the 429 behind our back


def test_azure_fetch_throttled_without_costmanagement_header_uses_retry_after(http, aad, sleeps):
    answer(
        http,
        QUERY_URL,
        {"error": {"code": "429", "message": "Too many requests"}},
        status=429,
        headers={"Retry-After": "7"},
    )

    with pytest.raises(ProviderThrottled) as caught:
        fetch_all(snapshot())

    assert caught.value.retry_after == 7


def test_azure_fetch_retries_a_throttled_later_page_in_place(http, aad, sleeps):
    page_2 = QUERY_URL + "&$skiptoken=BBBB"
    answer(http, QUERY_URL, result([1, 20240114, "VM", "eastus", "USD"], next_link=page_2))
    answer(
        http,
        page_2,
        {"error": {"code": "429"}},
        status=429,
        headers={"x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "5"},
    )
    answer(http, page_2, result([2, 20240115, "VM", "eastus", "USD"]))
    answer(http, QUERY_URL, result())

    rows, _ = fetch_all(snapshot())

    assert [r.billed for r in rows] == [Decimal(1), Decimal(2)]
    assert sleeps == [5.0]
    assert [c.request.url for c in cost_calls(http)] == [QUERY_URL, page_2, page_2, QUERY_URL]


def test_azure_fetch_later_page_throttled_too_long_raises_provider_throttled(http, aad, sleeps):
    page_2 = QUERY_URL + "&$skiptoken=CCCC"
    answer(http, QUERY_URL, result([1, 20240114, "VM", "eastus", "USD"], next_link=page_2))
    answer(http, page_2, {"error": {"code": "429"}}, status=429, headers={"Retry-After": "300"})

    with pytest.raises(ProviderThrottled) as caught:
        fetch_all(snapshot())

    assert caught.value.retry_after == 300
    assert sleeps == []  # a wait that long is left to the task's backoff


def test_azure_fetch_forbidden_names_the_missing_role(http, aad):
    answer(
        http,
        QUERY_URL,
        {
            "error": {
                "code": "RBACAccessDenied",
                "message": "The client does not have authorization to perform action.",
            }
        },
        status=403,
    )

    with pytest.raises(ProviderError) as caught:
        fetch_all(snapshot())

    message = str(caught.value)
    assert not isinstance(caught.value, ProviderThrottled)
    assert "Cost Management Reader" in message and SUBSCRIPTION in message
    assert CREDENTIALS["client_id"] in message
    assert CREDENTIALS["client_secret"] not in message and "eyJ0eXAi" not in message


def test_azure_fetch_rejected_secret_raises_actionable_error(http):
    http.get(
        f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
        json={
            "token_endpoint": f"{AUTHORITY}/oauth2/v2.0/token",
            "authorization_endpoint": f"{AUTHORITY}/oauth2/v2.0/authorize",
            "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        },
    )
    # On a token error MSAL validates the authority through instance discovery.
    http.get(
        "https://login.microsoftonline.com/common/discovery/instance",
        json={
            "tenant_discovery_endpoint": f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [
                {
                    "preferred_network": "login.microsoftonline.com",
                    "preferred_cache": "login.windows.net",
                    "aliases": ["login.microsoftonline.com", "login.windows.net"],
                }
            ],
        },
    )
    http.post(
        f"{AUTHORITY}/oauth2/v2.0/token",
        status=401,
        json={
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.",
            "error_codes": [7000215],
        },
    )

    with pytest.raises(ProviderError) as caught:
        fetch_all(snapshot())

    message = str(caught.value)
    assert "AADSTS7000215" in message and "client_secret" in message
    assert CREDENTIALS["client_secret"] not in message
    assert cost_calls(http) == []


def test_azure_fetch_unreachable_sign_in_is_transient_not_a_rejected_secret(http):
    http.get(
        f"{AUTHORITY}/v2.0/.well-known/openid-configuration",
        body=requests.exceptions.ConnectionError("Failed to resolve 'login.microsoftonline.com'"),
    )

    with pytest.raises(ProviderThrottled) as caught:
        fetch_all(snapshot())

    assert "could not reach Azure AD" in str(caught.value)
    assert "client_secret" not in str(caught.value)
    assert cost_calls(http) == []


def test_azure_fetch_without_credentials_asks_for_them(http):
    with pytest.raises(ProviderError) as caught:
        fetch_all(snapshot(credentials={}, ambient=False))

    assert "client_secret" in str(caught.value)
    assert "INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS" in str(caught.value)
    assert len(http.calls) == 0


def test_azure_fetch_refuses_a_next_link_outside_azure(http, aad):
    answer(http, QUERY_URL, result(next_link="https://attacker.example/steal?api-version=1"))

    with pytest.raises(ProviderError, match="nextLink"):
        fetch_all(snapshot())

    assert all("attacker" not in c.request.url for c in http.calls)


def test_azure_fetch_empty_data_yields_nothing_but_covers_window(http, aad):
    answer(http, QUERY_URL, result())
    answer(http, QUERY_URL, result())

    rows, stats = fetch_all(snapshot())

    assert rows == []
    assert (stats.rows_read, stats.date_from, stats.date_to) == (0, START, END)


# --- through the sync service, into the database -------------------------------------


@pytest.fixture
def azure_provider(db):
    provider = ProviderFactory(kind="azure", config={"subscription_id": SUBSCRIPTION})
    provider.credentials = dict(CREDENTIALS)
    provider.save()
    return provider


@pytest.mark.django_db
def test_azure_sync_merges_actual_and_amortized_into_records(http, aad, azure_provider):
    # A reservation bought on the 14th: billed that day, amortized over the days.
    answer(
        http,
        QUERY_URL,
        result(
            [100, 20240114, "Reservations", "eastus", "USD"],
            [2.5, 20240114, "Virtual Machines", "eastus", "USD"],
        ),
    )
    answer(
        http,
        QUERY_URL,
        result(
            [1.2, 20240114, "Virtual Machines", "EastUS", "USD"],
            [1.2, 20240115, "Virtual Machines", "eastus", "USD"],
        ),
    )

    outcome = cost_records_sync(provider=azure_provider, start=START, end=END)

    assert (outcome.rows_read, outcome.records_written) == (4, 3)
    assert records(azure_provider) == {
        (START, "Reservations", "eastus", SUBSCRIPTION, "USD", Decimal(100), Decimal(0)),
        (START, "Virtual Machines", "eastus", SUBSCRIPTION, "USD", Decimal("2.5"), Decimal("1.2")),
        (END, "Virtual Machines", "eastus", SUBSCRIPTION, "USD", Decimal(0), Decimal("1.2")),
    }


@pytest.mark.django_db
def test_azure_sync_restatement_ends_as_azure_now_reports(http, aad, azure_provider):
    answer(
        http,
        QUERY_URL,
        result(
            [5, 20240114, "Storage", "westeurope", "EUR"],
            [6, 20240115, "Storage", "westeurope", "EUR"],
        ),
    )
    answer(http, QUERY_URL, result([5, 20240114, "Storage", "westeurope", "EUR"]))
    cost_records_sync(provider=azure_provider, start=START, end=END)
    # Azure restates the 14th and drops the 15th's charge.
    answer(http, QUERY_URL, result([4.75, 20240114, "Storage", "westeurope", "EUR"]))
    answer(http, QUERY_URL, result([4.75, 20240114, "Storage", "westeurope", "EUR"]))

    outcome = cost_records_sync(provider=azure_provider, start=START, end=END)

    assert outcome.changed
    assert records(azure_provider) == {
        (START, "Storage", "westeurope", SUBSCRIPTION, "EUR", Decimal("4.75"), Decimal("4.75")),
    }
    assert re.fullmatch(r"[0-9a-f-]{36}", SUBSCRIPTION)


def test_azure_fetch_long_retry_after_on_a_5xx_goes_back_to_celery(http, aad, monkeypatch):
    # azure-core slept a 503's whole Retry-After in place, three times: 3,600 s of a
    # worker, past the sync's time limit, before the adapter saw the answer.
    import time

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    for _ in range(4):
        answer(http, QUERY_URL, {"error": {"code": "ServiceUnavailable", "message": "busy"}},
               status=503, headers={"Retry-After": "1200"})

    with pytest.raises(ProviderThrottled) as raised:
        fetch_all(snapshot())

    assert raised.value.retry_after == 1200
    assert sum(slept) <= azure.MAX_INLINE_WAIT


def test_azure_fetch_malformed_tenant_id_says_what_to_fix(http):
    # The job said only "internal error (ValueError)".
    with pytest.raises(ProviderError, match=r"credentials\.tenant_id"):
        fetch_all(snapshot(credentials={**CREDENTIALS, "tenant_id": "contoso tenant"}))
    assert cost_calls(http) == []
