"""Webhook sends connect to the address that was checked, not to what the name resolves
to by the time of the connection (DNS rebinding), and still speak to the name: Host
header, TLS SNI and certificate verification."""

import hashlib
import hmac
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import trustme
import urllib3.util.connection

from costs.models import AlertWebhook, WebhookDelivery
from costs.selectors import utc_today
from costs.services import alerts
from tests.costs.test_alerts import PUBLIC, SECRET, fake_dns
from tests.factories import AnomalyFactory, ProviderFactory


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    """Start a webhook receiver on 127.0.0.1 (HTTPS when given a server TLS context);
    its ``received`` lists ``(path, headers, body)`` of every POST."""
    servers = []

    def start(tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
        server.received = []
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def connects(monkeypatch):
    """The hosts webhook sends open TCP connections to; the public test address refuses
    (tests never leave the machine), every other host connects for real."""
    opened: list[str] = []
    real = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):
        opened.append(address[0])
        if address[0] == PUBLIC:
            raise ConnectionRefusedError(f"{PUBLIC} is not reachable from the tests")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    return opened


def answers(*lookups: list[str]) -> Callable[[], list[str]]:
    """A name whose successive lookups answer ``lookups``, then no longer resolve."""
    pending = list(lookups)

    def lookup() -> list[str]:
        if not pending:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return pending.pop(0)

    return lookup


def delivery_to(url: str) -> WebhookDelivery:
    webhook = AlertWebhook(organization=ProviderFactory().organization, name="Ops", url=url)
    webhook.secret = SECRET
    webhook.save()
    anomaly = AnomalyFactory(
        provider=ProviderFactory(organization=webhook.organization),
        date=utc_today() - timedelta(days=1), severity="high",
    )
    return WebhookDelivery.objects.create(
        webhook=webhook, anomaly=anomaly, payload=alerts.anomaly_event(anomaly)
    )


def deliver(delivery: WebhookDelivery) -> WebhookDelivery:
    alerts.webhook_deliver(delivery_id=delivery.id, final_attempt=True)
    delivery.refresh_from_db()
    return delivery


@pytest.mark.django_db
def test_webhook_rebinding_name_is_never_connected_to_loopback(monkeypatch, receiver, connects):
    # The name answers a public address to the check, then 127.0.0.1 (TTL 0) to any
    # later lookup, where an internal service listens.
    internal = receiver()
    fake_dns(monkeypatch, {"rebind.test": answers([PUBLIC], *[["127.0.0.1"]] * 5)})
    delivery = deliver(delivery_to(f"http://rebind.test:{internal.server_port}/hook"))
    assert internal.received == []
    assert connects == [PUBLIC]  # the checked address, and only it
    assert (delivery.status, delivery.error) == (
        "failed", "ConnectionError (gave up after 1 attempts)"
    )


@pytest.mark.django_db
def test_webhook_every_resolved_address_is_checked(monkeypatch, connects):
    fake_dns(monkeypatch, {"split.test": [PUBLIC, "10.1.2.3"]})
    delivery = deliver(delivery_to("https://split.test/hook"))
    assert (delivery.status, delivery.error) == (
        "failed", "refused: split.test is an internal address (10.1.2.3)"
    )
    assert connects == []


@pytest.mark.django_db
def test_webhook_ipv4_mapped_loopback_is_refused(monkeypatch, connects):
    fake_dns(monkeypatch, {"mapped.test": ["::ffff:127.0.0.1"]})
    delivery = deliver(delivery_to("https://mapped.test/hook"))
    assert delivery.error == "refused: mapped.test is an internal address (127.0.0.1)"
    assert connects == []


@pytest.mark.django_db
def test_webhook_name_that_does_not_resolve_is_retried_without_connecting(monkeypatch, connects):
    fake_dns(monkeypatch, {"gone.test": answers()})
    delivery = delivery_to("https://gone.test/hook")
    with pytest.raises(alerts.DeliveryRetryable):
        alerts.webhook_deliver(delivery_id=delivery.id, final_attempt=False)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error) == ("retrying", "ConnectionError")
    assert connects == []


@pytest.mark.django_db
def test_webhook_local_receiver_gets_the_post_for_its_name(settings, monkeypatch, receiver):
    settings.WEBHOOK_ALLOW_INTERNAL = True
    # A proxy in the environment is not used: it would resolve the name again itself.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = receiver()
    fake_dns(monkeypatch, {"receiver.test": answers(["127.0.0.1"])})  # one lookup per send
    delivery = deliver(delivery_to(f"http://receiver.test:{server.server_port}/hook?team=ops"))
    assert (delivery.status, delivery.response_code) == ("delivered", 204)
    ((path, headers, body),) = server.received
    assert path == "/hook?team=ops"
    assert headers["Host"] == f"receiver.test:{server.server_port}"
    assert body == alerts.event_body(delivery.payload)
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-InfraAudit-Signature"] == expected


@pytest.fixture
def tls_receiver(receiver, monkeypatch, tmp_path):
    """Start an HTTPS receiver on 127.0.0.1 with a certificate for the given name from a
    test CA that requests trusts; the server names clients ask for (SNI) are in ``sni``."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))

    def start(certificate_name: str) -> ThreadingHTTPServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(certificate_name).configure_cert(context)
        sni: list[str | None] = []
        context.sni_callback = lambda sock, name, ctx: sni.append(name)
        server = receiver(context)
        server.sni = sni
        return server

    return start


@pytest.mark.django_db
def test_webhook_https_is_verified_for_the_name_over_the_pinned_address(
    settings, monkeypatch, tls_receiver
):
    settings.WEBHOOK_ALLOW_INTERNAL = True
    server = tls_receiver("receiver.test")
    fake_dns(monkeypatch, {"receiver.test": answers(["127.0.0.1"])})
    delivery = deliver(delivery_to(f"https://receiver.test:{server.server_port}/hook"))
    assert (delivery.status, delivery.response_code) == ("delivered", 204)
    assert server.sni == ["receiver.test"]
    ((_, headers, body),) = server.received
    assert headers["Host"] == f"receiver.test:{server.server_port}"
    assert body == alerts.event_body(delivery.payload)


@pytest.mark.django_db
def test_webhook_https_certificate_for_another_name_is_rejected(settings, monkeypatch, tls_receiver):
    settings.WEBHOOK_ALLOW_INTERNAL = True
    server = tls_receiver("other.test")
    fake_dns(monkeypatch, {"receiver.test": answers(["127.0.0.1"])})
    delivery = deliver(delivery_to(f"https://receiver.test:{server.server_port}/hook"))
    assert (delivery.status, delivery.error) == (
        "failed", "SSLError (gave up after 1 attempts)"
    )
    assert server.received == []


def test_webhook_pinned_pool_connects_to_the_address_and_verifies_the_name():
    adapter = alerts._PinnedAdapter("203.0.113.7")
    request = requests.Request("POST", "https://hooks.example.com:8443/x").prepare()
    pool = adapter.get_connection_with_tls_context(request, verify=True)
    assert (pool.host, pool.port) == ("203.0.113.7", 8443)
    assert pool.conn_kw["server_hostname"] == "hooks.example.com"
    assert pool.assert_hostname == "hooks.example.com"
