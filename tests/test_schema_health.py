"""Health endpoints, the OpenAPI schema and the interactive docs (no auth, no CDN)."""

import re

import pytest
from django.contrib.staticfiles import finders
from django.db import OperationalError
from django.test import Client
from rest_framework.test import APIClient

# --- health ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/healthz/"])
def test_healthz_is_ok_without_auth(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/readyz", "/readyz/"])
def test_readyz_checks_database_and_embedded_broker(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "embedded"}}


@pytest.mark.django_db
def test_readyz_ignores_a_bad_authorization_header():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer nonsense")
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_readyz_database_unreachable_is_503(client, monkeypatch):
    def broken_cursor(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("infraaudit.health.connection.cursor", broken_cursor)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "unreachable", "broker": "embedded"},
    }


@pytest.mark.django_db
def test_readyz_broker_unreachable_is_503(client, settings, monkeypatch):
    from infraaudit.celery import app

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "unreachable"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_wrong_method_is_405(client, path):
    response = client.post(path)
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"
    assert set(response.json()) == {"error", "code", "details"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/healthz/", "/readyz/"])
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_health_write_methods_are_405_json_not_a_csrf_403(path, method):
    # The CSRF check of a real server (the default test client skips it) runs before the
    # view: without the exemption a POST answered an HTML 403 "CSRF cookie not set".
    client = Client(enforce_csrf_checks=True)
    response = getattr(client, method)(path, "{}", content_type="application/json")
    assert response.status_code == 405
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == "METHOD_NOT_ALLOWED"
    assert response["Allow"] == "GET, HEAD"
    assert client.get(path).status_code == 200


# --- schema ----------------------------------------------------------------------------


@pytest.fixture
def schema(db):
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def _params(schema, path, method="get"):
    return {p["name"]: p for p in schema["paths"][path][method].get("parameters", [])}


def test_schema_is_openapi_3_served_without_auth(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "InfraAudit Costs API"
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


@pytest.mark.django_db
def test_schema_also_served_without_trailing_slash():
    response = APIClient().get("/api/schema", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_schema_lists_every_endpoint_at_its_contract_path(schema):
    operations = {
        (path, method) for path, item in schema["paths"].items() for method in item
    }
    expected = {
        ("/api/v1/providers", "get"),
        ("/api/v1/providers", "post"),
        ("/api/v1/providers/{id}", "get"),
        ("/api/v1/providers/{id}", "put"),
        ("/api/v1/providers/{id}", "patch"),
        ("/api/v1/providers/{id}", "delete"),
        ("/api/v1/costs/overview", "get"),
        ("/api/v1/costs/trend", "get"),
        ("/api/v1/costs/sync", "post"),
        ("/api/v1/jobs/{job_id}", "get"),
    }
    assert expected <= operations
    assert not [path for path in schema["paths"] if path.endswith("/")]


def test_schema_trend_parameters_and_enums(schema):
    params = _params(schema, "/api/v1/costs/trend")
    assert set(params) >= {"days", "granularity", "group_by", "provider_id"}
    assert all(param["in"] == "query" and not param.get("required") for param in params.values())
    days = params["days"]["schema"]
    assert (days["type"], days["minimum"], days["maximum"], days["default"]) == (
        "integer", 1, 3650, 30
    )
    assert params["granularity"]["schema"]["enum"] == ["day", "week", "month"]
    assert params["granularity"]["schema"]["default"] == "day"
    assert params["group_by"]["schema"]["enum"] == ["provider", "service", "region"]
    assert params["group_by"]["schema"]["default"] == "provider"
    assert params["provider_id"]["schema"]["type"] == "integer"


def test_schema_trend_and_overview_responses_match_contract(schema):
    def component(operation):
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]

    overview = component(schema["paths"]["/api/v1/costs/overview"]["get"])
    assert {"current_month", "last_month", "mom_change_percent", "by_provider"} <= set(
        overview["properties"]
    )
    trend = component(schema["paths"]["/api/v1/costs/trend"]["get"])
    assert "data" in trend["properties"]


def test_schema_providers_parameters_and_write_only_credentials(schema):
    list_params = _params(schema, "/api/v1/providers")
    assert {"kind", "is_active", "page", "page_size"} <= set(list_params)
    assert sorted(list_params["kind"]["schema"]["enum"]) == ["aws", "azure", "focus", "gcp"]
    detail = _params(schema, "/api/v1/providers/{id}")
    assert detail["id"]["schema"]["type"] == "integer"

    components = schema["components"]["schemas"]
    assert "credentials" not in components["Provider"]["properties"]
    assert "credentials" in components["ProviderRequest"]["properties"]


# --- docs ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/docs/", "/api/docs"])
def test_docs_render_from_local_static_files_not_a_cdn(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "swagger" in html.lower()
    for cdn in ("cdn.", "jsdelivr", "unpkg", "cdnjs", "googleapis"):
        assert cdn not in html
    scripts = re.findall(r'src="([^"]+)"', html) + re.findall(r'href="([^"]+\.css)"', html)
    assert scripts
    for url in scripts:
        assert url.startswith("/static/"), url
        assert finders.find(url.removeprefix("/static/")), url


def test_schema_documents_error_answers_with_the_error_format(schema):
    assert schema["components"]["schemas"]["Error"]["required"] == ["error", "code", "details"]
    trend = schema["paths"]["/api/v1/costs/trend"]["get"]["responses"]
    assert {"400", "401", "404", "422"} <= set(trend)
    assert trend["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert {"401", "403", "404", "409"} <= set(
        schema["paths"]["/api/v1/costs/anomalies/{anomaly_id}/dismiss"]["post"]["responses"]
    )
    assert "413" in schema["paths"]["/api/v1/providers/{provider_id}/import"]["post"]["responses"]
    assert "415" in schema["paths"]["/api/v1/costs/sync"]["post"]["responses"]
    assert "400" not in schema["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]
    forecast = {p["name"]: p for p in schema["paths"]["/api/v1/costs/forecast"]["get"]["parameters"]}
    assert forecast["days"]["schema"]["enum"] == [30, 60, 90]


def test_schema_response_objects_require_every_key_they_always_carry(schema):
    components = schema["components"]["schemas"]
    for name in ("Anomaly", "Provider", "PaginatedProviderList", "CostForecast", "SyncJob"):
        assert sorted(components[name]["required"]) == sorted(components[name]["properties"])
    assert {"status", "dismissed_at"} <= set(components["Anomaly"]["required"])
    assert {"config", "is_active"} <= set(components["Provider"]["required"])
    # Requests keep their optional keys: a provider is created without a config.
    assert "config" not in components["ProviderRequest"].get("required", [])


def test_schema_types_what_clients_generate_code_from(schema):
    # is_active was a boolean limited to strings; a job's kind and an entry's status were
    # free strings.
    assert _params(schema, "/api/v1/providers")["is_active"]["schema"] == {
        "type": "string", "enum": ["0", "1", "false", "true"]
    }
    components = schema["components"]["schemas"]
    assert components["SyncJobKindEnum"]["enum"] == ["cost_sync", "focus_import"]
    assert set(components["SyncJobResultStatusEnum"]["enum"]) == {
        "queued", "running", "succeeded", "failed"
    }
