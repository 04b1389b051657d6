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
from celery.exceptions import SoftTimeLimitExceeded
from django.db import IntegrityError, transaction

from costs.models import AlertWebhook, Anomaly, CostRecord, WebhookDelivery
from costs.selectors import utc_today
from costs.services import alerts
from costs.services.alerts import alerts_enqueue, destination_problem, webhook_deliver
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
def test_detection_alerts_an_anomaly_once_when_a_restatement_raises_it_to_the_webhooks_severity(
    webhook, org, django_capture_on_commit_callbacks
):
    """A day first detected below a webhook's severity, then restated larger (late data
    of that day): the webhook gets it when it reaches the severity, once. It used to get
    nothing, as only newly created anomalies were alerted."""
    from costs.services import anomalies as detector
    from tests.costs.test_anomalies import SPIKE, TODAY, weekly_series, write_series

    webhook.max_age_days, webhook.min_severity = 30, "critical"
    webhook.save()
    responses.add(responses.POST, HOOK, status=200)
    provider = ProviderFactory(organization=org)

    def detect(spike: float) -> Anomaly:
        ec2 = weekly_series(base=400, seed=1)
        ec2[180] *= spike
        CostRecord.objects.filter(provider=provider).delete()
        write_series(provider, {"EC2": ec2})
        with django_capture_on_commit_callbacks(execute=True):
            detector.anomalies_detect(provider=provider, start=SPIKE, end=SPIKE, today=TODAY)
        return Anomaly.objects.get(provider=provider, service="EC2")

    assert detect(1.6).severity != "critical"
    assert not WebhookDelivery.objects.exists()

    escalated = detect(12)
    assert escalated.severity == "critical"
    detect(12)
    detect(14)
    critical = Anomaly.objects.filter(provider=provider, severity="critical")
    assert escalated in critical
    assert sorted(WebhookDelivery.objects.values_list("anomaly_id", "payload__severity")) == [
        (anomaly.id, "critical") for anomaly in critical.order_by("id")
    ]
    assert len(responses.calls) == critical.count()


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


@pytest.mark.django_db
@responses.activate
def test_alert_cut_short_by_the_time_limit_is_recorded_and_retried(
    webhook, anomaly, monkeypatch, django_capture_on_commit_callbacks
):
    # The task's soft time limit rolls the attempt's transaction back; unrecorded, the
    # delivery stayed pending for good with no retry queued.
    responses.add(responses.POST, HOOK, status=200)
    send, calls = alerts._post, []

    def post_cut_short_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise SoftTimeLimitExceeded()
        return send(*args)

    monkeypatch.setattr(alerts, "_post", post_cut_short_once)
    (delivery_id,) = enqueue(django_capture_on_commit_callbacks, [anomaly])
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.error) == ("delivered", 2, "")
    assert len(calls) == 2 and len(responses.calls) == 1


@pytest.mark.django_db
def test_alert_cut_short_on_every_attempt_ends_failed(
    webhook, anomaly, monkeypatch, django_capture_on_commit_callbacks
):
    def post_cut_short(*args):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(alerts, "_post", post_cut_short)
    (delivery_id,) = enqueue(django_capture_on_commit_callbacks, [anomaly])
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.error) == (
        "failed", WEBHOOK_MAX_RETRIES + 1,
        f"worker time limit exceeded (gave up after {WEBHOOK_MAX_RETRIES + 1} attempts)",
    )


@pytest.mark.django_db
def test_attempt_cut_short_leaves_a_settled_delivery_alone(webhook, anomaly):
    delivery = WebhookDelivery.objects.create(
        webhook=webhook, anomaly=anomaly, payload={}, status="delivered", attempts=1
    )
    assert alerts.webhook_attempt_cut_short(delivery_id=delivery.id, final_attempt=False) == (
        "delivered"
    )
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.error) == ("delivered", 1, "")


@pytest.mark.parametrize(
    ("url", "idna_host"),
    [
        ("https://münchen.de/hook", "xn--mnchen-3ya.de"),
        ("https://bücher.example/hook", "xn--bcher-kva.example"),
        ("https://MÜNCHEN.de:8443/hook", "xn--mnchen-3ya.de"),
        ("https://xn--mnchen-3ya.de/hook", "xn--mnchen-3ya.de"),
    ],
)
def test_destination_problem_accepts_an_internationalised_host_that_resolves_public(
    settings, monkeypatch, url, idna_host
):
    settings.WEBHOOK_ALLOW_INTERNAL = False
    looked_up = []

    def public() -> list[str]:
        looked_up.append(idna_host)
        return [PUBLIC]

    fake_dns(monkeypatch, {idna_host: public})  # DNS knows the name in its IDNA form only
    assert destination_problem(url) is None
    assert looked_up == [idna_host]


@pytest.mark.parametrize(
    ("url", "idna_host", "problem"),
    [
        ("https://bücher.example/hook", "xn--bcher-kva.example",
         "bücher.example is an internal address (127.0.0.1)"),
        ("https://xn--mnchen-3ya.de/hook", "xn--mnchen-3ya.de",
         "xn--mnchen-3ya.de is an internal address (127.0.0.1)"),
    ],
)
def test_destination_problem_refuses_an_internationalised_host_that_resolves_internal(
    settings, monkeypatch, url, idna_host, problem
):
    settings.WEBHOOK_ALLOW_INTERNAL = False
    fake_dns(monkeypatch, {idna_host: ["127.0.0.1"]})
    assert destination_problem(url) == problem


def fullwidth(text: str) -> str:
    """``text`` in full-width forms (U+FF01 to U+FF5E), which NFKC maps back to ASCII."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1\\@8.8.8.8/", "must not hold a user name or a backslash"),
        ("http://münchen.de\\@127.0.0.1/", "must not hold a user name or a backslash"),
        ("https://user@münchen.de/hook", "must not hold a user name or a backslash"),
        ("https://hooks%2eexample.com/", "has a host that URL parsers read differently"),
        # IDNA maps these to localhost, 127.0.0.1 and münchen.de; urllib3 refuses them.
        (f"https://{fullwidth('localhost')}/hook", "has a host that URL parsers read differently"),
        (f"https://{fullwidth('127.0.0.1')}/hook", "has a host that URL parsers read differently"),
        ("https://münchen\N{IDEOGRAPHIC FULL STOP}de/hook",
         "has a host that URL parsers read differently"),
        (f"https://münchen.de{fullwidth('/')}@127.0.0.1/", "is not a valid URL"),
        ("https://bad-ü-.example/hook", "has a host name that is not valid IDNA"),
        ("http://localhost:8000/hook", "localhost is an internal address"),
        ("http://[::ffff:169.254.169.254]/",
         "::ffff:169.254.169.254 is an internal address (169.254.169.254)"),
        # IPv6 transition addresses that carry an internal IPv4 address pass is_global.
        ("http://[::127.0.0.1]/", "::127.0.0.1 is an internal address (127.0.0.1)"),
        ("http://[64:ff9b::7f00:1]/", "64:ff9b::7f00:1 is an internal address (127.0.0.1)"),
        ("http://[2002:a9fe:a9fe::]/", "2002:a9fe:a9fe:: is an internal address (169.254.169.254)"),
        ("http://[2001:0:a00:1::a00:1]/", "2001:0:a00:1::a00:1 is an internal address (2001:0:a00:1::a00:1)"),
    ],
)
def test_destination_problem_still_refuses_ambiguous_and_internal_urls(settings, url, problem):
    settings.WEBHOOK_ALLOW_INTERNAL = False
    assert destination_problem(url, resolve=False) == problem
