"""Inputs at the edges of the cost API: bodies that are not usable JSON objects (deeply
nested, too large, arrays or scalars), query values in forms Python's int()/float() take
but a client does not mean, empty values, page sizes; the anomaly list's pagination
envelope; the several-currencies 422 of a provider-scoped request; and an OpenAPI schema
that has every key the real responses have."""

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache

from costs.models import Anomaly, CostRecord, SyncJob
from tests.factories import (
    AnomalyFactory,
    CostRecordFactory,
    ProviderFactory,
    SyncJobFactory,
    SyncJobProviderFactory,
)

TODAY = date(2024, 7, 10)
YESTERDAY = TODAY - timedelta(days=1)
SYNC = "/api/v1/costs/sync"
ANOMALIES = "/api/v1/costs/anomalies"
TREND = "/api/v1/costs/trend"
FORECAST = "/api/v1/costs/forecast"
PROVIDERS = "/api/v1/providers"
ERROR_KEYS = {"error", "code", "details"}


@pytest.fixture(autouse=True)
def today(request, monkeypatch):
    monkeypatch.setattr("costs.selectors.utc_today", lambda: TODAY)
    uses_db = request.node.get_closest_marker("django_db") is not None
    if uses_db:
        cache.clear()  # forecasts are cached per scope and day
    yield
    if uses_db:
        cache.clear()


@pytest.fixture
def anomaly(org):
    return AnomalyFactory(provider=ProviderFactory(organization=org), date=YESTERDAY)


def _dismiss_url(anomaly) -> str:
    return f"{ANOMALIES}/{anomaly.id}/dismiss"


def _error(response, status, code=None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_KEYS
    if code is not None:
        assert body["code"] == code
    return body


def _seed(provider, start: date, end: date, currency="USD", amount="100"):
    records, day = [], start
    while day <= end:
        records.append(
            CostRecord(
                organization=provider.organization, provider=provider, day=day, service="EC2",
                billing_period=day.replace(day=1),
                region="us-east-1", currency=currency, billed_amount=Decimal(amount),
                effective_amount=Decimal(amount),
            )
        )
        day += timedelta(days=1)
    CostRecord.objects.bulk_create(records)


# --- deeply nested JSON ----------------------------------------------------------------


def _deep(levels: int) -> str:
    return '{"provider_id": 1, "a": ' + "[" * levels + "]" * levels + "}"


@pytest.mark.django_db
@pytest.mark.parametrize("levels", [100_000, 1_000, 65])
def test_deeply_nested_body_is_400_not_500(api, anomaly, levels):
    for url in (SYNC, _dismiss_url(anomaly), PROVIDERS):
        response = api.post(url, _deep(levels), content_type="application/json")
        body = _error(response, 400, "INVALID_BODY")
        assert "JSON nested too deeply" in body["error"]
        assert list(body["details"]) == ["body"]
    assert not SyncJob.objects.exists()
    anomaly.refresh_from_db()
    assert anomaly.status == Anomaly.Status.ACTIVE


@pytest.mark.django_db
def test_nested_body_within_the_limit_still_parses(api, anomaly):
    reason = {"reason": "Planned migration", "extra": json.loads("[" * 60 + "]" * 60)}
    response = api.post(_dismiss_url(anomaly), reason, format="json")
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_malformed_json_is_still_400(api):
    response = api.post(SYNC, '{"provider_id": ', content_type="application/json")
    body = _error(response, 400, "INVALID_BODY")
    assert "JSON parse error" in body["error"]
    assert "JSON parse error" in body["details"]["body"][0]


# --- bodies that are not JSON objects --------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["[]", "null", "5", '"x"', "true", "[{\"provider_id\": 1}]"])
def test_sync_body_not_an_object_is_400_and_syncs_nothing(api, org, raw):
    ProviderFactory(organization=org)
    response = api.post(SYNC, raw, content_type="application/json")
    body = _error(response, 400, "INVALID_BODY")
    assert body["error"] == "the request body must be a JSON object"
    assert body["details"] == {"non_field_errors": ["the request body must be a JSON object"]}
    assert not SyncJob.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["", "{}"])
def test_sync_empty_body_or_empty_object_still_syncs_all_providers(api, org, raw):
    ProviderFactory(organization=org, kind="aws", config={"region": "us-east-1"})
    response = api.post(SYNC, raw, content_type="application/json")
    assert response.status_code == 202, response.content
    assert SyncJob.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["[]", "null", "5", '"Planned migration"'])
def test_dismiss_body_not_an_object_is_400_not_reason_required(api, anomaly, raw):
    response = api.post(_dismiss_url(anomaly), raw, content_type="application/json")
    body = _error(response, 400, "INVALID_BODY")
    assert body["error"] == "the request body must be a JSON object"
    assert "reason" not in body["details"]
    anomaly.refresh_from_db()
    assert anomaly.status == Anomaly.Status.ACTIVE


# --- bodies over DATA_UPLOAD_MAX_MEMORY_SIZE ---------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_body_over_the_memory_limit_is_413_json(api, anomaly, settings, debug):
    settings.DEBUG = debug
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    raw = json.dumps({"reason": "x", "pad": "x" * (limit + 1)})
    for url in (SYNC, _dismiss_url(anomaly)):
        response = api.post(url, raw, content_type="application/json")
        body = _error(response, 413, "PAYLOAD_TOO_LARGE")
        assert str(limit) in body["error"] and "larger" in body["error"]
        assert body["details"] == {"max_bytes": limit}
    assert not SyncJob.objects.exists()


# --- query values ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "param", "value"),
    [
        (TREND, "days", "\u0667"),  # Arabic-Indic 7
        (TREND, "days", "\uff17"),  # fullwidth 7
        (TREND, "days", "+7"),
        (TREND, "days", " 7"),
        (TREND, "days", "7 "),
        (TREND, "days", "1_0"),
        (TREND, "days", "7.0"),
        (TREND, "provider_id", "1.0"),
        (TREND, "provider_id", "\u0661"),
        (ANOMALIES, "days", "\uff17"),
        (ANOMALIES, "provider_id", "+1"),
        (FORECAST, "provider_id", "1.0"),
        (FORECAST, "interval_level", "\uff10.9"),  # fullwidth 0
        (FORECAST, "interval_level", "0.\u0669"),
        (FORECAST, "interval_level", "+0.9"),
        (FORECAST, "interval_level", " 0.9"),
        (FORECAST, "interval_level", "9e-1"),
        (FORECAST, "interval_level", "0_9"),
    ],
)
def test_number_in_another_written_form_is_400_naming_ascii_digits(api, url, param, value):
    response = api.get(url, {param: value})
    body = _error(response, 400, "INVALID_PARAMETER")
    assert list(body["details"]) == [param]
    (message,) = body["details"][param]
    assert "ASCII digits" in message
    if param in ("days", "interval_level"):  # still says the range, as every rejection does
        assert message.startswith("must be between ")


@pytest.mark.django_db
def test_days_form_message_names_range_and_digits(api):
    body = api.get(TREND, {"days": "\u0667"}).json()
    assert body["details"] == {"days": ["must be between 1 and 3650, written in ASCII digits"]}


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["days=7", "days=3650", "days=1"])
def test_ascii_days_still_work(api, query):
    assert api.get(f"{TREND}?{query}").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "param"),
    [
        (TREND, "days"),
        (TREND, "granularity"),
        (TREND, "group_by"),
        (TREND, "provider_id"),
        (ANOMALIES, "days"),
        (ANOMALIES, "status"),
        (ANOMALIES, "provider_id"),
        (FORECAST, "days"),
        (FORECAST, "interval_level"),
        (FORECAST, "provider_id"),
        (ANOMALIES, "page"),
        (ANOMALIES, "page_size"),
        (PROVIDERS, "page_size"),
        (PROVIDERS, "kind"),
        (PROVIDERS, "is_active"),
    ],
)
def test_empty_known_parameter_is_400_must_not_be_empty(api, url, param):
    body = _error(api.get(f"{url}?{param}="), 400, "INVALID_PARAMETER")
    assert body["details"] == {param: ["must not be empty"]}


@pytest.mark.django_db
def test_empty_values_are_all_named_with_other_bad_ones(api):
    body = api.get(f"{TREND}?days=&granularity=hour&provider_id=").json()
    assert body["details"] == {
        "days": ["must not be empty"],
        "granularity": body["details"]["granularity"],
        "provider_id": ["must not be empty"],
    }


@pytest.mark.django_db
def test_unknown_empty_parameter_is_still_ignored(api):
    assert api.get(f"{TREND}?color=").status_code == 200


# --- pagination ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", [ANOMALIES, PROVIDERS])
@pytest.mark.parametrize("size", ["0", "-1", "abc", "1001", "1.5", "\u0667", "+5", " 5"])
def test_bad_page_size_is_400_naming_it_and_its_range(api, url, size):
    body = _error(api.get(url, {"page_size": size}), 400, "INVALID_PARAMETER")
    assert body["details"] == {"page_size": ["must be an integer between 1 and 1000"]}


@pytest.mark.django_db
@pytest.mark.parametrize("url", [ANOMALIES, PROVIDERS])
@pytest.mark.parametrize("page", ["\u0667", "\u00b2", "\uff11"])  # Arabic-Indic 7, superscript 2, fullwidth 1
def test_page_in_other_digits_is_400_not_accepted_or_500(api, url, page):
    body = _error(api.get(url, {"page": page}), 400, "INVALID_PARAMETER")
    assert body["details"] == {"page": ["must be a positive integer"]}


@pytest.mark.django_db
@pytest.mark.parametrize("url", [ANOMALIES, PROVIDERS])
def test_good_page_size_still_works(api, org, url):
    for day in (1, 2, 3):
        AnomalyFactory(provider=ProviderFactory(organization=org), date=TODAY - timedelta(days=day))
    response = api.get(url, {"page_size": "2"})
    assert response.status_code == 200
    items = response.json()["data" if url == ANOMALIES else "results"]
    assert len(items) == 2
    assert api.get(url, {"page_size": "1000"}).status_code == 200


@pytest.mark.django_db
def test_anomaly_list_envelope_matches_the_provider_list(api, org):
    for day in (1, 2, 3):
        provider = ProviderFactory(organization=org)
        AnomalyFactory(provider=provider, date=TODAY - timedelta(days=day))
    anomalies = api.get(ANOMALIES, {"page_size": 1, "page": 2}).json()
    providers = api.get(PROVIDERS, {"page_size": 1, "page": 2}).json()
    # The items are under "data" (API.md); the links and the count are the providers' ones.
    assert set(anomalies) - {"data"} == set(providers) - {"results"} == {
        "count", "next", "previous"
    }
    assert anomalies["count"] == 3
    assert anomalies["previous"].endswith("page_size=1")
    assert "page=3" in anomalies["next"]
    first = api.get(ANOMALIES, {"page_size": 1}).json()
    assert first["previous"] is None


# --- several currencies in one provider ------------------------------------------------


@pytest.fixture
def mixed(org):
    """One provider billed in USD, then in EUR."""
    provider = ProviderFactory(organization=org, name="Mixed")
    _seed(provider, YESTERDAY - timedelta(days=119), YESTERDAY - timedelta(days=10))
    _seed(provider, YESTERDAY - timedelta(days=9), YESTERDAY, currency="EUR")
    return provider


@pytest.mark.django_db
@pytest.mark.parametrize("url", [TREND, FORECAST])
def test_scoped_several_currencies_422_does_not_ask_for_provider_id(api, mixed, url):
    body = _error(api.get(url, {"provider_id": mixed.id}), 422, "MIXED_CURRENCIES")
    assert "scope the request with provider_id" not in body["error"]
    assert f"provider {mixed.id}" in body["error"] and "EUR, USD" in body["error"]
    assert body["details"] == {"currencies": ["EUR", "USD"], "provider_id": mixed.id}


@pytest.mark.django_db
def test_trend_of_a_window_in_one_currency_still_answers(api, mixed):
    response = api.get(TREND, {"provider_id": mixed.id, "days": 5})
    assert response.status_code == 200
    assert response.json()["currency"] == "EUR"


@pytest.mark.django_db
def test_unscoped_several_currencies_422_still_asks_for_provider_id(api, org):
    usd, eur = ProviderFactory(organization=org), ProviderFactory(organization=org)
    CostRecordFactory(provider=usd, day=YESTERDAY)
    CostRecordFactory(provider=eur, day=YESTERDAY, currency="EUR")
    body = _error(api.get(TREND), 422, "MIXED_CURRENCIES")
    assert "scope the request with provider_id" in body["error"]


# --- the OpenAPI schema against real responses -------------------------------------------


_TYPES = {
    "integer": int,
    "number": (int, float),
    "string": str,
    "boolean": bool,
    "object": dict,
    "array": list,
}


def _resolve(schema: dict, node: dict) -> dict:
    while True:
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
        else:
            return node


def _mismatches(schema: dict, node: dict, value, where: str) -> list[str]:
    """Where ``value`` (a real response) has a key, type or shape ``node`` does not say."""
    node = _resolve(schema, node)
    if value is None:
        return [] if node.get("nullable") else [f"{where}: null but not nullable"]
    expected = _TYPES.get(node.get("type"))
    if expected is not None and (
        not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool)
    ):
        return [f"{where}: {type(value).__name__} is not {node['type']}"]
    problems = []
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        if properties:
            missing = set(value) - set(properties)
            problems += [f"{where}: key {key!r} not in the schema" for key in sorted(missing)]
            absent = set(properties) - set(value)
            problems += [f"{where}: schema key {key!r} not answered" for key in sorted(absent)]
        for key, item in value.items():
            if key in properties:
                problems += _mismatches(schema, properties[key], item, f"{where}.{key}")
            elif isinstance(extra, dict) and extra:
                problems += _mismatches(schema, extra, item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += _mismatches(schema, node["items"], item, f"{where}[{index}]")
    return problems


def _check(schema: dict, path: str, method: str, response, status: str = "200") -> None:
    assert response.status_code == int(status), (path, response.content)
    content = schema["paths"][path][method]["responses"][status]["content"]
    node = content["application/json"]["schema"]
    assert _mismatches(schema, node, response.json(), f"{method.upper()} {path} {status}") == []


@pytest.mark.django_db
def test_schema_components_have_every_key_of_the_real_responses(api, viewer_api, org):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    aws = ProviderFactory(organization=org, name="AWS", kind="aws", config={"region": "us-east-1"})
    _seed(aws, YESTERDAY - timedelta(days=119), TODAY)
    CostRecordFactory(provider=aws, day=TODAY, service="S3", region="global")
    AnomalyFactory(
        provider=aws, date=YESTERDAY,
        top_services=[{"service": "EC2", "amount": 380.0, "vs_expected": 180.0}],
    )
    active = AnomalyFactory(provider=aws, date=YESTERDAY, service="EC2")
    job = SyncJobFactory(organization=org, status=SyncJob.Status.SUCCEEDED)
    SyncJobProviderFactory(job=job, provider=aws, date_from=YESTERDAY, date_to=YESTERDAY)
    v1 = "/api/v1"

    _check(schema, f"{v1}/costs/overview", "get", api.get(f"{v1}/costs/overview"))
    _check(schema, f"{v1}/costs/trend", "get", api.get(f"{v1}/costs/trend?days=7&group_by=service"))
    forecast = api.get(f"{v1}/costs/forecast")
    assert len(forecast.json()["daily"]) == 30
    _check(schema, f"{v1}/costs/forecast", "get", forecast)
    components = schema["components"]["schemas"]
    assert set(components["CostForecastDay"]["properties"]) == {"date", "amount", "lower", "upper"}
    assert set(components["CostForecastInterval"]["properties"]) == {"low", "high"}
    assert "currency" in components["CostOverview"]["properties"]

    _check(schema, f"{v1}/costs/anomalies", "get", api.get(f"{v1}/costs/anomalies?page_size=1"))
    dismiss = f"{v1}/costs/anomalies/{{anomaly_id}}/dismiss"
    url = f"{v1}/costs/anomalies/{active.id}/dismiss"
    _check(schema, dismiss, "post", api.post(url, {"reason": "planned"}, format="json"))
    # The dismiss endpoint's error answers are documented with the error format too.
    _check(schema, dismiss, "post", api.post(url, {"reason": "again"}, format="json"), "409")
    _check(schema, dismiss, "post", api.post(url, [], format="json"), "400")
    _check(schema, dismiss, "post", viewer_api.post(url, {"reason": "x"}, format="json"), "403")
    missing = f"{v1}/costs/anomalies/999999/dismiss"
    _check(schema, dismiss, "post", api.post(missing, {"reason": "x"}, format="json"), "404")

    _check(schema, f"{v1}/jobs/{{job_id}}", "get", api.get(f"{v1}/jobs/{job.id}"))
    _check(schema, f"{v1}/costs/sync", "post", api.post(f"{v1}/costs/sync", {}, format="json"), "202")
    _check(schema, f"{v1}/providers/{{id}}", "get", api.get(f"{v1}/providers/{aws.id}"))
    _check(schema, f"{v1}/providers", "get", api.get(f"{v1}/providers"))
    _check(schema, f"{v1}/costs/trend", "get", api.get(f"{v1}/costs/trend?days=x"), "400")


def test_schema_walker_finds_a_missing_key():
    schema = {"components": {"schemas": {"Day": {
        "type": "object", "properties": {"date": {"type": "string"}, "upper": {"type": "number"}},
    }}}}
    node = {"type": "array", "items": {"$ref": "#/components/schemas/Day"}}
    value = [{"date": "2024-01-01", "amount": 1.0, "upper": 2.0}]
    assert _mismatches(schema, node, value, "daily") == ["daily[0]: key 'amount' not in the schema"]
