import pytest
from rest_framework.test import APIClient

from accounts.models import Membership
from accounts.services import api_key_create
from tests.factories import MembershipFactory


@pytest.fixture
def membership(db):
    return MembershipFactory(role=Membership.Role.ADMIN)


@pytest.fixture
def org(membership):
    return membership.organization


def client_for(membership: Membership) -> APIClient:
    _, raw_key = api_key_create(membership=membership)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


@pytest.fixture
def api(membership):
    """An API client authenticated as an admin of ``org``."""
    return client_for(membership)


@pytest.fixture
def viewer_api(org):
    return client_for(MembershipFactory(organization=org, role=Membership.Role.VIEWER))


@pytest.fixture
def other_api(db):
    """An admin of another organization."""
    return client_for(MembershipFactory(role=Membership.Role.ADMIN))


def pytest_sessionstart(session):
    """Fail at once, with a clear message, when the suite's PostgreSQL is not reachable."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        pytest.exit("the test suite runs on PostgreSQL; set DATABASE_URL=postgres://...", 2)
    try:
        psycopg.connect(
            host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
            password=db["PASSWORD"] or None, dbname="postgres", connect_timeout=3,
        ).close()
    except psycopg.OperationalError as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {db['HOST']}:{db['PORT']} as {db['USER']} "
            f"({exc}). Start it or set DATABASE_URL.",
            2,
        )


@pytest.fixture
def import_root(settings, tmp_path):
    """A fresh INFRAAUDIT_IMPORT_ROOT (and upload folder beside it), resolved: each
    organization's local FOCUS exports go in ``import_root / <its slug>``."""
    root = tmp_path / "imports"
    root.mkdir()
    settings.IMPORT_ROOT = root
    settings.UPLOAD_DIR = tmp_path / "uploads"
    return root.resolve()


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    """Run on_commit callbacks (the task enqueue) as a real commit would."""

    def run(callable_, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return callable_(*args, **kwargs)

    return run
