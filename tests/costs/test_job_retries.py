"""A throttled provider is retried by the real Celery task (eagerly here) with the real
boto3 client, its transport stubbed; other failures are not retried."""

from datetime import date
from decimal import Decimal

import pytest
from botocore.stub import Stubber

from costs.models import CostRecord, SyncJob
from costs.tasks import MAX_RETRIES
from providers.adapters import aws
from tests.factories import ProviderFactory
from tests.providers.test_aws import KEYS, day_result, group, page, request

pytestmark = pytest.mark.django_db

WINDOW = {"date_from": "2024-01-14", "date_to": "2024-01-15"}


class PerAttemptStubs:
    """Each Cost Explorer client the adapter builds (one per task attempt) answers the next
    queued outcome: a client error code or a response."""

    def __init__(self):
        self.outcomes = []
        self.stubbers = []

    def make_client(self, real_new_client, service, **kwargs):
        client = real_new_client(service, **kwargs)
        stubber = Stubber(client)
        if service == "ce" and self.outcomes:
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, str):
                stubber.add_client_error(
                    "get_cost_and_usage", service_error_code=outcome, http_status_code=400,
                    expected_params=request(),
                )
            else:
                stubber.add_response("get_cost_and_usage", outcome, request())
        stubber.activate()
        self.stubbers.append(stubber)
        return client


@pytest.fixture
def stubs(monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    state = PerAttemptStubs()
    real = aws._new_client
    monkeypatch.setattr(
        aws, "_new_client", lambda service, **kwargs: state.make_client(real, service, **kwargs)
    )
    monkeypatch.setattr(aws, "_sleep", lambda seconds: None)
    yield state
    assert state.outcomes == [], "every queued outcome was requested"


@pytest.fixture
def aws_provider(org):
    provider = ProviderFactory(
        organization=org, kind="aws", name="AWS", config={"account_id": "123456789012"}
    )
    provider.credentials = KEYS
    provider.save()
    return provider


def _sync(api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/costs/sync", WINDOW, format="json")
    assert response.status_code == 202
    return api.get(f"/api/v1/jobs/{response.json()['job_id']}").json()


def test_sync_retries_throttled_provider_then_succeeds(
    api, aws_provider, stubs, django_capture_on_commit_callbacks
):
    stubs.outcomes = [
        "ThrottlingException",
        page(day_result("2024-01-14", group("Amazon EC2", "us-east-1", "5.25", "5.00"))),
    ]

    job = _sync(api, django_capture_on_commit_callbacks)

    assert job["status"] == "succeeded", job
    assert job["providers"][0]["records_written"] == 1
    record = CostRecord.objects.get(provider=aws_provider)
    assert (record.day, record.billed_amount) == (date(2024, 1, 14), Decimal("5.25"))


def test_sync_gives_up_after_max_retries(
    api, aws_provider, stubs, django_capture_on_commit_callbacks
):
    stubs.outcomes = ["ThrottlingException"] * (MAX_RETRIES + 1)

    job = _sync(api, django_capture_on_commit_callbacks)

    assert job["status"] == "failed"
    assert f"gave up after {MAX_RETRIES} retries" in job["providers"][0]["error"]
    assert not CostRecord.objects.exists()


def test_sync_without_a_broker_does_not_retry_a_throttled_provider_at_once(
    api, aws_provider, stubs, settings, django_capture_on_commit_callbacks
):
    # The embedded default runs tasks in the request: its retries ran at once, whatever
    # wait the provider asked for, calling Cost Explorer 7 times in a row.
    settings.TASK_EAGER_RETRIES = False
    stubs.outcomes = ["ThrottlingException"]

    job = _sync(api, django_capture_on_commit_callbacks)

    assert job["status"] == "failed"
    assert "not retried: without a task queue" in job["providers"][0]["error"]
    assert len(stubs.stubbers) == 1  # one Cost Explorer client, one call


def test_sync_auth_error_is_not_retried(
    api, aws_provider, stubs, django_capture_on_commit_callbacks
):
    stubs.outcomes = ["UnrecognizedClientException"]

    job = _sync(api, django_capture_on_commit_callbacks)

    assert job["status"] == "failed"
    error = job["providers"][0]["error"]
    assert KEYS["aws_secret_access_key"] not in error
    assert SyncJob.objects.get().status == "failed"
