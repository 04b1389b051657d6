"""Each organization reads only its own import folder, IMPORT_ROOT/<its slug>/.

The import root is shared by every organization, so a FOCUS provider of one must never read
another's exports: not when its uri is set through the API (create and update), and not at
sync time either (a uri stored around the API, a symlink planted later). URL-shaped uris we
do not read are refused by scheme instead of being taken for local paths. Everything runs
through the real API, services, sync and adapter."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from costs.models import CostRecord, SyncJob
from costs.services.sync import cost_records_sync
from providers.adapters.base import ProviderError
from providers.models import Provider
from tests.costs.focus_files import write_focus_csv
from tests.factories import OrganizationFactory, ProviderFactory

pytestmark = pytest.mark.django_db

VICTIM = "acme"  # the organization whose spend the other one tries to read
SECRET_AMOUNT = "1234.56"
UNSUPPORTED = [
    ("gs://my-bucket/focus/", "gs"),
    ("S3://my-bucket/focus/", "S3"),
    ("https://example.com/focus.csv", "https"),
    ("file:///etc/passwd", "file"),
    ("http://169.254.169.254/latest/meta-data/", "http"),
]


@pytest.fixture
def victim_export(import_root):
    """Organization acme's spend, in its own import folder (as `make demo` lays it out)."""
    OrganizationFactory(slug=VICTIM, name="Acme")
    folder = import_root / VICTIM / "aws-production"
    write_focus_csv(folder / "export.csv",
                    [{"day": "2024-09-01", "service": "EC2", "amount": SECRET_AMOUNT}])
    return folder


@pytest.fixture
def org_folder(import_root, org):
    """The import folder of ``org``, the organization ``api`` is an admin of."""
    folder = import_root / org.slug
    folder.mkdir()
    return folder


def _outside(org_folder) -> list[str]:
    return [f"must be inside this organization's import folder {org_folder}"]


def _create(api, uri: str, name: str = "focus"):
    return api.post("/api/v1/providers", {"name": name, "kind": "focus",
                                          "config": {"uri": uri}}, format="json")


def _sync(api, provider, django_capture_on_commit_callbacks) -> dict:
    """Sync one provider through the API (the task runs eagerly at commit); the job."""
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/costs/sync", {"provider_id": provider.id}, format="json")
    assert response.status_code == 202, response.content
    return api.get(f"/api/v1/jobs/{response.json()['job_id']}").json()


# -- create and update ------------------------------------------------------------------
@pytest.mark.parametrize("uri", [
    "{victim}", "{victim}/export.csv", "{root}/acme", "{root}", "{root}/",
])
def test_create_with_another_orgs_folder_or_the_root_is_400(
    api, import_root, org_folder, victim_export, uri
):
    uri = uri.format(victim=victim_export, root=import_root)
    response = _create(api, uri)
    assert response.status_code == 400, response.content
    assert response.json()["details"]["config"]["uri"] == _outside(org_folder)
    assert not Provider.objects.filter(kind="focus").exclude(organization__slug=VICTIM).exists()


def test_create_through_a_symlink_or_dotdot_to_another_orgs_folder_is_400(
    api, org_folder, victim_export
):
    (org_folder / "shared").symlink_to(victim_export, target_is_directory=True)
    for uri in ("shared", str(org_folder / "shared"), "shared/export.csv"):
        response = _create(api, uri)
        assert response.status_code == 400, uri
        assert response.json()["details"]["config"]["uri"] == _outside(org_folder)
    response = _create(api, f"../{VICTIM}/aws-production")
    assert response.status_code == 400
    assert response.json()["details"]["config"]["uri"] == ["must not contain '..'"]
    assert not Provider.objects.exists()


@pytest.mark.parametrize("uri", ["{victim}", "{root}"])
def test_update_to_another_orgs_folder_or_the_root_is_400(
    api, org, import_root, org_folder, victim_export, uri
):
    provider = ProviderFactory(organization=org, kind="focus",
                               config={"uri": str(org_folder / "mine")})
    response = api.patch(f"/api/v1/providers/{provider.id}",
                         {"config": {"uri": uri.format(victim=victim_export, root=import_root)}},
                         format="json")
    assert response.status_code == 400, response.content
    assert response.json()["details"]["config"]["uri"] == _outside(org_folder)
    provider.refresh_from_db()
    assert provider.config == {"uri": str(org_folder / "mine")}


def test_relative_uri_resolves_inside_the_orgs_folder(api, org_folder, victim_export):
    write_focus_csv(org_folder / "aws" / "export.csv",
                    [{"day": "2024-09-01", "service": "S3", "amount": "2.50"}])
    response = _create(api, "aws")
    assert response.status_code == 201, response.content
    assert response.json()["config"]["uri"] == str(org_folder / "aws")

    outcome = cost_records_sync(provider=Provider.objects.get(pk=response.json()["id"]))
    assert outcome.rows_read == 1
    assert [str(r.billed_amount) for r in CostRecord.objects.all()] == ["2.500000000000"]


def test_relative_uri_naming_another_orgs_folder_stays_in_ones_own(
    api, org_folder, victim_export
):
    # The victim's folder name, relative: it means this organization's folder of that name.
    response = _create(api, "aws-production")
    assert response.status_code == 201, response.content
    assert response.json()["config"]["uri"] == str(org_folder / "aws-production")
    response = _create(api, f"{VICTIM}/aws-production", name="second")
    assert response.status_code == 201, response.content
    assert response.json()["config"]["uri"] == str(org_folder / VICTIM / "aws-production")


# -- at sync time: a uri stored around the API ---------------------------------------------
@pytest.mark.parametrize("uri", [
    "{victim}", "{victim}/export.csv", "{root}", "{root}/acme", "acme/aws-production",
    "{own}/shared",
])
def test_stored_uri_outside_the_orgs_folder_fails_at_sync_and_reads_nothing(
    api, org, import_root, org_folder, victim_export, django_capture_on_commit_callbacks, uri
):
    (org_folder / "shared").symlink_to(victim_export, target_is_directory=True)
    uri = uri.format(victim=victim_export, root=import_root, own=org_folder)
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": uri})

    job = _sync(api, provider, django_capture_on_commit_callbacks)

    assert job["status"] == SyncJob.Status.FAILED
    error = job["providers"][0]["error"]
    if uri.startswith("/"):
        assert f"must be inside this organization's import folder {org_folder}" in error
    else:  # relative: a folder of its own organization, which it does not have
        assert "does not exist" in error
    assert SECRET_AMOUNT not in error
    assert not CostRecord.objects.exists()


def test_symlink_planted_after_validation_is_refused_at_sync(org, org_folder, victim_export):
    folder = org_folder / "exports"
    write_focus_csv(folder / "mine.csv", [{"day": "2024-09-01", "service": "S3", "amount": "1"}])
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": str(folder)})
    (folder / "theirs.csv").symlink_to(victim_export / "export.csv")
    with pytest.raises(ProviderError, match=f"import folder {org_folder}$"):
        cost_records_sync(provider=provider)
    assert not CostRecord.objects.exists()


# -- schemes -----------------------------------------------------------------------------
@pytest.mark.parametrize(("uri", "scheme"), UNSUPPORTED)
def test_unsupported_scheme_is_400_naming_it(api, org, org_folder, uri, scheme):
    response = _create(api, uri)
    assert response.status_code == 400, response.content
    assert response.json()["details"]["config"]["uri"] == [
        f"unsupported scheme {scheme!r}: use s3://bucket/prefix/ or a path inside this "
        f"organization's import folder {org_folder}"
    ]
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": "s3://bucket/x/"})
    response = api.patch(f"/api/v1/providers/{provider.id}", {"config": {"uri": uri}},
                         format="json")
    assert response.status_code == 400
    assert f"unsupported scheme {scheme!r}" in response.json()["details"]["config"]["uri"][0]


def test_lower_case_s3_is_still_accepted(api, org_folder):
    response = _create(api, "s3://my-bucket/focus/")
    assert response.status_code == 201, response.content
    assert response.json()["config"]["uri"] == "s3://my-bucket/focus/"


@pytest.mark.parametrize(("uri", "scheme"), UNSUPPORTED)
def test_stored_unsupported_scheme_fails_at_sync(org, org_folder, uri, scheme):
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": uri})
    with pytest.raises(ProviderError, match=f"unsupported scheme {scheme!r}"):
        cost_records_sync(provider=provider)


# -- the demo ----------------------------------------------------------------------------
def test_loaddemo_writes_into_the_demo_orgs_own_folder(
    import_root, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("loaddemo", "--days", "400", "--force", stdout=StringIO())
    providers = list(Provider.objects.select_related("organization"))
    assert providers
    for provider in providers:
        folder = import_root / provider.organization.slug
        assert provider.config["uri"].startswith(f"{folder}/"), provider.config
    job = SyncJob.objects.get()
    assert job.status == SyncJob.Status.SUCCEEDED, job.error
    assert CostRecord.objects.exists()
