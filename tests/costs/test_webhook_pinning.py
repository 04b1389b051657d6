"""Webhook sends connect to the address that was checked, not to what the name resolves
to by the time of the connection (DNS rebinding), and still speak to the name (in its
IDNA form): Host header, TLS SNI and certificate verification. An attempt ends at its
deadline however slowly the receiver answers, and reads only the start of a long body."""

import contextlib
import hashlib
import hmac
import socket
import ssl
import threading
import time
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
    adapter = alerts._PinnedAdapter("203.0.113.7", alerts._Deadline(alerts.TOTAL_TIMEOUT))
    request = requests.Request("POST", "https://hooks.example.com:8443/x").prepare()
    pool = adapter.get_connection_with_tls_context(request, verify=True)
    assert (pool.host, pool.port) == ("203.0.113.7", 8443)
    assert pool.conn_kw["server_hostname"] == "hooks.example.com"
    assert pool.assert_hostname == "hooks.example.com"


@pytest.mark.django_db
def test_webhook_internationalised_name_is_resolved_and_sent_in_idna_form(
    settings, monkeypatch, receiver
):
    settings.WEBHOOK_ALLOW_INTERNAL = True
    server = receiver()
    fake_dns(monkeypatch, {"xn--mnchen-3ya.de": answers(["127.0.0.1"])})
    delivery = deliver(delivery_to(f"http://münchen.de:{server.server_port}/hook"))
    assert (delivery.status, delivery.response_code) == ("delivered", 204)
    ((path, headers, _),) = server.received
    assert path == "/hook"
    assert headers["Host"] == f"xn--mnchen-3ya.de:{server.server_port}"


@pytest.mark.django_db
def test_webhook_https_internationalised_name_is_verified_in_idna_form(
    settings, monkeypatch, tls_receiver
):
    settings.WEBHOOK_ALLOW_INTERNAL = True
    server = tls_receiver("xn--bcher-kva.example")
    fake_dns(monkeypatch, {"xn--bcher-kva.example": answers(["127.0.0.1"])})
    delivery = deliver(delivery_to(f"https://bücher.example:{server.server_port}/hook"))
    assert (delivery.status, delivery.response_code) == ("delivered", 204)
    assert server.sni == ["xn--bcher-kva.example"]
    ((_, headers, _),) = server.received
    assert headers["Host"] == f"xn--bcher-kva.example:{server.server_port}"


Answer = Callable[[socket.socket, threading.Event], None]


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(body) < length:
        body += conn.recv(65536) or b"x" * length


@pytest.fixture
def raw_receiver():
    """Start a TCP receiver on 127.0.0.1 that reads each request (unless not
    ``read_request``) and then plays ``answer(connection, stopped)``; returns its port.
    ``stopped`` is set when the test ends."""
    stopped = threading.Event()
    threads: list[threading.Thread] = []

    def start(answer: Answer, *, read_request: bool = True) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(0.1)

        def serve() -> None:
            with server:
                while not stopped.is_set():
                    try:
                        conn, _ = server.accept()
                    except TimeoutError:
                        continue
                    with conn, contextlib.suppress(OSError):  # the client hung up
                        if read_request:
                            _read_request(conn)
                        answer(conn, stopped)

        threads.append(threading.Thread(target=serve, daemon=True))
        threads[-1].start()
        return server.getsockname()[1]

    yield start
    stopped.set()
    for thread in threads:
        thread.join(timeout=5)


def drip(head: bytes, every: float, count: int = 120) -> Answer:
    """An answer that sends ``head``, then ``count`` more bytes one every ``every``
    seconds: each read is well within the read timeout, the whole far past the deadline."""

    def answer(conn: socket.socket, stopped: threading.Event) -> None:
        conn.sendall(head)
        for _ in range(count):
            if stopped.wait(every):
                return
            conn.sendall(b"x")

    return answer


def timed_deliver(delivery: WebhookDelivery, *, final_attempt: bool) -> float:
    """Make one attempt at ``delivery``; the seconds it took."""
    started = time.monotonic()
    with contextlib.suppress(alerts.DeliveryRetryable):
        alerts.webhook_deliver(delivery_id=delivery.id, final_attempt=final_attempt)
    delivery.refresh_from_db()
    return time.monotonic() - started


@pytest.fixture
def deadline(settings, monkeypatch):
    """Local receivers allowed, and a one-second deadline per attempt."""
    settings.WEBHOOK_ALLOW_INTERNAL = True
    monkeypatch.setattr(alerts, "TOTAL_TIMEOUT", 1)


@pytest.mark.django_db
def test_webhook_slow_body_ends_at_the_deadline_and_is_retried(deadline, raw_receiver):
    # The QA repro: 200 and a Content-Length, then one byte at a time.
    port = raw_receiver(drip(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", every=0.25))
    delivery = delivery_to(f"http://127.0.0.1:{port}/hook")
    seconds = timed_deliver(delivery, final_attempt=False)
    assert seconds < 3
    assert (delivery.status, delivery.attempts, delivery.response_code, delivery.error) == (
        "retrying", 1, None, "Timeout: no complete answer within 1 s"
    )


@pytest.mark.django_db
def test_webhook_slow_headers_end_at_the_deadline_and_fail_the_last_attempt(
    deadline, raw_receiver
):
    port = raw_receiver(drip(b"HTTP/1.1 200 OK\r\nX-Slow: ", every=0.25))
    delivery = delivery_to(f"http://127.0.0.1:{port}/hook")
    seconds = timed_deliver(delivery, final_attempt=True)
    assert seconds < 3
    assert (delivery.status, delivery.attempts, delivery.error) == (
        "failed", 1, "Timeout: no complete answer within 1 s (gave up after 1 attempts)"
    )


@pytest.mark.django_db
def test_webhook_silent_tls_handshake_ends_at_the_deadline(deadline, monkeypatch, raw_receiver):
    # Accepts the connection and never answers the ClientHello.
    port = raw_receiver(lambda conn, stopped: stopped.wait(), read_request=False)
    fake_dns(monkeypatch, {"receiver.test": answers(["127.0.0.1"])})
    delivery = delivery_to(f"https://receiver.test:{port}/hook")
    seconds = timed_deliver(delivery, final_attempt=False)
    assert seconds < 3
    assert (delivery.status, delivery.error) == (
        "retrying", "Timeout: no complete answer within 1 s"
    )


@pytest.mark.django_db
def test_webhook_long_answer_is_not_read_whole(settings, raw_receiver):
    settings.WEBHOOK_ALLOW_INTERNAL = True
    total, sent = 64 << 20, [0]

    def flood(conn: socket.socket, stopped: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        chunk = b"x" * 65536
        while sent[0] < total and not stopped.is_set():
            conn.sendall(chunk)
            sent[0] += len(chunk)

    port = raw_receiver(flood)
    delivery = deliver(delivery_to(f"http://127.0.0.1:{port}/hook"))
    assert (delivery.status, delivery.response_code) == ("delivered", 200)
    # What we read, plus what the sockets' buffers took before we hung up.
    assert sent[0] < 16 << 20
