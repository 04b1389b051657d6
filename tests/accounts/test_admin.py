"""The accounts admin: organizations, memberships and API keys (shown once at creation)."""

import re

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from accounts.models import ApiKey, Membership, Organization
from accounts.services import api_key_create
from tests.factories import MembershipFactory, UserFactory

KEY_PATTERN = re.compile(r"ia_[0-9a-f]{8}_[A-Za-z0-9_-]+")


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["organization", "membership", "apikey"])
def test_accounts_admin_changelist_and_change_pages_load(admin_client, membership, model):
    api_key, _ = api_key_create(membership=membership, name="ci")
    obj = {"organization": membership.organization, "membership": membership, "apikey": api_key}[
        model
    ]
    assert admin_client.get(f"/admin/accounts/{model}/").status_code == 200
    assert admin_client.get(f"/admin/accounts/{model}/{obj.pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/accounts/{model}/add/").status_code == 200


@pytest.mark.django_db
def test_accounts_admin_requires_staff_login(client, membership):
    response = client.get("/admin/accounts/apikey/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_accounts_admin_organization_add_with_membership_inline(admin_client):
    user = UserFactory(username="alice")
    data = {
        "name": "Acme",
        "slug": "acme",
        "memberships-TOTAL_FORMS": "1",
        "memberships-INITIAL_FORMS": "0",
        "memberships-0-user": user.pk,
        "memberships-0-role": "admin",
    }
    response = admin_client.post("/admin/accounts/organization/add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    org = Organization.objects.get(slug="acme")
    assert org.memberships.get().user == user


@pytest.mark.django_db
def test_accounts_admin_api_key_created_and_shown_once(admin_client, membership):
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"membership": membership.pk, "name": "deploy", "expires_at_0": "", "expires_at_1": ""},
    )
    # The message that shows the key is kept in the session, never set as a cookie
    # (signed, not encrypted: readable by any proxy or log that records cookies).
    assert response.status_code == 302 and "messages" not in response.cookies
    response = admin_client.get(response["Location"])
    assert response.status_code == 200
    messages = [str(message) for message in response.context["messages"]]
    shown = [m for message in messages for m in KEY_PATTERN.findall(message)]
    assert len(shown) == 1
    raw_key = shown[0]

    api_key = ApiKey.objects.get()
    assert api_key.name == "deploy"
    assert api_key.membership == membership
    assert raw_key.startswith(f"ia_{api_key.prefix}_")
    assert raw_key not in str(ApiKey.objects.values().get())  # only the hash is stored

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert client.get("/api/v1/providers").status_code == 200

    # Never shown again: not on the change page, nor on the list.
    change = admin_client.get(f"/admin/accounts/apikey/{api_key.pk}/change/").content.decode()
    listing = admin_client.get("/admin/accounts/apikey/").content.decode()
    for html in (change, listing):
        assert raw_key not in html
        assert api_key.key_hash not in html
        assert api_key.prefix in html


@pytest.mark.django_db
def test_accounts_admin_api_key_edit_keeps_hash(admin_client, membership):
    api_key, raw_key = api_key_create(membership=membership, name="old")
    response = admin_client.post(
        f"/admin/accounts/apikey/{api_key.pk}/change/",
        {"membership": membership.pk, "name": "renamed", "expires_at_0": "", "expires_at_1": ""},
    )
    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.name == "renamed"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert client.get("/api/v1/providers").status_code == 200


@pytest.mark.django_db
def test_accounts_admin_revoke_action_disables_keys(admin_client, membership):
    api_key, raw_key = api_key_create(membership=membership)
    response = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke", "_selected_action": [api_key.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 1 key(s)." in [str(m) for m in response.context["messages"]]
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert client.get("/api/v1/providers").status_code == 401


@pytest.mark.django_db
def test_accounts_admin_membership_role_change(admin_client):
    membership = MembershipFactory(role=Membership.Role.VIEWER)
    response = admin_client.post(
        f"/admin/accounts/membership/{membership.pk}/change/",
        {"organization": membership.organization_id, "user": membership.user_id, "role": "admin"},
    )
    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.is_admin


@pytest.mark.django_db
def test_accounts_admin_membership_organization_choices_are_the_users_own(client, membership):
    other = MembershipFactory()
    staff = UserFactory(username="staff", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_membership", "add_membership", "view_organization"]
    ))
    MembershipFactory(organization=membership.organization, user=staff, role="viewer")
    client.force_login(staff)
    found = client.get(
        "/admin/autocomplete/",
        {"app_label": "accounts", "model_name": "membership", "field_name": "organization"},
    ).json()
    assert [r["id"] for r in found["results"]] == [str(membership.organization_id)]
    response = client.post(
        "/admin/accounts/membership/add/",
        {"organization": other.organization_id, "user": staff.pk, "role": "admin"},
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Membership.objects.filter(organization=other.organization, user=staff).exists()


@pytest.mark.django_db(transaction=True)
def test_accounts_migration_gives_each_existing_organization_its_own_external_id():
    from tests.migrations import migrate_to, migrate_to_latest

    try:
        old = migrate_to([("accounts", "0001_initial")])
        organizations = old.get_model("accounts", "Organization").objects
        ids = [organizations.create(name=f"Org {n}", slug=f"org-{n}").pk for n in range(3)]
        new = migrate_to([("accounts", "0002_organization_aws_external_id")])
        external = new.get_model("accounts", "Organization").objects.filter(pk__in=ids)
        values = list(external.values_list("aws_external_id", flat=True))
        assert len(set(values)) == 3 and all(v.startswith("infraaudit-") for v in values)
    finally:
        migrate_to_latest()


@pytest.mark.django_db
def test_accounts_admin_shows_the_organizations_aws_external_id_read_only(admin_client, org):
    # What the organization's AWS roles must require in their trust policy; never edited.
    page = admin_client.get(f"/admin/accounts/organization/{org.pk}/change/").content.decode()
    assert org.aws_external_id in page
    assert 'name="aws_external_id"' not in page
