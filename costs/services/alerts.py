"""Anomaly alerts: ``cost.anomaly`` events POSTed to an organization's webhooks.

An anomaly gets one ``WebhookDelivery`` row per webhook (unique, so never two alerts of
one anomaly to one webhook) when it first reaches the webhook's ``min_severity``: when it
is detected, or when a re-detection (later data of its day) raises it there. The body is
frozen at creation. A Celery task (``costs.deliver_webhook``) POSTs it, signed with
``X-InfraAudit-Signature: sha256=<hex HMAC-SHA256 of the body under the secret>``, and
retries with backoff on connection errors, timeouts, 408, 429 and 5xx; any other answer
is final. An attempt has ``TOTAL_TIMEOUT`` seconds in all to connect, send and read the
answer. Delivery is at least once: a receiver de-duplicates on
``X-InfraAudit-Delivery`` (the delivery id) or ``anomaly_id``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from urllib.parse import urlsplit, urlunsplit

import idna
import requests
import urllib3
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from costs.models import AlertWebhook, Anomaly, WebhookDelivery
from costs.money import to_cents

logger = logging.getLogger(__name__)

EVENT = "cost.anomaly"
SIGNATURE_HEADER = "X-InfraAudit-Signature"
SEVERITY_RANK = {value: rank for rank, value in enumerate(Anomaly.Severity.values)}
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 10  # for each read; TOTAL_TIMEOUT bounds their sum
# Well under the task's 60 s soft time limit (costs.tasks.deliver_webhook).
TOTAL_TIMEOUT = 25
MAX_RESPONSE_BYTES = 64 * 1024
RETRY_STATUSES = {408, 429} | set(range(500, 600))
_SETTLED = (WebhookDelivery.Status.DELIVERED, WebhookDelivery.Status.FAILED)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DeliveryRetryable(Exception):
    """A transient failure; the task retries (not before ``retry_after`` seconds)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def anomaly_event(anomaly: Anomaly) -> dict:
    """The ``cost.anomaly`` event body (amounts rounded to cents, JSON numbers)."""
    return {
        "event": EVENT,
        "anomaly_id": anomaly.id,
        "provider_id": anomaly.provider_id,
        "service": anomaly.service or None,
        "date": anomaly.date.isoformat(),
        "actual_amount": float(to_cents(anomaly.actual_amount)),
        "expected_amount": float(to_cents(anomaly.expected_amount)),
        "deviation_percent": float(anomaly.deviation_percent),
        "currency": anomaly.currency,
        "severity": anomaly.severity,
    }


def signature(secret: str, body: bytes) -> str:
    """The value of ``X-InfraAudit-Signature`` for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def event_body(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def alerts_enqueue(*, anomalies: Iterable[Anomaly], today: date | None = None) -> list[int]:
    """Create the deliveries of new or escalated active anomalies and send them after
    commit.

    An anomaly is alerted to each active webhook of its organization whose
    ``min_severity`` it reaches and that has not been sent it yet, unless its day is
    older than the webhook's ``max_age_days`` (a backfill of old data does not page
    anyone)."""
    today = today or timezone.now().date()
    anomalies = [a for a in anomalies if a.status == Anomaly.Status.ACTIVE]
    org_ids = {a.organization_id for a in anomalies}
    webhooks = AlertWebhook.objects.filter(organization_id__in=org_ids, is_active=True)
    sent = set(
        WebhookDelivery.objects.filter(anomaly__in=anomalies)
        .values_list("webhook_id", "anomaly_id")
    )
    deliveries = [
        WebhookDelivery(webhook=webhook, anomaly=anomaly, payload=anomaly_event(anomaly))
        for webhook in webhooks
        for anomaly in anomalies
        if anomaly.organization_id == webhook.organization_id
        and (webhook.id, anomaly.id) not in sent
        and SEVERITY_RANK[anomaly.severity] >= SEVERITY_RANK[webhook.min_severity]
        and anomaly.date >= today - timedelta(days=webhook.max_age_days)
    ]
    created = WebhookDelivery.objects.bulk_create(deliveries)
    ids = [d.id for d in created]
    if ids:
        transaction.on_commit(lambda: _send(ids))
    return ids


def _send(delivery_ids: list[int]) -> None:
    from costs.tasks import deliver_webhook

    for delivery_id in delivery_ids:
        deliver_webhook.delay(delivery_id)


class DestinationRefused(Exception):
    """A webhook URL we do not send to; the message says why."""


def destination_problem(url: str, *, resolve: bool = True) -> str | None:
    """Why an alert may not be sent to ``url``, or None. A webhook is a URL a tenant
    chooses and our worker POSTs to: pointed at loopback, a private network or the cloud
    metadata address (169.254.169.254), it would reach our own services, and the delivery
    log would tell what answered. Unless ``INFRAAUDIT_WEBHOOK_ALLOW_INTERNAL`` is on (a
    receiver on the operator's own network), the host must be a public address, by itself
    or by what it resolves to now. A name that does not resolve is left to fail on its own.
    A send resolves the name once more, checks those addresses and connects to the first
    of them only (``_post``). A Unicode name (münchen.de) is checked, resolved and sent
    in its IDNA form (xn--mnchen-3ya.de)."""
    try:
        _checked_destination(url, resolve=resolve and not settings.WEBHOOK_ALLOW_INTERNAL)
    except DestinationRefused as exc:
        return str(exc)
    except (OSError, ValueError):
        pass  # does not resolve
    return None


@dataclass(frozen=True)
class _Destination:
    """A checked webhook URL. ``url`` and ``netloc`` (the ``Host`` header) spell the
    host in ASCII, as DNS, TLS and HTTP do: https://münchen.de/hook is sent to
    https://xn--mnchen-3ya.de/hook. ``addresses`` are what that name stands for now."""

    url: str
    netloc: str
    addresses: list[IPAddress]


def _ascii_host(host: str) -> str:
    """The IDNA (punycode) form of a Unicode host name, with the UTS #46 mapping that
    browsers use; an ASCII host is only lowercased (IDNA would refuse the underscores
    some names have, and urllib3 leaves them alone too)."""
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise DestinationRefused("has a host name that is not valid IDNA") from None


def _checked_destination(url: str, *, resolve: bool = True) -> _Destination:
    """``url`` with the addresses its host stands for now (itself when it is one;
    nothing for a name when not ``resolve``), every one of them allowed. Raises
    ``DestinationRefused``, or ``OSError``/``ValueError`` when the name does not resolve."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a netloc that NFKC normalization gives a "/" or "@"
        raise DestinationRefused("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("must be an http(s) URL with a host")
    if "\\" in url or "@" in parts.netloc:
        # Parsers disagree on these: http://127.0.0.1\@8.8.8.8/ is host 8.8.8.8 to
        # urlsplit and 127.0.0.1 to urllib3, which sends the request.
        raise DestinationRefused("must not hold a user name or a backslash")
    host = _ascii_host(parts.hostname)
    try:
        # urllib3 gives a Unicode name in IDNA form, urlsplit as written.
        same = (parse_url(url).host or "").strip("[]").lower() == host
    except LocationParseError:
        same = False
    if not same:
        raise DestinationRefused("has a host that URL parsers read differently")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DestinationRefused("has an invalid port") from None
    name = parts.hostname  # as written, for messages
    allow_internal = settings.WEBHOOK_ALLOW_INTERNAL
    if not allow_internal and (host == "localhost" or host.endswith(".localhost")):
        raise DestinationRefused(f"{name} is an internal address")
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    if netloc != parts.netloc:
        url = urlunsplit(parts._replace(netloc=netloc))
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return _Destination(url, netloc, [])
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    # ::ffff:127.0.0.1 is 127.0.0.1 to a dual-stack socket.
    addresses = [getattr(a, "ipv4_mapped", None) or a for a in addresses]
    for address in [] if allow_internal else addresses:
        for reached in (address, *_embedded_ipv4(address)):
            if not reached.is_global or reached.is_multicast:
                raise DestinationRefused(f"{name} is an internal address ({reached})")
    return _Destination(url, netloc, addresses)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address) -> list:
    """The IPv4 address an IPv6 transition address carries, which a NAT64 gateway, a 6to4
    relay or an old stack may reach: 64:ff9b::7f00:1, 2002:7f00:1:: and
    ::127.0.0.1 all pass ``is_global`` while meaning 127.0.0.1."""
    if address.version != 6:
        return []
    carried = []
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        carried.append(address.sixtofour)
    return carried  # Teredo (2001::/32) is refused as it is: not global


class AttemptTimedOut(requests.Timeout):
    """The attempt ran past ``TOTAL_TIMEOUT`` (a transient failure)."""


class _Deadline:
    """Ends an attempt that runs past its deadline. Socket timeouts bound each read,
    not their sum: a receiver sending a byte every few seconds would hold the worker and
    the delivery's row lock until the task's soft time limit, which rolls the attempt
    back unrecorded. At the deadline a timer thread shuts down the attempt's sockets,
    which ends a blocked TLS handshake, send or read at once, and the attempt ends as
    ``AttemptTimedOut`` (whatever was read by then may have been cut short)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._done = False
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
            for sock in self._sockets:
                sock.close()
        if self.expired and (exc is None or isinstance(exc, Exception)):
            raise AttemptTimedOut(
                f"Timeout: no complete answer within {self.seconds:g} s"
            ) from exc

    def watch(self, sock: socket.socket) -> None:
        # A duplicate: TLS detaches the socket it wraps, and a socket of our own is never
        # closed under us, so its descriptor cannot be reused for another connection.
        with self._lock:
            self._sockets.append(sock.dup())
            if self.expired:
                self._shutdown(self._sockets[-1])

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # closed by the other side meanwhile
            sock.shutdown(socket.SHUT_RDWR)


class _WatchedConnection:
    """A urllib3 connection that hands its socket to the attempt's ``_Deadline`` as
    soon as it is connected, before any TLS handshake (``_new_conn`` is where urllib3
    opens it; the deadline tests in tests/costs/test_webhook_pinning.py fail if it moves)."""

    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.deadline.watch(sock)
        return sock


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


_WATCHED_CONNECTIONS = {"http": _WatchedHTTPConnection, "https": _WatchedHTTPSConnection}


class _PinnedAdapter(HTTPAdapter):
    """Connects to ``address`` whatever the URL's name resolves to by then (DNS
    rebinding: a name may answer a public address to our check and 127.0.0.1 to the
    connection). TLS still sends the name (SNI) and verifies the certificate for it.
    Its connections are watched by ``deadline``."""

    def __init__(self, address: str, deadline: _Deadline):
        super().__init__()
        self.address = address
        self.deadline = deadline

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        name = host_params["host"].rstrip(".")
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs.update(server_hostname=name, assert_hostname=name)
        return host_params, pool_kwargs

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
        pool.ConnectionCls = partial(_WATCHED_CONNECTIONS[pool.scheme], deadline=self.deadline)
        return pool

    def send(self, request, **kwargs):
        # A proxy would resolve the name again itself.
        return super().send(request, **{**kwargs, "proxies": None})


def _post(url: str, body: bytes, headers: dict) -> requests.Response:
    """The network edge (tests stub the transport with ``responses``). The host is
    resolved once, every address checked (``DestinationRefused``), and the connection
    made to the first one only, with the URL's name (in IDNA form) as Host. No redirects:
    the signed body goes only where it was configured to go. Connecting, sending and
    reading the answer take ``TOTAL_TIMEOUT`` seconds at most (``AttemptTimedOut``); of
    the body, only the first ``MAX_RESPONSE_BYTES`` are read. The response is closed."""
    try:
        destination = _checked_destination(url)
        address = destination.addresses[0]
    except (OSError, ValueError, IndexError) as exc:
        raise requests.ConnectionError(f"cannot resolve {urlsplit(url).hostname}") from exc
    scheme = urlsplit(destination.url).scheme
    with _Deadline(TOTAL_TIMEOUT) as deadline, requests.Session() as session:
        session.mount(f"{scheme}://", _PinnedAdapter(str(address), deadline))
        response = session.post(
            destination.url, data=body, headers={**headers, "Host": destination.netloc},
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), allow_redirects=False, stream=True,
        )
        with response:
            _read_answer(response)
    return response


def _read_answer(response: requests.Response) -> None:
    """Read the body up to ``MAX_RESPONSE_BYTES``, so the answer counts once it has
    arrived; none of it is kept, so it is not decompressed and the rest is never read
    (closing the response drops the connection)."""
    try:
        response.raw.read(MAX_RESPONSE_BYTES, decode_content=False)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise requests.ConnectionError(exc, response=response) from exc


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def webhook_deliver(*, delivery_id: int, final_attempt: bool = True) -> str | None:
    """Make one attempt at a delivery and record it. Raises ``DeliveryRetryable`` on a
    transient failure unless ``final_attempt`` (then the delivery is marked failed).
    Returns the delivery's status (None when it is gone or another worker holds it)."""

    def send(delivery: WebhookDelivery) -> DeliveryRetryable | None:
        if not delivery.webhook.is_active:
            delivery.status, delivery.error = WebhookDelivery.Status.FAILED, "webhook disabled"
            return None
        return _attempt(delivery, delivery.webhook)

    return _recorded_attempt(delivery_id, send, final_attempt=final_attempt)


def webhook_attempt_cut_short(*, delivery_id: int, final_attempt: bool = True) -> str | None:
    """Record an attempt the worker cut short (the task's soft time limit). Its
    transaction rolled back, so the delivery would otherwise stay pending with no retry
    queued, and "send again" in the admin acts only on failed deliveries. Counts the
    attempt and marks the delivery retrying (raising ``DeliveryRetryable``), or failed on
    the final attempt; one delivered or failed meanwhile is left as it is. Returns the
    delivery's status (None when it is gone or another worker holds it)."""

    def cut_short(delivery: WebhookDelivery) -> DeliveryRetryable:
        delivery.status = WebhookDelivery.Status.RETRYING
        delivery.response_code = None
        delivery.error = "worker time limit exceeded"
        logger.warning("webhook delivery %s: %s", delivery.id, delivery.error)
        return DeliveryRetryable(delivery.error)

    return _recorded_attempt(delivery_id, cut_short, final_attempt=final_attempt)


def _recorded_attempt(delivery_id: int, attempt, *, final_attempt: bool) -> str | None:
    """One attempt at a delivery, recorded under its row lock: ``attempt(delivery)`` sets
    the outcome and returns the retry it calls for (None: none); on the final attempt a
    retry is a failure. The lock is held during the POST so two workers never send the
    same delivery at once; a second worker skips it (None). A delivery already delivered
    or failed is left as it is."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("webhook")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None:
            return None
        if delivery.status in _SETTLED:
            return delivery.status
        delivery.attempts += 1
        delivery.last_attempt_at = timezone.now()
        retry = attempt(delivery)
        if retry is not None and final_attempt:
            delivery.status = WebhookDelivery.Status.FAILED
            delivery.error = f"{retry} (gave up after {delivery.attempts} attempts)"
            retry = None
        delivery.save(
            update_fields=["status", "attempts", "last_attempt_at", "response_code", "error",
                           "delivered_at"]
        )
    if retry is not None:
        raise retry
    return delivery.status


def _attempt(delivery: WebhookDelivery, webhook: AlertWebhook) -> DeliveryRetryable | None:
    body = event_body(delivery.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "InfraAudit-Webhooks/1.0",
        "X-InfraAudit-Event": EVENT,
        "X-InfraAudit-Delivery": str(delivery.id),
        SIGNATURE_HEADER: signature(webhook.secret, body),
    }
    try:
        response = _post(webhook.url, body, headers)
    except DestinationRefused as exc:  # checked at every send: a name may resolve elsewhere
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.error = f"refused: {exc}"[:500]
        return None
    except (requests.ConnectionError, requests.Timeout) as exc:
        delivery.status = WebhookDelivery.Status.RETRYING
        delivery.response_code = None
        # The class name, but for our own deadline, whose text says which one it was.
        delivery.error = str(exc) if isinstance(exc, AttemptTimedOut) else type(exc).__name__
        logger.warning("webhook %s delivery %s: %s", webhook.id, delivery.id, delivery.error)
        return DeliveryRetryable(delivery.error)
    except requests.RequestException as exc:
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.error = f"{type(exc).__name__}"[:500]
        return None
    delivery.response_code = response.status_code
    if 200 <= response.status_code < 300:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.error = ""
        return None
    delivery.error = f"HTTP {response.status_code}"
    if response.status_code in RETRY_STATUSES:
        delivery.status = WebhookDelivery.Status.RETRYING
        return DeliveryRetryable(delivery.error, retry_after=_retry_after(response))
    delivery.status = WebhookDelivery.Status.FAILED
    return None


def webhook_delivery_resend(*, delivery: WebhookDelivery) -> bool:
    """Send a failed delivery again (same body, same id), from the admin."""
    updated = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDelivery.Status.FAILED
    ).update(status=WebhookDelivery.Status.PENDING, error="")
    if updated:
        transaction.on_commit(lambda: _send([delivery.pk]))
    return bool(updated)
