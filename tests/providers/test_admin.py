"""The provider admin: credentials are write-only there too."""

import json
from datetime import date, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, models
from django.test.utils import CaptureQueriesContext

from costs.models import AlertWebhook, Anomaly, CostRecord, SyncJobProvider, WebhookDelivery
from providers.models import Provider
from tests.factories import (
    AnomalyFactory,
    CostRecordFactory,
    MembershipFactory,
    OrganizationFactory,
    ProviderFactory,
    SyncJobProviderFactory,
    UserFactory,
)

SECRET = "wJalrXUtnFEMI/K7MDENG/adminSECRET"
KEY_ID = "AKIAADMINKEYID0000"
CREDENTIALS = {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}


@pytest.fixture
def provider(db):
    provider = ProviderFactory(name="AWS Production", kind="aws", config={"region": "us-east-1"})
    provider.credentials = CREDENTIALS
    provider.save()
    return provider


def _form(provider, **overrides):
    data = {
        "organization": provider.organization_id,
        "name": provider.name,
        "kind": provider.kind,
        "config": json.dumps(provider.config),
        "is_active": "on",
        "new_credentials": "",
    }
    data.update(overrides)
    return data


def _assert_no_secret(html):
    assert SECRET not in html
    assert KEY_ID not in html
    assert SECRET.replace("/", "&#x2F;") not in html


@pytest.mark.django_db
def test_provider_admin_changelist_loads(admin_client, provider):
    response = admin_client.get("/admin/providers/provider/")
    assert response.status_code == 200
    assert "AWS Production" in response.content.decode()
    _assert_no_secret(response.content.decode())


@pytest.mark.django_db
def test_provider_admin_change_page_never_shows_credentials(admin_client, provider):
    response = admin_client.get(f"/admin/providers/provider/{provider.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "new_credentials" in html
    _assert_no_secret(html)
    assert provider.credentials_encrypted not in html


@pytest.mark.django_db
def test_provider_admin_invalid_form_does_not_echo_typed_credentials(admin_client, provider):
    data = _form(
        provider, config=json.dumps({"account_id": "bad"}), new_credentials=json.dumps(CREDENTIALS)
    )
    response = admin_client.post(f"/admin/providers/provider/{provider.pk}/change/", data)
    assert response.status_code == 200  # the form again, with its error
    html = response.content.decode()
    assert "account_id" in html
    _assert_no_secret(html)


@pytest.mark.django_db
def test_provider_admin_save_with_empty_credentials_keeps_them(admin_client, provider):
    data = _form(provider, config=json.dumps({"region": "eu-west-1"}))
    response = admin_client.post(f"/admin/providers/provider/{provider.pk}/change/", data)
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.config == {"region": "eu-west-1"}
    assert provider.credentials == CREDENTIALS


@pytest.mark.django_db
def test_provider_admin_replaces_and_clears_credentials(admin_client, provider):
    new = {"aws_access_key_id": "AKIANEW", "aws_secret_access_key": "new-secret"}
    url = f"/admin/providers/provider/{provider.pk}/change/"
    assert admin_client.post(url, _form(provider, new_credentials=json.dumps(new))).status_code == 302
    provider.refresh_from_db()
    assert provider.credentials == new
    assert admin_client.post(url, _form(provider, clear_credentials="on")).status_code == 302
    provider.refresh_from_db()
    assert provider.has_credentials is False


@pytest.mark.django_db
def test_provider_admin_add_validates_config_and_encrypts_credentials(admin_client):
    org = OrganizationFactory()
    data = {
        "organization": org.pk,
        "name": "Azure",
        "kind": "azure",
        "config": json.dumps({"subscription_id": "nope"}),
        "is_active": "on",
        "new_credentials": json.dumps(
            {"tenant_id": "t", "client_id": "c", "client_secret": SECRET}
        ),
    }
    response = admin_client.post("/admin/providers/provider/add/", data)
    assert response.status_code == 200
    assert "subscription_id" in response.content.decode()
    _assert_no_secret(response.content.decode())
    assert not Provider.objects.exists()

    data["config"] = json.dumps({"subscription_id": "12345678-1234-1234-1234-123456789abc"})
    assert admin_client.post("/admin/providers/provider/add/", data).status_code == 302
    provider = Provider.objects.get()
    assert provider.credentials["client_secret"] == SECRET
    assert SECRET not in provider.credentials_encrypted


@pytest.mark.django_db
def test_provider_admin_rejects_credentials_that_are_not_json(admin_client, provider):
    data = _form(provider, new_credentials="{not json " + SECRET)
    response = admin_client.post(f"/admin/providers/provider/{provider.pk}/change/", data)
    assert response.status_code == 200
    assert "must be a JSON object" in response.content.decode()
    _assert_no_secret(response.content.decode())
    provider.refresh_from_db()
    assert provider.credentials == CREDENTIALS


@pytest.mark.django_db
def test_provider_admin_kind_cannot_change(admin_client, provider):
    change = admin_client.get(f"/admin/providers/provider/{provider.pk}/change/").content.decode()
    assert 'name="kind"' not in change
    data = _form(
        provider, kind="azure", config=json.dumps({"region": "eu-west-1"})
    )  # aws config, azure kind posted
    response = admin_client.post(f"/admin/providers/provider/{provider.pk}/change/", data)
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.kind == "aws"
    assert provider.config == {"region": "eu-west-1"}


@pytest.mark.django_db
def test_provider_admin_change_validates_config_against_stored_kind(admin_client, provider):
    data = _form(provider, config=json.dumps({"subscription_id": "x"}))
    response = admin_client.post(f"/admin/providers/provider/{provider.pk}/change/", data)
    assert response.status_code == 200
    assert "subscription_id" in response.content.decode()
    provider.refresh_from_db()
    assert provider.config == {"region": "us-east-1"}


@pytest.mark.django_db
def test_provider_admin_duplicate_name_in_organization_is_rejected(admin_client, provider):
    data = _form(provider)
    response = admin_client.post("/admin/providers/provider/add/", data)
    assert response.status_code == 200
    assert Provider.objects.filter(name=provider.name).count() == 1


@pytest.mark.django_db
def test_provider_admin_focus_path_must_be_in_the_chosen_organizations_folder(
    admin_client, settings, tmp_path
):
    settings.IMPORT_ROOT = tmp_path / "imports"
    ours, theirs = OrganizationFactory(slug="ours"), OrganizationFactory(slug="theirs")
    for org in (ours, theirs):
        (settings.IMPORT_ROOT / org.slug / "exports").mkdir(parents=True)
    data = {
        "organization": ours.pk, "name": "FOCUS", "kind": "focus", "is_active": "on",
        "new_credentials": "",
        "config": json.dumps({"uri": str(settings.IMPORT_ROOT / "theirs" / "exports")}),
    }
    response = admin_client.post("/admin/providers/provider/add/", data)
    assert response.status_code == 200
    assert "import folder" in response.content.decode()
    assert not Provider.objects.exists()

    data["config"] = json.dumps({"uri": "exports"})  # relative: the chosen organization's
    assert admin_client.post("/admin/providers/provider/add/", data).status_code == 302
    assert Provider.objects.get().config["uri"] == str(
        (settings.IMPORT_ROOT / "ours" / "exports").resolve()
    )


@pytest.mark.django_db
def test_provider_admin_organization_cannot_change(admin_client, provider):
    """Its records, jobs and anomalies carry the organization: moving it would leave them
    behind, still visible to (and dismissable by) the old organization."""
    anomaly = AnomalyFactory(provider=provider)
    url = f"/admin/providers/provider/{provider.pk}/change/"
    assert 'name="organization"' not in admin_client.get(url).content.decode()
    other = OrganizationFactory()
    response = admin_client.post(url, _form(provider, organization=other.pk, name="Renamed"))
    assert response.status_code == 302
    provider.refresh_from_db()
    assert (provider.organization_id, provider.name) == (anomaly.organization_id, "Renamed")
    # Chosen when adding.
    add = admin_client.get("/admin/providers/provider/add/").content.decode()
    assert 'name="organization"' in add


# --------------------------------------------------------------------------------------
# Deleting a provider: its records and anomalies go with it, its sync history stays
# --------------------------------------------------------------------------------------

CHANGELIST = "/admin/providers/provider/"


def _with_history(provider, *, records=3):
    """Give ``provider`` records, two anomalies (one alerted) and a past sync entry."""
    CostRecord.objects.bulk_create(
        CostRecordFactory.build(provider=provider, day=date(2023, 1, 1) + timedelta(days=i))
        for i in range(records)
    )
    anomaly = AnomalyFactory(provider=provider)
    AnomalyFactory(provider=provider, service="EC2")
    webhook = AlertWebhook.objects.create(
        organization=provider.organization, name=f"{provider.name} hook",
        url="https://hooks.example.com/alerts",
    )
    WebhookDelivery.objects.create(webhook=webhook, anomaly=anomaly, payload={})
    return SyncJobProviderFactory(job__organization=provider.organization, provider=provider)


def _delete_url(provider):
    return f"{CHANGELIST}{provider.pk}/delete/"


def _bulk_delete(client, providers, **extra):
    data = {"action": "delete_selected", "_selected_action": [p.pk for p in providers], **extra}
    return client.post(CHANGELIST, data)


def _assert_deleted_with_history_kept(provider, entry):
    assert not Provider.objects.filter(pk=provider.pk).exists()
    assert not CostRecord.objects.filter(provider_id=provider.pk).exists()
    assert not Anomaly.objects.filter(provider_id=provider.pk).exists()
    assert not WebhookDelivery.objects.filter(anomaly__provider_id=provider.pk).exists()
    entry.refresh_from_db()
    assert (entry.provider_id, entry.provider_pk, entry.display_name) == (
        None, provider.pk, provider.name
    )


@pytest.fixture
def member_of_provider_org(provider):
    """A staff admin of the provider's organization allowed to view and delete providers,
    and nothing about cost records, anomalies or deliveries."""
    user = UserFactory(username="org-admin", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="providers", codename__in=["view_provider", "delete_provider"]
    ))
    MembershipFactory(organization=provider.organization, user=user)
    return user


@pytest.mark.django_db
def test_provider_admin_delete_view_summarises_then_deletes(admin_client, provider):
    entry = _with_history(provider, records=1234)
    response = admin_client.get(_delete_url(provider))
    assert response.status_code == 200
    assert not response.context["perms_lacking"] and not response.context["protected"]
    assert dict(response.context["model_count"]) == {
        "providers": 1, "cost records": 1234, "anomalies": 2, "webhook deliveries": 1,
    }
    html = response.content.decode()
    assert "1,234 cost records" in html and "2 anomalies" in html
    assert "1 webhook delivery" in html and "sync history is kept" in html
    assert "2023-01-01" not in html  # a summary, not every record

    response = admin_client.post(_delete_url(provider), {"post": "yes"})
    assert response.status_code == 302
    _assert_deleted_with_history_kept(provider, entry)


@pytest.mark.django_db
def test_provider_admin_delete_summary_counts_what_the_delete_removes(admin_client, provider):
    _with_history(provider, records=7)
    other = ProviderFactory(organization=provider.organization)
    _with_history(other, records=5)  # not counted, not deleted
    counted = dict(admin_client.get(_delete_url(provider)).context["model_count"])
    models = {"providers": Provider, "cost records": CostRecord, "anomalies": Anomaly,
              "webhook deliveries": WebhookDelivery}
    before = {name: model.objects.count() for name, model in models.items()}
    admin_client.post(_delete_url(provider), {"post": "yes"})
    removed = {name: before[name] - model.objects.count() for name, model in models.items()}
    assert removed == counted == {
        "providers": 1, "cost records": 7, "anomalies": 2, "webhook deliveries": 1,
    }


@pytest.mark.django_db
def test_provider_admin_bulk_delete_action(admin_client, provider):
    second = ProviderFactory(organization=provider.organization, name="GCP")
    kept = ProviderFactory(organization=provider.organization, name="Azure")
    entries = [_with_history(provider, records=4), _with_history(second, records=6)]
    _with_history(kept, records=2)

    response = _bulk_delete(admin_client, [provider, second])
    assert response.status_code == 200
    assert dict(response.context["model_count"]) == {
        "providers": 2, "cost records": 10, "anomalies": 4, "webhook deliveries": 2,
    }
    html = response.content.decode()
    assert "AWS Production" in html and "GCP" in html and "sync history is kept" in html

    response = _bulk_delete(admin_client, [provider, second], post="yes")
    assert response.status_code == 302
    for deleted, entry in zip([provider, second], entries, strict=True):
        _assert_deleted_with_history_kept(deleted, entry)
    assert CostRecord.objects.filter(provider=kept).count() == 2


@pytest.mark.django_db
def test_provider_admin_member_with_delete_permission_deletes_own_provider(
    client, provider, member_of_provider_org
):
    """Deleting a provider needs the delete permission on providers only: cost records and
    anomalies are read-only in the admin, and go with their provider."""
    entry = _with_history(provider)
    client.force_login(member_of_provider_org)
    response = client.get(_delete_url(provider))
    assert response.status_code == 200
    assert not response.context["perms_lacking"]
    assert client.post(_delete_url(provider), {"post": "yes"}).status_code == 302
    _assert_deleted_with_history_kept(provider, entry)


@pytest.mark.django_db
def test_provider_admin_member_bulk_deletes_own_provider(client, provider, member_of_provider_org):
    entry = _with_history(provider)
    client.force_login(member_of_provider_org)
    assert _bulk_delete(client, [provider]).status_code == 200
    assert _bulk_delete(client, [provider], post="yes").status_code == 302
    _assert_deleted_with_history_kept(provider, entry)


@pytest.mark.django_db
def test_provider_admin_other_organizations_provider_cannot_be_deleted(
    client, provider, member_of_provider_org
):
    theirs = ProviderFactory(name="Their AWS")
    _with_history(theirs)
    client.force_login(member_of_provider_org)
    assert client.get(_delete_url(theirs)).status_code == 404
    assert client.post(_delete_url(theirs), {"post": "yes"}).status_code == 404
    _bulk_delete(client, [theirs], post="yes")
    _bulk_delete(client, [provider, theirs], post="yes")  # only their own goes
    assert Provider.objects.filter(pk=theirs.pk).exists()
    assert not Provider.objects.filter(pk=provider.pk).exists()
    assert CostRecord.objects.filter(provider=theirs).count() == 3


@pytest.mark.django_db
def test_provider_admin_delete_needs_the_delete_permission(client, provider):
    _with_history(provider)
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_provider"))
    MembershipFactory(organization=provider.organization, user=viewer)
    client.force_login(viewer)
    assert client.get(_delete_url(provider)).status_code == 403
    assert client.post(_delete_url(provider), {"post": "yes"}).status_code == 403
    _bulk_delete(client, [provider], post="yes")  # the action is not offered
    assert Provider.objects.filter(pk=provider.pk).exists()
    assert CostRecord.objects.filter(provider=provider).count() == 3


@pytest.mark.django_db
def test_provider_admin_get_deleted_objects_refuses_without_delete_permission(
    rf, provider, member_of_provider_org
):
    """The summary itself says so too, should a view call it without checking first."""
    from django.contrib.admin import site

    viewer = UserFactory(username="viewer", is_staff=True)
    request = rf.get("/")
    request.user = viewer
    _, _, perms_needed, _ = site._registry[Provider].get_deleted_objects([provider], request)
    assert perms_needed == {"provider"}
    request.user = member_of_provider_org
    assert site._registry[Provider].get_deleted_objects([provider], request)[2] == set()


def test_provider_admin_delete_summary_follows_every_relation_to_providers():
    """The summary counts what CASCADE keys delete and says the rest (SET_NULL: the sync
    history) is kept; a PROTECT or RESTRICT key would need it to say why a delete is
    refused, so a new one must come with that."""
    from providers.admin import cascaded_relations

    cascaded = list(cascaded_relations(Provider))
    assert cascaded == [
        (CostRecord, "provider"), (Anomaly, "provider"), (WebhookDelivery, "anomaly__provider"),
    ]
    for model in (Provider, *(model for model, _ in cascaded)):
        for rel in model._meta.related_objects:
            assert rel.on_delete in (models.CASCADE, models.SET_NULL), rel
    assert SyncJobProvider._meta.get_field("provider").remote_field.on_delete is models.SET_NULL


def _page(client, method, *args, **kwargs):
    """The page's HTML and the SQL it ran."""
    with CaptureQueriesContext(connection) as queries:
        response = getattr(client, method)(*args, **kwargs)
    assert response.status_code == 200
    return response.content.decode(), [query["sql"] for query in queries]


def _assert_rows_never_fetched(sql):
    """Related rows are counted by the database, never read into Python one by one."""
    for statement in sql:
        for table in ("costs_costrecord", "costs_anomaly", "costs_webhookdelivery"):
            if f'"{table}"' in statement:
                assert "COUNT(" in statement.upper(), statement


@pytest.mark.django_db
def test_provider_admin_delete_confirmation_does_not_grow_with_records(admin_client, provider):
    """585,000 records took 146 s to list: the page counts them instead, in a fixed number
    of queries."""
    big = ProviderFactory(organization=provider.organization, name="AWS Productioo")
    _with_history(provider, records=5)
    _with_history(big, records=500)
    pages = {}
    for name, selected in (("small", provider), ("big", big)):
        pages[name, "view"] = _page(admin_client, "get", _delete_url(selected))
        pages[name, "bulk"] = _page(admin_client, "post", CHANGELIST, {
            "action": "delete_selected", "_selected_action": [selected.pk]
        })
    for kind, most in (("view", 10), ("bulk", 12)):
        (small_html, small_sql), (big_html, big_sql) = pages["small", kind], pages["big", kind]
        assert len(big_sql) == len(small_sql) <= most, kind
        _assert_rows_never_fetched(big_sql)
        assert abs(len(big_html) - len(small_html)) < 50, kind


@pytest.mark.django_db
@pytest.mark.parametrize(("admin_class", "url", "field"), [
    ("providers.admin.ProviderAdmin", "/admin/providers/provider/{pk}/change/", "new_credentials"),
    ("costs.admin_review.AlertWebhookAdmin", "/admin/costs/alertwebhook/add/", "new_secret"),
])
def test_admin_secret_fields_are_hidden_from_error_reports(
    admin_client, provider, monkeypatch, admin_class, url, field
):
    # A 500 while saving (DEBUG on, or ADMINS configured) printed the POST in clear.
    from django.utils.module_loading import import_string
    from django.views.debug import SafeExceptionReporterFilter

    reported = {}

    def failing_save(self, request, obj, form, change):
        reported.update(SafeExceptionReporterFilter().get_post_parameters(request))
        raise RuntimeError("the database went away")

    monkeypatch.setattr(import_string(admin_class), "save_model", failing_save)
    admin_client.raise_request_exception = False
    if field == "new_credentials":
        data = _form(provider, new_credentials=json.dumps(CREDENTIALS))
    else:
        data = {"organization": provider.organization_id, "name": "Finance",
                "url": "https://hooks.example.com/x", "min_severity": "high",
                "max_age_days": 7, "is_active": "on", "new_secret": SECRET}
    response = admin_client.post(url.format(pk=provider.pk), data)
    assert response.status_code == 500
    assert reported[field] == [SafeExceptionReporterFilter.cleansed_substitute]
    assert SECRET not in str(reported) and KEY_ID not in str(reported)
