import hashlib
import hmac
import json
import socket
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
import responses
from django.db import IntegrityError, transaction

from costs.models import AlertWebhook, Anomaly, WebhookDelivery
from costs.selectors import utc_today
from costs.services.alerts import alerts_enqueue, webhook_deliver
from costs.tasks import WEBHOOK_MAX_RETRIES, deliver_webhook
from tests.factories import AnomalyFactory, ProviderFactory

HOOK = "https://hooks.example.com/infraaudit"
SECRET = "s3cret-signing-key-for-tests"
PUBLIC = "93.184.215.14"  # a global address; no test ever connects to it


def fake_dns(monkeypatch, answers: dict[str, list[str] | Callable[[], list[str]]]) -> None:
    """Resolve the names of ``answers`` without DNS (a callable gives the answer of each
    lookup in turn); any other host resolves as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        answer = answers[host]
        addresses = answer() if callable(answer) else answer
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def hooks_dns(monkeypatch):
    """hooks.example.com is a public receiver (every send resolves and checks it)."""
    fake_dns(monkeypatch, {"hooks.example.com": [PUBLIC]})


@pytest.fixture
def webhook(org):
    hook = AlertWebhook(organization=org, name="Finance", url=HOOK, min_severity="medium")
    hook.secret = SECRET
    hook.save()
    return hook


@pytest.fixture
def anomaly(org):
    return AnomalyFactory(
        provider=ProviderFactory(organization=org), date=utc_today() - timedelta(days=1),
        severity="high", actual_amount=Decimal("452.304"), expected_amount=Decimal("290.0049"),
    )


def enqueue(django_capture_on_commit_callbacks, anomalies):
    with django_capture_on_commit_callbacks(execute=True):
        return alerts_enqueue(anomalies=anomalies)


@pytest.mark.django_db
@responses.activate
def test_alert_is_signed_with_hmac_sha256_of_the_body(webhook, anomaly, django_capture_on_commit_callbacks):
    responses.add(responses.POST, HOOK, status=204)
    (delivery_id,) = enqueue(django_capture_on_commit_callbacks, [anomaly])
    assert len(responses.calls) == 1
    sent = responses.calls[0].request
    expected = "sha256=" + hmac.new(SECRET.encode(), sent.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(sent.headers["X-InfraAudit-Signature"], expected)
    assert sent.headers["X-InfraAudit-Event"] == "cost.anomaly"
    assert sent.headers["X-InfraAudit-Delivery"] == str(delivery_id)
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Host"] == "hooks.example.com"
    body = json.loads(sent.body)
    assert body == {
        "event": "cost.anomaly", "anomaly_id": anomaly.id, "provider_id": anomaly.provider_id,
        "service": None, "date": anomaly.date.isoformat(), "actual_amount": 452.3,
        "expected_amount": 290.0, "deviation_percent": 56.0, "currency": "USD",
        "severity": "high",
    }
    assert SECRET not in sent.body.decode()
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 1, 204)


@pytest.mark.django_db
def test_secret_is_stored_encrypted(webhook):
    raw = AlertWebhook.objects.filter(pk=webhook.pk).values_list("secret_encrypted", flat=True)[0]
    assert SECRET not in raw and raw
    assert AlertWebhook.objects.get(pk=webhook.pk).secret == SECRET


@pytest.mark.django_db
@responses.activate
def test_alert_retries_transient_failures_then_delivers(webhook, anomaly, django_capture_on_commit_callbacks):
    responses.add(responses.POST, HOOK, status=503)
    responses.add(responses.POST, HOOK, body=requests.ConnectionError("connection refused"))
    responses.add(responses.POST, HOOK, status=429, headers={"Retry-After": "1"})
    responses.add(responses.POST, HOOK, status=200)
    (delivery_id,) = enqueue(django_capture_on_commit_callbacks, [anomaly])
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 4, 200)
    bodies = {call.request.body for call in responses.calls}
    assert len(bodies) == 1  # every retry sends the same signed bytes


@pytest.mark.django_db
@responses.activate
def test_alert_gives_up_after_the_retries(webhook, anomaly, django_capture_on_commit_callbacks):
    responses.add(responses.POST, HOOK, body=requests.Timeout("read timed out"))
    (delivery_id,) = enqueue(django_capture_on_commit_callbacks, [anomaly])
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.status == "failed"
    assert delivery.attempts == WEBHOOK_MAX_RETRIES + 1 == len(responses.calls)
    assert "Timeout" in delivery.error and "gave up" in delivery.error


@pytest.mark.django_db
@responses.activate
def test_alert_does_not_retry_a_client_error(webhook, anomaly, django_capture_on_commit_callbacks):
    responses.add(responses.POST, HOOK, status=410)
    (delivery_id,) = enqueue(django_capture_on_commit_callbacks, [anomaly])
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.error) == ("failed", 1, "HTTP 410")


@pytest.mark.django_db
@responses.activate
def test_never_more_than_one_alert_per_anomaly(webhook, anomaly, django_capture_on_commit_callbacks):
    responses.add(responses.POST, HOOK, status=200)
    (delivery_id,) = enqueue(django_capture_on_commit_callbacks, [anomaly])
    deliver_webhook.delay(delivery_id)  # a redelivered task
    assert webhook_deliver(delivery_id=delivery_id) == "delivered"
    assert len(responses.calls) == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        WebhookDelivery.objects.create(webhook=webhook, anomaly=anomaly, payload={})
    assert WebhookDelivery.objects.filter(anomaly=anomaly).count() == 1


@pytest.mark.django_db
def test_alerts_respect_severity_activity_age_and_organization(webhook, org, django_capture_on_commit_callbacks):
    provider = ProviderFactory(organization=org)
    yesterday = utc_today() - timedelta(days=1)
    low = AnomalyFactory(provider=provider, date=yesterday, severity="low")
    medium = AnomalyFactory(provider=provider, date=yesterday, service="EC2", severity="medium")
    old = AnomalyFactory(provider=provider, date=yesterday - timedelta(days=30), severity="critical")
    other_org = AnomalyFactory(date=yesterday, severity="critical")
    AlertWebhook.objects.create(organization=org, name="off", url=HOOK, is_active=False)
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, HOOK, status=200)
        enqueue(django_capture_on_commit_callbacks, [low, medium, old, other_org])
        assert len(mocked.calls) == 1
    assert list(WebhookDelivery.objects.values_list("anomaly_id", "webhook_id")) == [
        (medium.id, webhook.id)
    ]


@pytest.mark.django_db
@responses.activate
def test_detection_alerts_new_anomalies_once(webhook, org, django_capture_on_commit_callbacks):
    from costs.services import anomalies as detector
    from tests.costs.test_anomalies import SPIKE, TODAY, weekly_series, write_series

    webhook.max_age_days = 30  # the spike is 20 days before the detection's "today"
    webhook.save()
    responses.add(responses.POST, HOOK, status=200)
    provider = ProviderFactory(organization=org)
    ec2 = weekly_series(base=400, seed=1)
    ec2[180] *= 3
    write_series(provider, {"EC2": ec2})
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            detector.anomalies_detect(provider=provider, start=SPIKE, end=SPIKE, today=TODAY)
    anomalies = Anomaly.objects.filter(provider=provider)
    assert anomalies.count() == 2  # the total and EC2
    assert WebhookDelivery.objects.filter(anomaly__in=anomalies).count() == 2
    assert len(responses.calls) == 2


@pytest.mark.django_db
@responses.activate
def test_alert_to_an_internal_address_is_refused_at_send_time(org, anomaly, django_capture_on_commit_callbacks):
    # Saved around the admin's check (or a name that resolves elsewhere by now).
    webhook = AlertWebhook(organization=org, name="Metadata", url="http://169.254.169.254/latest/")
    webhook.secret = "s" * 32
    webhook.save()
    (delivery_id,) = enqueue(django_capture_on_commit_callbacks, [anomaly])
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.status == "failed"
    assert delivery.error == "refused: 169.254.169.254 is an internal address (169.254.169.254)"
    assert len(responses.calls) == 0  # nothing was sent
