from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey, Membership
from accounts.services import api_key_create


def _get(raw_key, scheme="Bearer"):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {raw_key}")
    return client.get("/api/v1/providers")


@pytest.mark.django_db
def test_auth_bearer_key_accepted_and_last_used_recorded(membership):
    api_key, raw_key = api_key_create(membership=membership)
    assert _get(raw_key).status_code == 200
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["Token", "Basic"])
def test_auth_other_schemes_rejected(membership, scheme):
    _, raw_key = api_key_create(membership=membership)
    response = _get(raw_key, scheme=scheme)
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


@pytest.mark.django_db
def test_auth_missing_header_is_401_with_error_format():
    response = APIClient().get("/api/v1/costs/overview")
    assert response.status_code == 401
    assert set(response.json()) == {"error", "code", "details"}
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "raw_key", ["nonsense", "ia_deadbeef_wrong", "ia__", "ia_x", "ia_dead\x00beef_x", "ia_DEAD_x"]
)
def test_auth_invalid_key_is_401(membership, raw_key):
    api_key_create(membership=membership)
    assert _get(raw_key).status_code == 401


@pytest.mark.django_db
def test_auth_revoked_and_expired_keys_are_401(membership):
    revoked, raw_revoked = api_key_create(membership=membership)
    revoked.revoked_at = timezone.now()
    revoked.save()
    _, raw_expired = api_key_create(
        membership=membership, expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert _get(raw_revoked).json()["error"] == "API key revoked"
    assert _get(raw_expired).json()["error"] == "API key expired"


@pytest.mark.django_db
def test_auth_key_stored_only_as_hash(membership):
    api_key, raw_key = api_key_create(membership=membership)
    stored = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert raw_key not in str(stored)
    assert raw_key.startswith(f"ia_{api_key.prefix}_")


@pytest.mark.django_db
def test_createapikey_creates_org_user_and_prints_key_last(capsys):
    call_command("createapikey", "--org", "Acme", "--user", "alice", "--role", "viewer")
    raw_key = capsys.readouterr().out.strip().splitlines()[-1]
    membership = Membership.objects.get(user__username="alice", organization__name="Acme")
    assert membership.role == "viewer"
    assert _get(raw_key).status_code == 200
    call_command("createapikey", "--org", "Acme", "--user", "alice")
    assert Membership.objects.filter(organization__name="Acme").count() == 1
    assert Membership.objects.get(user__username="alice").role == "viewer"  # kept
    call_command("createapikey", "--org", "Acme", "--user", "alice", "--role", "admin")
    assert Membership.objects.get(user__username="alice").role == "admin"  # asked for


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("first", "second"),
    [("Ромашка", "Лютик"), ("日本", "!!!"), ("Acme Inc", "Acme, Inc.")],
)
def test_createapikey_names_with_one_slug_are_two_organizations(capsys, first, second):
    call_command("createapikey", "--org", first, "--user", "one")
    call_command("createapikey", "--org", second, "--user", "two")
    one = Membership.objects.get(user__username="one").organization
    two = Membership.objects.get(user__username="two").organization
    assert (one.name, two.name) == (first, second)
    assert one != two and one.slug != two.slug


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--org", "", "--user", "u"], "--org: the organization name must be 1 to 200"),
        (["--org", "x" * 201, "--user", "u"], "--org: the organization name must be 1 to 200"),
        (["--org", "Acme", "--user", " "], "--user: the username must be 1 to 150"),
        (["--org", "Acme", "--user", "u" * 151], "--user: the username must be 1 to 150"),
        (["--org", "Acme", "--user", "a b"], "--user: Enter a valid username"),
        (["--org", "Acme", "--user", "u", "--name", "n" * 101], "--name: at most 100"),
    ],
)
def test_createapikey_bad_names_are_clean_errors(args, problem):
    with pytest.raises(CommandError, match=problem):
        call_command("createapikey", *args)
    assert not Membership.objects.exists()


@pytest.mark.django_db
def test_createapikey_long_name_gets_a_slug_that_fits(capsys):
    call_command("createapikey", "--org", "Long " * 40, "--user", "u")
    organization = Membership.objects.get().organization
    assert len(organization.slug) <= 100 and organization.slug.startswith("long-long")
