"""Every 4xx answers ``{"error", "code", "details"}``; paths work with a trailing slash."""

import pytest
from rest_framework.test import APIClient

from tests.factories import ProviderFactory

ERROR_KEYS = {"error", "code", "details"}
READ_PATHS = ["/api/v1/providers", "/api/v1/providers/1", "/api/v1/costs/overview",
              "/api/v1/costs/trend"]


def _assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["code"] == code
    assert isinstance(body["error"], str)
    assert body["error"]
    return body


@pytest.mark.django_db
@pytest.mark.parametrize("path", READ_PATHS)
def test_errors_missing_key_is_401(path):
    response = APIClient().get(path)
    body = _assert_error(response, 401, "UNAUTHORIZED")
    assert body["details"] == {}
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.django_db
@pytest.mark.parametrize("path", READ_PATHS)
@pytest.mark.parametrize("header", ["Bearer ia_deadbeef_nope", "Bearer", "Bearer a b", "Basic x"])
def test_errors_invalid_key_is_401(path, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    _assert_error(client.get(path), 401, "UNAUTHORIZED")


@pytest.mark.django_db
def test_errors_unauthenticated_write_is_401_not_403_or_405():
    client = APIClient()
    _assert_error(client.post("/api/v1/providers", {}, format="json"), 401, "UNAUTHORIZED")
    _assert_error(client.delete("/api/v1/costs/overview"), 401, "UNAUTHORIZED")


@pytest.mark.django_db
def test_errors_viewer_write_is_403(viewer_api):
    body = _assert_error(
        viewer_api.post("/api/v1/providers", {"name": "x", "kind": "aws"}, format="json"),
        403,
        "FORBIDDEN",
    )
    assert "admin" in body["error"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/api/v1/nothing", "/api/v1/nothing/", "/api/v2/providers", "/api/", "/api/v1/costs"]
)
@pytest.mark.parametrize("debug", [False, True])
def test_errors_unknown_api_path_is_json_404(api, settings, path, debug):
    # With DEBUG on (the demo) too, where Django answers its HTML debug page.
    settings.DEBUG = debug
    body = _assert_error(api.get(path), 404, "NOT_FOUND")
    assert body["details"] == {}
    assert path in body["error"]
    for wrong in ("/api/v1/jobs/abc", "/api/v1/costs/anomalies/7", "/api/v1/jobs"):
        _assert_error(api.get(wrong), 404, "NOT_FOUND")


@pytest.mark.django_db
def test_errors_unknown_api_path_is_404_without_key_too():
    _assert_error(APIClient().get("/api/v1/nothing"), 404, "NOT_FOUND")


@pytest.mark.django_db
def test_errors_unknown_path_outside_api_is_not_json(client):
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_errors_unknown_and_foreign_ids_are_the_same_404(api, other_api, org):
    provider = ProviderFactory(organization=org)
    foreign = _assert_error(other_api.get(f"/api/v1/providers/{provider.id}"), 404, "NOT_FOUND")
    missing = _assert_error(api.get(f"/api/v1/providers/{provider.id + 1000}"), 404, "NOT_FOUND")
    assert foreign == missing


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/costs/overview"),
        ("delete", "/api/v1/costs/overview"),
        ("post", "/api/v1/costs/trend"),
        ("put", "/api/v1/costs/trend/"),
        ("put", "/api/v1/providers"),
        ("delete", "/api/v1/providers"),
        ("post", "/api/v1/providers/{id}"),
    ],
)
def test_errors_wrong_method_is_405(api, org, method, path):
    provider = ProviderFactory(organization=org)
    response = getattr(api, method)(path.format(id=provider.id), {}, format="json")
    _assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "Allow" in response


@pytest.mark.django_db
def test_errors_body_validation_is_400_naming_fields(api):
    body = _assert_error(
        api.post("/api/v1/providers", {"kind": "oracle"}, format="json"), 400, "INVALID_BODY"
    )
    assert set(body["details"]) == {"name", "kind"}
    assert all(isinstance(m, str) for messages in body["details"].values() for m in messages)


@pytest.mark.django_db
def test_errors_nested_validation_details_are_plain_json(api):
    body = _assert_error(
        api.post(
            "/api/v1/providers",
            {"name": "p", "kind": "azure", "config": {"subscription_id": "x"}},
            format="json",
        ),
        400,
        "INVALID_BODY",
    )
    assert isinstance(body["details"]["config"]["subscription_id"][0], str)


@pytest.mark.django_db
def test_errors_body_not_an_object_is_400(api):
    body = _assert_error(api.post("/api/v1/providers", [1, 2], format="json"), 400, "INVALID_BODY")
    assert list(body["details"]) == ["non_field_errors"]


@pytest.mark.django_db
def test_errors_malformed_json_is_400(api):
    response = api.post("/api/v1/providers", "{not json", content_type="application/json")
    body = _assert_error(response, 400, "INVALID_BODY")  # as a body that fails validation
    assert list(body["details"]) == ["body"]


@pytest.mark.django_db
def test_errors_unsupported_media_type_is_415(api):
    response = api.post("/api/v1/providers", "name=x", content_type="text/plain")
    _assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.django_db
def test_errors_query_parameter_is_400_invalid_parameter(api):
    body = _assert_error(api.get("/api/v1/costs/trend?days=0"), 400, "INVALID_PARAMETER")
    assert body == {
        "error": "invalid query parameter",
        "code": "INVALID_PARAMETER",
        "details": {"days": ["must be between 1 and 3650"]},
    }


@pytest.mark.django_db
def test_errors_disallowed_host_is_json_400(api):
    response = api.get("/api/v1/providers", HTTP_HOST="evil.example.com")
    _assert_error(response, 400, "BAD_REQUEST")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/providers/", "/api/v1/costs/overview/",
                                  "/api/v1/costs/trend/"])
def test_errors_trailing_slash_paths_work(api, path):
    response = api.get(path)
    assert response.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["abc", "0", "-1", "1.5"])
def test_pagination_bad_page_is_400(api, page):
    response = api.get("/api/v1/providers", {"page": page})
    assert response.status_code == 400
    assert response.json()["details"] == {"page": ["must be a positive integer"]}


@pytest.mark.django_db
def test_pagination_page_past_the_end_is_404_and_last_works(api):
    assert api.get("/api/v1/providers", {"page": "5"}).status_code == 404
    assert api.get("/api/v1/providers", {"page": "last"}).status_code == 200
    assert api.get("/api/v1/costs/anomalies", {"page": "x"}).status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/costs/sync", "/api/v1/providers"])
def test_form_bodies_are_415_where_bodies_are_json(api, path):
    # The README says bodies are JSON and uploads multipart; a form body was accepted.
    response = api.post(path, {"provider_id": "1", "name": "x"}, format="multipart")
    assert response.status_code == 415
    assert response.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
