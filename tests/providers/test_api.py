"""Providers CRUD: validation per kind, write-only credentials, tenancy and roles."""

import logging
import os
import threading
import time

import pytest
from django.db import connection, transaction

from costs.models import CostRecord
from providers.models import Provider
from tests.factories import CostRecordFactory, ProviderFactory

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
AWS_KEY_ID = "AKIAIOSFODNN7SECRETID"
GCP_PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANsecretgcp\n-----END PRIVATE KEY-----\n"
AZURE_SECRET = "azure~client~secret~value~0123456789"

VALID = {
    "aws": (
        {
            "account_id": "123456789012",
            "role_arn": "arn:aws:iam::123456789012:role/BillingReader",
            "external_id": "ext-1",
        },
        {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET},
    ),
    "gcp": (
        {"billing_table": "my-project.billing.gcp_billing_export_v1_0123"},
        {
            "service_account_json": {
                "type": "service_account",
                "client_email": "reader@my-project.iam.gserviceaccount.com",
                "private_key": GCP_PRIVATE_KEY,
            }
        },
    ),
    "azure": (
        {"subscription_id": "12345678-1234-1234-1234-123456789abc"},
        {"tenant_id": "tenant", "client_id": "client", "client_secret": AZURE_SECRET},
    ),
    "focus": (
        {"uri": "s3://my-exports/focus/"},
        {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET},
    ),
}
SECRETS = [AWS_SECRET, AWS_KEY_ID, "MIIEvQIBADANsecretgcp", AZURE_SECRET]
PUBLIC_FIELDS = {
    "id", "name", "kind", "config", "has_credentials", "aws_external_id", "is_active",
    "last_synced_at", "created_at",
}


def _create(api, **body):
    return api.post("/api/v1/providers", body, format="json")


def _assert_no_secret(text):
    for secret in SECRETS:
        assert secret not in text
        assert secret.replace("/", "\\/") not in text


# --- create / read -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["aws", "gcp", "azure", "focus"])
def test_provider_create_each_kind_stores_encrypted_credentials_and_never_returns_them(api, org, kind):
    config, credentials = VALID[kind]
    response = _create(api, name=f"{kind} prod", kind=kind, config=config, credentials=credentials)
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == PUBLIC_FIELDS
    assert body["kind"] == kind
    assert body["has_credentials"] is True
    assert body["is_active"] is True
    assert body["last_synced_at"] is None
    # The external id the server gives when it assumes an AWS role: the organization's.
    assert body["aws_external_id"] == (org.aws_external_id if kind == "aws" else None)
    _assert_no_secret(response.content.decode())

    provider = Provider.objects.get(pk=body["id"])
    assert provider.organization == org
    assert provider.credentials == credentials
    _assert_no_secret(provider.credentials_encrypted)  # encrypted at rest

    detail = api.get(f"/api/v1/providers/{provider.id}")
    listing = api.get("/api/v1/providers")
    for response in (detail, listing):
        assert response.status_code == 200
        assert "credentials" not in response.content.decode().replace("has_credentials", "")
        _assert_no_secret(response.content.decode())


@pytest.mark.django_db
def test_provider_create_applies_config_defaults(api):
    response = _create(api, name="AWS", kind="aws", config={}, credentials=VALID["aws"][1])
    assert response.status_code == 201
    assert response.json()["config"] == {"region": "us-east-1"}


@pytest.mark.django_db
def test_provider_create_without_credentials_has_none(api):
    response = _create(api, name="GCP", kind="gcp", config=VALID["gcp"][0])
    assert response.status_code == 201
    assert response.json()["has_credentials"] is False
    assert Provider.objects.get().credentials_encrypted == ""


@pytest.mark.django_db
def test_provider_list_is_paginated_ordered_by_name_and_scoped_to_org(api, org):
    ProviderFactory(organization=org, name="b")
    ProviderFactory(organization=org, name="a")
    ProviderFactory(name="other org's")
    body = api.get("/api/v1/providers").json()
    assert body["count"] == 2
    assert [item["name"] for item in body["results"]] == ["a", "b"]


@pytest.mark.django_db
def test_provider_list_filters_by_kind_and_is_active(api, org):
    ProviderFactory(organization=org, name="aws", kind="aws", config={"region": "us-east-1"})
    ProviderFactory(organization=org, name="focus-off", kind="focus", is_active=False)
    kinds = api.get("/api/v1/providers?kind=aws").json()["results"]
    assert [item["name"] for item in kinds] == ["aws"]
    inactive = api.get("/api/v1/providers?is_active=false").json()["results"]
    assert [item["name"] for item in inactive] == ["focus-off"]
    active = api.get("/api/v1/providers?is_active=1").json()["results"]
    assert [item["name"] for item in active] == ["aws"]


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["kind=oracle", "is_active=maybe"])
def test_provider_list_bad_filter_value_is_400_invalid_parameter(api, query):
    response = api.get(f"/api/v1/providers?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "INVALID_PARAMETER"
    assert list(body["details"]) == [query.split("=")[0]]


@pytest.mark.django_db
def test_provider_list_ignores_unknown_query_parameters(api, org):
    ProviderFactory(organization=org)
    response = api.get("/api/v1/providers?color=blue")
    assert response.status_code == 200
    assert response.json()["count"] == 1


# --- validation ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "config", "credentials", "error_path"),
    [
        ("aws", {"account_id": "123"}, None, ("config", "account_id")),
        ("aws", {"role_arn": "arn:aws:iam::1:role/x"}, None, ("config", "role_arn")),
        ("aws", {"external_id": "x"}, None, ("config", "external_id")),
        ("aws", {"acount_id": "123456789012"}, None, ("config", "acount_id")),
        ("aws", {}, {"aws_access_key_id": "AKIA"}, ("credentials", "aws_secret_access_key")),
        ("gcp", {}, None, ("config", "billing_table")),
        ("gcp", {"billing_table": "not-a-table"}, None, ("config", "billing_table")),
        (
            "gcp",
            VALID["gcp"][0],
            {"service_account_json": {"type": "user"}},
            ("credentials", "service_account_json"),
        ),
        ("azure", {"subscription_id": "nope"}, None, ("config", "subscription_id")),
        ("azure", VALID["azure"][0], {"tenant_id": "t"}, ("credentials", "client_id")),
        ("focus", {"uri": "s3://UPPER_case"}, None, ("config", "uri")),
        ("focus", {"uri": "s3://bucket/", "extra": 1}, None, ("config", "extra")),
        # A number or a boolean where a string belongs is refused, not turned into text
        # ({"uri": 5} was once the folder .../5).
        ("focus", {"uri": 5}, None, ("config", "uri")),
        ("aws", {"account_id": 123456789012}, None, ("config", "account_id")),
        ("gcp", {**VALID["gcp"][0], "location": True}, None, ("config", "location")),
        ("azure", VALID["azure"][0], {"tenant_id": 1, "client_id": "c", "client_secret": "s"},
         ("credentials", "tenant_id")),
        # azure-identity refuses it at the first sync ("internal error (ValueError)").
        ("azure", VALID["azure"][0],
         {"tenant_id": "contoso tenant", "client_id": "c", "client_secret": "s"},
         ("credentials", "tenant_id")),
    ],
)
def test_provider_create_invalid_settings_is_400_naming_the_key(
    api, kind, config, credentials, error_path
):
    body = {"name": "p", "kind": kind, "config": config}
    if credentials is not None:
        body["credentials"] = credentials
    response = api.post("/api/v1/providers", body, format="json")
    assert response.status_code == 400, response.content
    payload = response.json()
    assert set(payload) == {"error", "code", "details"}
    assert payload["code"] == "INVALID_BODY"
    section, key = error_path
    assert key in payload["details"][section]
    assert not Provider.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("config", [[1, 2], "text", 3])
def test_provider_create_config_not_an_object_is_400(api, config):
    response = _create(api, name="p", kind="aws", config=config)
    assert response.status_code == 400
    assert response.json()["details"]["config"] == ["must be an object"]


@pytest.mark.django_db
def test_provider_create_credentials_not_an_object_is_400(api):
    response = _create(api, name="p", kind="aws", config={}, credentials="secret")
    assert response.status_code == 400
    assert response.json()["details"]["credentials"] == ["must be an object"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "aws"}, "name"),
        ({"name": "p"}, "kind"),
        ({"name": "p", "kind": "oracle"}, "kind"),
        ({"name": "", "kind": "aws"}, "name"),
        ({"name": "p", "kind": "aws", "is_active": "perhaps"}, "is_active"),
    ],
)
def test_provider_create_bad_fields_are_400(api, body, field):
    response = api.post("/api/v1/providers", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["details"]


@pytest.mark.django_db
def test_provider_create_invalid_credentials_error_does_not_echo_them(api):
    credentials = {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET * 10}
    response = _create(api, name="p", kind="aws", config={}, credentials=credentials)
    assert response.status_code == 400
    assert "aws_secret_access_key" in response.json()["details"]["credentials"]
    _assert_no_secret(response.content.decode())


@pytest.mark.django_db
def test_provider_create_duplicate_name_is_400(api, org):
    ProviderFactory(organization=org, name="AWS Production")
    response = _create(api, name="AWS Production", kind="aws", config={})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_BODY"
    assert "name" in response.json()["details"]
    assert Provider.objects.filter(organization=org).count() == 1


@pytest.mark.django_db
def test_provider_create_same_name_in_another_org_is_allowed(api):
    ProviderFactory(name="AWS Production")
    assert _create(api, name="AWS Production", kind="aws", config={}).status_code == 201


@pytest.mark.django_db
def test_provider_rename_to_existing_name_is_400(api, org):
    ProviderFactory(organization=org, name="taken")
    provider = ProviderFactory(organization=org, name="mine")
    response = api.patch(f"/api/v1/providers/{provider.id}", {"name": "taken"}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()["details"]
    provider.refresh_from_db()
    assert provider.name == "mine"


# --- FOCUS local paths -----------------------------------------------------------------
# Each organization reads only IMPORT_ROOT/<its slug>/; cross-organization cases are in
# test_import_folders.


@pytest.fixture
def org_folder(import_root, org):
    """The import folder of ``org``, the organization ``api`` acts for."""
    folder = import_root / org.slug
    (folder / "exports").mkdir(parents=True)
    return folder


@pytest.mark.django_db
@pytest.mark.parametrize("uri", ["exports", "exports/focus.csv", "{folder}/exports", "{folder}"])
def test_provider_focus_local_uri_inside_the_orgs_folder_is_accepted(api, org_folder, uri):
    uri = uri.format(folder=org_folder)
    response = _create(api, name="focus", kind="focus", config={"uri": uri})
    assert response.status_code == 201, response.content
    stored = response.json()["config"]["uri"]
    assert stored.startswith(str(org_folder))
    assert os.path.isabs(stored)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "uri", ["../outside", "exports/../../outside", "{folder}/exports/../..", "/etc", "/etc/passwd",
            "{folder}-sibling/x", "{root}", "{root}/exports"]
)
def test_provider_focus_local_uri_outside_the_orgs_folder_is_400(
    api, import_root, org_folder, uri
):
    uri = uri.format(root=import_root, folder=org_folder)
    response = _create(api, name="focus", kind="focus", config={"uri": uri})
    assert response.status_code == 400, response.content
    assert "uri" in response.json()["details"]["config"]
    assert not Provider.objects.exists()


@pytest.mark.django_db
def test_provider_focus_symlink_out_of_the_orgs_folder_is_400(api, org_folder, tmp_path):
    outside = tmp_path / "secret-dir"
    outside.mkdir()
    (org_folder / "link").symlink_to(outside, target_is_directory=True)
    response = _create(api, name="focus", kind="focus", config={"uri": "link"})
    assert response.status_code == 400
    assert response.json()["details"]["config"]["uri"] == [
        f"must be inside this organization's import folder {org_folder}"
    ]
    response = _create(api, name="focus", kind="focus", config={"uri": str(org_folder / "link")})
    assert response.status_code == 400


@pytest.mark.django_db
def test_provider_focus_uri_change_is_validated_on_update(api, org, org_folder):
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": "s3://bucket/x/"})
    response = api.patch(
        f"/api/v1/providers/{provider.id}", {"config": {"uri": "/etc"}}, format="json"
    )
    assert response.status_code == 400
    provider.refresh_from_db()
    assert provider.config == {"uri": "s3://bucket/x/"}


# --- update / delete -------------------------------------------------------------------


@pytest.mark.django_db
def test_provider_patch_merges_config_keys_and_put_replaces_them(api, org):
    provider = ProviderFactory(organization=org, kind="focus",
                               config={"uri": "s3://bucket/x/", "region": "us-east-1"})
    url = f"/api/v1/providers/{provider.id}"
    response = api.patch(url, {"config": {"region": "eu-west-1"}}, format="json")
    assert response.status_code == 200
    assert response.json()["config"] == {"uri": "s3://bucket/x/", "region": "eu-west-1"}
    response = api.patch(url, {"config": {"uri": None}}, format="json")  # null removes
    assert response.json()["config"] == {"region": "eu-west-1"}
    whole = {"name": provider.name, "kind": "focus", "config": {"uri": "s3://bucket/y/"}}
    response = api.put(url, whole, format="json")
    assert response.status_code == 200
    assert response.json()["config"] == {"uri": "s3://bucket/y/", "region": "us-east-1"}


@pytest.mark.django_db
def test_provider_patch_without_credentials_keeps_them(api, org):
    provider = ProviderFactory(organization=org, kind="aws", config={})
    provider.credentials = VALID["aws"][1]
    provider.save()
    response = api.patch(
        f"/api/v1/providers/{provider.id}",
        {"name": "renamed", "is_active": False, "config": {"region": "eu-west-1"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["is_active"], body["config"]) == (
        "renamed", False, {"region": "eu-west-1"}
    )
    assert body["has_credentials"] is True
    provider.refresh_from_db()
    assert provider.credentials == VALID["aws"][1]


@pytest.mark.django_db
def test_provider_patch_replaces_credentials_and_does_not_echo_them(api, org):
    provider = ProviderFactory(organization=org, kind="azure", config=VALID["azure"][0])
    response = api.patch(
        f"/api/v1/providers/{provider.id}", {"credentials": VALID["azure"][1]}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["has_credentials"] is True
    _assert_no_secret(response.content.decode())
    provider.refresh_from_db()
    assert provider.credentials["client_secret"] == AZURE_SECRET


@pytest.mark.django_db
@pytest.mark.parametrize("cleared", [None, {}])
def test_provider_patch_null_or_empty_credentials_clears_them(api, org, cleared):
    provider = ProviderFactory(organization=org, kind="aws", config={})
    provider.credentials = VALID["aws"][1]
    provider.save()
    response = api.patch(
        f"/api/v1/providers/{provider.id}", {"credentials": cleared}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["has_credentials"] is False
    provider.refresh_from_db()
    assert provider.credentials == {}


@pytest.mark.django_db
def test_provider_put_replaces_settings(api, org):
    provider = ProviderFactory(organization=org, name="old", kind="gcp", config=VALID["gcp"][0])
    body = {
        "name": "new",
        "kind": "gcp",
        "config": {"billing_table": "other-project.ds.table", "location": "EU"},
        "is_active": False,
    }
    response = api.put(f"/api/v1/providers/{provider.id}", body, format="json")
    assert response.status_code == 200, response.content
    provider.refresh_from_db()
    assert provider.name == "new"
    assert provider.config == {"billing_table": "other-project.ds.table", "location": "EU"}
    assert provider.is_active is False


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch"])
def test_provider_kind_cannot_change(api, org, method):
    provider = ProviderFactory(organization=org, name="p", kind="focus", config={})
    body = {"name": "p", "kind": "aws", "config": {}}
    response = getattr(api, method)(f"/api/v1/providers/{provider.id}", body, format="json")
    assert response.status_code == 400
    assert "kind" in response.json()["details"]
    provider.refresh_from_db()
    assert provider.kind == "focus"


@pytest.mark.django_db
def test_provider_patch_invalid_config_for_its_kind_is_400(api, org):
    provider = ProviderFactory(organization=org, kind="azure", config=VALID["azure"][0])
    missing = api.patch(
        f"/api/v1/providers/{provider.id}", {"config": {"subscription_id": None}}, format="json"
    )
    assert missing.status_code == 400
    assert "subscription_id" in missing.json()["details"]["config"]
    foreign_key = {**VALID["azure"][0], "billing_table": "a.b.c"}
    unknown = api.patch(
        f"/api/v1/providers/{provider.id}", {"config": foreign_key}, format="json"
    )
    assert unknown.status_code == 400
    assert "billing_table" in unknown.json()["details"]["config"]
    provider.refresh_from_db()
    assert provider.config == VALID["azure"][0]


@pytest.mark.django_db
def test_provider_delete_removes_it_and_its_cost_records(api, org):
    provider = ProviderFactory(organization=org)
    CostRecordFactory(provider=provider)
    response = api.delete(f"/api/v1/providers/{provider.id}")
    assert response.status_code == 204
    assert not Provider.objects.filter(pk=provider.pk).exists()
    assert not CostRecord.objects.exists()


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_provider_delete_during_a_sync_waits_for_it_and_deletes_what_it_wrote(api, org):
    # A sync writes a provider's records holding its row lock. A delete that collected
    # the records before the sync's last ones landed failed on them at commit (a 500,
    # the provider left in place); it now takes the lock first and waits.
    provider = ProviderFactory(organization=org)
    CostRecordFactory(provider=provider)
    locked, done = threading.Event(), threading.Event()

    def sync_writing():
        try:
            with transaction.atomic():
                Provider.objects.select_for_update().get(pk=provider.pk)
                CostRecord.objects.filter(provider=provider).delete()  # replaces its days
                locked.set()
                deadline = time.monotonic() + 10
                while not _someone_waits_for_a_lock() and time.monotonic() < deadline:
                    time.sleep(0.05)  # until the DELETE is waiting on this transaction
                CostRecordFactory(provider=provider)
        finally:
            connection.close()
            done.set()

    writer = threading.Thread(target=sync_writing)
    writer.start()
    assert locked.wait(10)
    response = api.delete(f"/api/v1/providers/{provider.id}")
    writer.join(10)
    assert done.is_set()
    assert response.status_code == 204
    assert not Provider.objects.filter(pk=provider.pk).exists()
    assert not CostRecord.objects.exists()


# --- tenancy and roles -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "patch", "put", "delete"])
def test_provider_of_another_org_is_404_like_unknown_id(api, other_api, org, method):
    provider = ProviderFactory(organization=org, name="mine", kind="aws", config={})
    body = {"name": "stolen", "kind": "aws", "config": {}}
    foreign = getattr(other_api, method)(f"/api/v1/providers/{provider.id}", body, format="json")
    missing = getattr(api, method)(f"/api/v1/providers/{provider.id + 1000}", body, format="json")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert foreign.json()["code"] == "NOT_FOUND"
    provider.refresh_from_db()
    assert provider.name == "mine"


@pytest.mark.django_db
@pytest.mark.parametrize("provider_id", ["abc", "99999999999999999999", "-1"])
def test_provider_detail_malformed_or_huge_id_is_404(api, provider_id):
    response = api.get(f"/api/v1/providers/{provider_id}")
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


@pytest.mark.django_db
def test_provider_viewer_reads(viewer_api, org):
    provider = ProviderFactory(organization=org)
    assert viewer_api.get("/api/v1/providers").status_code == 200
    assert viewer_api.get(f"/api/v1/providers/{provider.id}").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_provider_viewer_write_is_403(viewer_api, org, method):
    provider = ProviderFactory(organization=org, name="p", kind="aws", config={})
    path = "/api/v1/providers" if method == "post" else f"/api/v1/providers/{provider.id}"
    body = {"name": "x", "kind": "aws", "config": {}}
    response = getattr(viewer_api, method)(path, body, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"
    assert set(response.json()) == {"error", "code", "details"}
    provider.refresh_from_db()
    assert provider.name == "p"
    assert Provider.objects.count() == 1


@pytest.mark.django_db
def test_provider_endpoints_need_a_key(client):
    assert client.get("/api/v1/providers").status_code == 401
    assert client.post("/api/v1/providers", {}, content_type="application/json").status_code == 401


# --- secrets stay out of logs ----------------------------------------------------------


@pytest.mark.django_db
def test_provider_credentials_never_logged(api, org, caplog):
    caplog.set_level(logging.DEBUG)
    created = _create(api, name="aws", kind="aws", config={}, credentials=VALID["aws"][1])
    provider_id = created.json()["id"]
    api.patch(f"/api/v1/providers/{provider_id}", {"credentials": VALID["aws"][1]}, format="json")
    bad = dict(VALID["gcp"][1])
    api.post(
        "/api/v1/providers",
        {"name": "gcp", "kind": "gcp", "config": {"billing_table": "bad"}, "credentials": bad},
        format="json",
    )
    api.get(f"/api/v1/providers/{provider_id}")
    assert caplog.records  # the requests did log (at least the 400)
    _assert_no_secret(caplog.text)


# --- paths -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_provider_paths_work_with_trailing_slash(api, org):
    provider = ProviderFactory(organization=org)
    assert api.get("/api/v1/providers/").status_code == 200
    assert api.get(f"/api/v1/providers/{provider.id}/").status_code == 200
    created = api.post("/api/v1/providers/", {"name": "n", "kind": "aws", "config": {}},
                       format="json")
    assert created.status_code == 201
    assert api.delete(f"/api/v1/providers/{provider.id}/").status_code == 204
