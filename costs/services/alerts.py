"""Anomaly alerts: ``cost.anomaly`` events POSTed to an organization's webhooks.

A new anomaly at or above a webhook's ``min_severity`` gets one ``WebhookDelivery`` row
per webhook (unique, so never two alerts of one anomaly to one webhook), whose body is
frozen at creation. A Celery task (``costs.deliver_webhook``) POSTs it, signed with
``X-InfraAudit-Signature: sha256=<hex HMAC-SHA256 of the body under the secret>``, and
retries with backoff on connection errors, timeouts, 408, 429 and 5xx; any other answer
is final. Delivery is at least once: a receiver de-duplicates on
``X-InfraAudit-Delivery`` (the delivery id) or ``anomaly_id``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Iterable
from datetime import date, timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from requests.adapters import HTTPAdapter
from urllib3.util import parse_url

from costs.models import AlertWebhook, Anomaly, WebhookDelivery
from costs.money import to_cents

logger = logging.getLogger(__name__)

EVENT = "cost.anomaly"
SIGNATURE_HEADER = "X-InfraAudit-Signature"
SEVERITY_RANK = {value: rank for rank, value in enumerate(Anomaly.Severity.values)}
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 10
RETRY_STATUSES = {408, 429} | set(range(500, 600))

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
    """Create the deliveries of newly detected anomalies and send them after commit.

    An anomaly is alerted to each active webhook of its organization whose
    ``min_severity`` it reaches, unless its day is older than the webhook's
    ``max_age_days`` (a backfill of old data does not page anyone)."""
    today = today or timezone.now().date()
    anomalies = list(anomalies)
    org_ids = {a.organization_id for a in anomalies}
    webhooks = AlertWebhook.objects.filter(organization_id__in=org_ids, is_active=True)
    deliveries = [
        WebhookDelivery(webhook=webhook, anomaly=anomaly, payload=anomaly_event(anomaly))
        for webhook in webhooks
        for anomaly in anomalies
        if anomaly.organization_id == webhook.organization_id
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
    of them only (``_post``)."""
    try:
        _checked_addresses(url, resolve=resolve and not settings.WEBHOOK_ALLOW_INTERNAL)
    except DestinationRefused as exc:
        return str(exc)
    except (OSError, ValueError):
        pass  # does not resolve
    return None


def _checked_addresses(url: str, *, resolve: bool = True) -> list[IPAddress]:
    """The addresses the host of ``url`` stands for now (itself when it is one; nothing
    for a name when not ``resolve``), every one of them allowed. Raises
    ``DestinationRefused``, or ``OSError``/``ValueError`` when the name does not resolve."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("must be an http(s) URL with a host")
    if "\\" in url or "@" in parts.netloc:
        # Parsers disagree on these: http://127.0.0.1\@8.8.8.8/ is host 8.8.8.8 to
        # urlsplit and 127.0.0.1 to urllib3, which sends the request.
        raise DestinationRefused("must not hold a user name or a backslash")
    if (parse_url(url).host or "").strip("[]").lower() != parts.hostname.lower():
        raise DestinationRefused("has a host that URL parsers read differently")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DestinationRefused("has an invalid port") from None
    host = parts.hostname
    allow_internal = settings.WEBHOOK_ALLOW_INTERNAL
    if not allow_internal and (host == "localhost" or host.endswith(".localhost")):
        raise DestinationRefused(f"{host} is an internal address")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return []
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    # ::ffff:127.0.0.1 is 127.0.0.1 to a dual-stack socket.
    addresses = [getattr(a, "ipv4_mapped", None) or a for a in addresses]
    for address in [] if allow_internal else addresses:
        if not address.is_global or address.is_multicast:
            raise DestinationRefused(f"{host} is an internal address ({address})")
    return addresses


class _PinnedAdapter(HTTPAdapter):
    """Connects to ``address`` whatever the URL's name resolves to by then (DNS
    rebinding: a name may answer a public address to our check and 127.0.0.1 to the
    connection). TLS still sends the name (SNI) and verifies the certificate for it."""

    def __init__(self, address: str):
        super().__init__()
        self.address = address

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        name = host_params["host"].rstrip(".")
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs.update(server_hostname=name, assert_hostname=name)
        return host_params, pool_kwargs

    def send(self, request, **kwargs):
        # A proxy would resolve the name again itself.
        return super().send(request, **{**kwargs, "proxies": None})


def _post(url: str, body: bytes, headers: dict) -> requests.Response:
    """The network edge (tests stub the transport with ``responses``). The host is
    resolved once, every address checked (``DestinationRefused``), and the connection
    made to the first one only, with the URL's name as Host. No redirects: the signed
    body goes only where it was configured to go."""
    parts = urlsplit(url)
    try:
        address = _checked_addresses(url)[0]
    except (OSError, ValueError, IndexError) as exc:
        raise requests.ConnectionError(f"cannot resolve {parts.hostname}") from exc
    with requests.Session() as session:
        session.mount(f"{parts.scheme}://", _PinnedAdapter(str(address)))
        return session.post(
            url, data=body, headers={**headers, "Host": parts.netloc},
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), allow_redirects=False,
        )


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None


def webhook_deliver(*, delivery_id: int, final_attempt: bool = True) -> str | None:
    """Make one attempt at a delivery and record it. Raises ``DeliveryRetryable`` on a
    transient failure unless ``final_attempt`` (then the delivery is marked failed).
    Returns the delivery's status (None when it is gone or another worker holds it)."""
    retry: DeliveryRetryable | None = None
    with transaction.atomic():
        # The row lock is held during the POST so two workers never send the same
        # delivery at once; a second worker skips it.
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("webhook")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None:
            return None
        if delivery.status in (WebhookDelivery.Status.DELIVERED, WebhookDelivery.Status.FAILED):
            return delivery.status
        webhook = delivery.webhook
        delivery.attempts += 1
        delivery.last_attempt_at = timezone.now()
        if not webhook.is_active:
            delivery.status, delivery.error = WebhookDelivery.Status.FAILED, "webhook disabled"
        else:
            retry = _attempt(delivery, webhook)
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
        delivery.error = f"{type(exc).__name__}"
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
