"""The provider admin: credentials are write-only there too."""

import json

import pytest

from providers.models import Provider
from tests.factories import AnomalyFactory, OrganizationFactory, ProviderFactory

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
