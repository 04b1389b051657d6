"""The BigQuery billing-export adapter against a real ``bigquery.Client``, with HTTP stubbed.

Nothing is faked above the transport: the adapter builds real service-account
credentials from a throwaway RSA key (so the JWT is really signed and exchanged at the
stubbed Google token endpoint) and a real BigQuery client whose REST calls
(jobs.query, jobs.get, jobs.getQueryResults) are answered by ``responses``. Any request
not stubbed fails the test, so nothing can reach the network.
"""

from __future__ import annotations

import json
import re
import time
from datetime import date
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from costs.services.sync import cost_records_sync
from providers.adapters import gcp
from providers.adapters.base import FetchStats, ProviderError, ProviderSnapshot, ProviderThrottled
from tests.factories import ProviderFactory
from tests.providers.records import records

TOKEN_URL = "https://oauth2.googleapis.com/token"
BQ = "https://bigquery.googleapis.com/bigquery/v2/projects/billing-admin"
TABLE = "billing-admin.billing.gcp_billing_export_v1_012345_6789AB_CDEF01"
START, END = date(2024, 1, 14), date(2024, 1, 15)
SCHEMA = {
    "fields": [
        {"name": "usage_day", "type": "DATE", "mode": "NULLABLE"},
        {"name": "service", "type": "STRING", "mode": "NULLABLE"},
        {"name": "region", "type": "STRING", "mode": "NULLABLE"},
        {"name": "account", "type": "STRING", "mode": "NULLABLE"},
        {"name": "currency", "type": "STRING", "mode": "NULLABLE"},
        {"name": "billed", "type": "NUMERIC", "mode": "NULLABLE"},
    ]
}


@pytest.fixture(scope="module")
def service_account_info() -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "billing-admin",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "costs-reader@billing-admin.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": TOKEN_URL,
    }


@pytest.fixture
def http():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def token(http):
    http.post(
        TOKEN_URL,
        json={"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"},
    )


@pytest.fixture
def no_sleep(monkeypatch):
    """The client's RPC retry sleeps between attempts; the tests do not wait."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


def snapshot(info, *, config=None, ambient=False) -> ProviderSnapshot:
    return ProviderSnapshot(
        id=2,
        name="GCP Production",
        kind="gcp",
        config={"billing_table": TABLE, "location": "EU", **(config or {})},
        credentials={"service_account_json": info} if info else {},
        allow_ambient_credentials=ambient,
    )


def cell(value):
    return {"v": value}


def bq_row(day, service, region, account, billed, currency="USD") -> dict:
    """A result row of the adapter's query (``billed``: cost net of credits)."""
    return {
        "f": [
            cell(day),
            cell(service),
            cell(region),
            cell(account),
            cell(currency),
            cell(billed),
        ]
    }


def first_page(*rows, total=None, page_token=None) -> dict:
    response = {
        "kind": "bigquery#queryResponse",
        "schema": SCHEMA,
        "jobReference": {"projectId": "billing-admin", "jobId": "job_costs_1", "location": "EU"},
        "totalRows": str(total if total is not None else len(rows)),
        "jobComplete": True,
        "cacheHit": False,
    }
    if rows:
        response["rows"] = list(rows)
    if page_token:
        response["pageToken"] = page_token
    return response


def stub_more_pages(http, *pages):
    """jobs.get (the client checks the job is done) then getQueryResults per later page."""
    http.get(
        f"{BQ}/jobs/job_costs_1",
        json={
            "kind": "bigquery#job",
            "jobReference": {
                "projectId": "billing-admin",
                "jobId": "job_costs_1",
                "location": "EU",
            },
            "configuration": {"query": {"query": "SELECT 1", "useLegacySql": False}},
            "status": {"state": "DONE"},
            "statistics": {"query": {"schema": SCHEMA}},
        },
    )
    for page in pages:
        http.get(f"{BQ}/queries/job_costs_1", json=page)


def bq_error(status: int, reason: str, message: str) -> dict:
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"reason": reason, "message": message, "domain": "global"}],
        }
    }


def fetch_all(provider, start=START, end=END):
    stats = FetchStats()
    rows = list(gcp.GcpBillingExportAdapter(provider).fetch(start=start, end=end, stats=stats))
    return rows, stats


def without_query(url: str) -> str:
    return url.split("?", 1)[0]


def sent_query(http) -> dict:
    call = next(c for c in http.calls if without_query(c.request.url) == f"{BQ}/queries")
    return json.loads(call.request.body)


def test_gcp_fetch_reads_exact_amounts_net_of_credits(http, token, service_account_info):
    http.post(
        f"{BQ}/queries",
        json=first_page(
            bq_row(
                "2024-01-14",
                "Compute Engine",
                "europe-west1",
                "shop-prod",
                "150.250000001",
            ),
            bq_row("2024-01-14", "Support", None, None, "12.34"),
            bq_row("2024-01-15", "Cloud Storage", "us", "shop-prod", "-0.05"),
        ),
    )

    rows, stats = fetch_all(snapshot(service_account_info))

    assert [
        (r.day, r.service, r.region, r.account, r.billed, r.effective, r.currency) for r in rows
    ] == [
        (
            date(2024, 1, 14),
            "Compute Engine",
            "europe-west1",
            "shop-prod",
            Decimal("150.250000001"),
            Decimal("150.250000001"),
            "USD",
        ),
        (date(2024, 1, 14), "Support", "global", "", Decimal("12.34"), Decimal("12.34"), "USD"),
        (
            date(2024, 1, 15),
            "Cloud Storage",
            "us",
            "shop-prod",
            Decimal("-0.05"),
            Decimal("-0.05"),
            "USD",
        ),
    ]
    assert all(type(r.billed) is Decimal and type(r.effective) is Decimal for r in rows)
    assert (stats.rows_read, stats.date_from, stats.date_to) == (3, START, END)
    # The bearer token is the one minted from the service-account JWT.
    assert http.calls[-1].request.headers["Authorization"] == "Bearer ya29.test-token"


def test_gcp_fetch_sends_a_parameterised_query_with_partition_filter(
    http, token, service_account_info
):
    http.post(f"{BQ}/queries", json=first_page())

    fetch_all(snapshot(service_account_info))

    body = sent_query(http)
    assert f"FROM `{TABLE}`" in body["query"]
    assert "_PARTITIONTIME >= TIMESTAMP(@partition_from)" in body["query"]
    assert "(SELECT SUM(CAST(c.amount AS NUMERIC)) FROM UNNEST(credits) AS c)" in body["query"]
    # billed is what the invoice charges, credits included, as AWS and FOCUS count it.
    billed = re.search(r"SUM\((.*?)\) AS billed", body["query"], re.S).group(1)
    assert "UNNEST(credits)" in billed
    assert "2024" not in body["query"]  # dates travel only as parameters
    params = {p["name"]: p["parameterValue"]["value"] for p in body["queryParameters"]}
    assert params == {
        "partition_from": "2024-01-11",  # slack: late and Pacific-time partitions
        "window_start": "2024-01-14",
        "window_end": "2024-01-16",  # exclusive
    }
    assert body["location"] == "EU"
    assert body["useLegacySql"] is False


def test_gcp_fetch_reads_every_result_page(http, token, service_account_info):
    http.post(
        f"{BQ}/queries",
        json=first_page(
            bq_row("2024-01-14", "Compute Engine", "europe-west1", "p", "1"),
            total=3,
            page_token="page-2",
        ),
    )
    stub_more_pages(
        http,
        {
            **first_page(
                bq_row("2024-01-14", "BigQuery", "EU", "p", "2"), total=3, page_token="page-3"
            )
        },
        {**first_page(bq_row("2024-01-15", "BigQuery", "EU", "p", "3"), total=3)},
    )

    rows, stats = fetch_all(snapshot(service_account_info))

    assert [r.billed for r in rows] == [Decimal("1"), Decimal("2"), Decimal("3")]
    assert stats.rows_read == 3
    tokens = [
        parse_qs(urlparse(c.request.url).query).get("pageToken")
        for c in http.calls
        if "/queries/job_costs_1" in c.request.url
    ]
    assert tokens == [["page-2"], ["page-3"]]


def test_gcp_fetch_retries_a_throttled_page_read_with_its_token(
    http, token, service_account_info, no_sleep
):
    http.post(
        f"{BQ}/queries",
        json=first_page(
            bq_row("2024-01-14", "Compute Engine", "europe-west1", "p", "1"),
            total=2,
            page_token="page-2",
        ),
    )
    stub_more_pages(http)
    http.get(
        f"{BQ}/queries/job_costs_1",
        status=429,
        json=bq_error(429, "rateLimitExceeded", "Exceeded rate limits"),
    )
    http.get(
        f"{BQ}/queries/job_costs_1",
        json=first_page(bq_row("2024-01-15", "BigQuery", "EU", "p", "2"), total=2),
    )

    rows, _ = fetch_all(snapshot(service_account_info))

    assert [r.billed for r in rows] == [Decimal("1"), Decimal("2")]
    assert len([c for c in http.calls if without_query(c.request.url) == f"{BQ}/queries"]) == 1
    page_calls = [c.request.url for c in http.calls if "/queries/job_costs_1" in c.request.url]
    assert len(page_calls) == 2 and all("pageToken=page-2" in url for url in page_calls)
    assert len(no_sleep) == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [(429, "rateLimitExceeded"), (403, "rateLimitExceeded"), (403, "quotaExceeded")],
)
def test_gcp_fetch_throttled_query_raises_provider_throttled(
    http, token, service_account_info, monkeypatch, no_sleep, status, reason
):
    monkeypatch.setattr(gcp, "RPC_RETRY_DEADLINE_SECONDS", 0)
    http.post(f"{BQ}/queries", status=status, json=bq_error(status, reason, "Exceeded rate limits"))

    with pytest.raises(ProviderThrottled):
        fetch_all(snapshot(service_account_info))


def test_gcp_fetch_rejected_key_raises_actionable_error(http, service_account_info):
    http.post(
        TOKEN_URL,
        status=400,
        json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
    )

    with pytest.raises(ProviderError) as caught:
        fetch_all(snapshot(service_account_info))

    message = str(caught.value)
    assert not isinstance(caught.value, ProviderThrottled)
    assert "costs-reader@billing-admin.iam.gserviceaccount.com" in message
    assert "service_account_json" in message
    assert "PRIVATE KEY" not in message


def test_gcp_fetch_access_denied_names_the_roles(http, token, service_account_info):
    http.post(
        f"{BQ}/queries",
        status=403,
        json=bq_error(
            403,
            "accessDenied",
            "Access Denied: Table billing-admin:billing.x: User does not have "
            "permission to query table",
        ),
    )

    with pytest.raises(ProviderError) as caught:
        fetch_all(snapshot(service_account_info))

    assert not isinstance(caught.value, ProviderThrottled)
    assert "roles/bigquery.dataViewer" in str(caught.value)
    assert "roles/bigquery.jobUser" in str(caught.value)


def test_gcp_fetch_missing_table_points_at_config(http, token, service_account_info):
    http.post(
        f"{BQ}/queries",
        status=404,
        json=bq_error(404, "notFound", f"Not found: Table {TABLE} was not found in location EU"),
    )

    with pytest.raises(ProviderError) as caught:
        fetch_all(snapshot(service_account_info))

    assert "config.billing_table" in str(caught.value)
    assert "config.location" in str(caught.value)


def test_gcp_fetch_without_credentials_asks_for_them(http):
    with pytest.raises(ProviderError) as caught:
        fetch_all(snapshot(None, ambient=False))

    assert "service_account_json" in str(caught.value)
    assert "INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS" in str(caught.value)


def test_gcp_fetch_refuses_a_table_name_that_could_inject_sql(http, service_account_info):
    provider = snapshot(
        service_account_info, config={"billing_table": "p-roject.d.t` WHERE TRUE; --"}
    )

    with pytest.raises(ProviderError, match="billing_table"):
        fetch_all(provider)


def test_gcp_fetch_empty_data_yields_nothing_but_covers_window(http, token, service_account_info):
    http.post(f"{BQ}/queries", json=first_page(total=0))

    rows, stats = fetch_all(snapshot(service_account_info))

    assert rows == []
    assert (stats.rows_read, stats.date_from, stats.date_to) == (0, START, END)


def test_gcp_fetch_bills_the_configured_project(http, token, service_account_info):
    url = "https://bigquery.googleapis.com/bigquery/v2/projects/finops-jobs/queries"
    http.post(url, json=first_page())

    fetch_all(snapshot(service_account_info, config={"project_id": "finops-jobs"}))

    assert without_query(http.calls[-1].request.url) == url


# --- through the sync service, into the database -------------------------------------


@pytest.fixture
def gcp_provider(db, service_account_info):
    provider = ProviderFactory(kind="gcp", config={"billing_table": TABLE, "location": "EU"})
    provider.credentials = {"service_account_json": service_account_info}
    provider.save()
    return provider


@pytest.mark.django_db
def test_gcp_sync_writes_cost_records(http, token, gcp_provider):
    http.post(
        f"{BQ}/queries",
        json=first_page(
            bq_row("2024-01-14", "Compute Engine", "europe-west1", "shop-prod", "9.25"),
            bq_row("2024-01-14", "Support", None, None, "1"),
            total=3,
            page_token="page-2",
        ),
    )
    stub_more_pages(
        http,
        first_page(
            bq_row("2024-01-14", "Compute Engine", "europe-west1", "shop-prod", "0.000000001"),
            total=3,
        ),
    )

    outcome = cost_records_sync(provider=gcp_provider, start=START, end=END)

    assert (outcome.rows_read, outcome.records_written) == (3, 2)
    assert records(gcp_provider) == {
        (
            START,
            "Compute Engine",
            "europe-west1",
            "shop-prod",
            "USD",
            Decimal("9.250000001"),
            Decimal("9.250000001"),
        ),
        (START, "Support", "global", "", "USD", Decimal("1"), Decimal("1")),
    }


@pytest.mark.django_db
def test_gcp_sync_restatement_ends_as_the_export_now_reports(http, gcp_provider):
    http.post(TOKEN_URL, json={"access_token": "ya29.a", "expires_in": 3600})
    http.post(
        f"{BQ}/queries",
        json=first_page(
            bq_row("2024-01-14", "Compute Engine", "europe-west1", "p", "10"),
            bq_row("2024-01-15", "Cloud Storage", "us", "p", "3"),
        ),
    )
    cost_records_sync(provider=gcp_provider, start=START, end=END)
    # Late rows and credits landed: the 14th gains a credit, storage on the 15th is gone.
    http.post(TOKEN_URL, json={"access_token": "ya29.b", "expires_in": 3600})
    http.post(
        f"{BQ}/queries",
        json=first_page(
            bq_row("2024-01-14", "Compute Engine", "europe-west1", "p", "7.5"),
            bq_row("2024-01-15", "Compute Engine", "europe-west1", "p", "4"),
        ),
    )

    outcome = cost_records_sync(provider=gcp_provider, start=START, end=END)

    assert outcome.changed
    assert records(gcp_provider) == {
        (
            date(2024, 1, 14),
            "Compute Engine",
            "europe-west1",
            "p",
            "USD",
            Decimal("7.5"),
            Decimal("7.5"),
        ),
        (
            date(2024, 1, 15),
            "Compute Engine",
            "europe-west1",
            "p",
            "USD",
            Decimal("4"),
            Decimal("4"),
        ),
    }


def test_gcp_fetch_asks_only_google_for_a_token_whatever_the_key_file_says(
    http, token, service_account_info
):
    # A key file is tenant input: its token_uri pointed the worker at any address (an
    # internal service received the signed assertion; a closed port retried, an open one
    # did not). responses refuses every request it was not told about, so a request to
    # the address in the file would fail this test.
    http.post(f"{BQ}/queries", json=first_page(bq_row("2024-01-14", "Support", None, None, "1")))
    stored = {**service_account_info, "token_uri": "http://127.0.0.1:9/internal/reset",
              "universe_domain": "evil.example"}
    rows, _ = fetch_all(snapshot(stored))
    assert [row.service for row in rows] == ["Support"]
    assert http.calls[0].request.url == TOKEN_URL


@pytest.mark.django_db
@pytest.mark.parametrize(("key", "value"), [("token_uri", "http://127.0.0.1:9/x"),
                                            ("universe_domain", "evil.example")])
def test_gcp_provider_key_file_naming_another_token_address_is_400(
    api, service_account_info, key, value
):
    response = api.post("/api/v1/providers", {
        "name": "GCP", "kind": "gcp",
        "config": {"billing_table": "billing-admin.billing.gcp_billing_export_v1_0A"},
        "credentials": {"service_account_json": {**service_account_info, key: value}},
    }, format="json")
    assert response.status_code == 400
    assert f"{key} must be Google's" in response.json()["details"]["credentials"][
        "service_account_json"][0]
