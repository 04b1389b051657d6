"""Health endpoints for load balancers and orchestrators (no authentication)."""

from __future__ import annotations

import logging
from functools import wraps

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from infraaudit.errors import error_body

logger = logging.getLogger(__name__)


def require_GET(view):
    """GET (and HEAD) only; anything else is a 405 in the API's error format. Exempt from
    CSRF: the check runs before the view and would answer a POST with an HTML 403 (the
    views change nothing and take no cookie)."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse(
                error_body(f'method "{request.method}" not allowed', "METHOD_NOT_ALLOWED"),
                status=405,
            )
            response["Allow"] = "GET, HEAD"
            return response
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
def healthz(request):
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:
        logger.warning("readyz: database unreachable: %s", type(exc).__name__)
        return "unreachable"


def _check_broker() -> str:
    if not settings.CELERY_BROKER_URL:
        return "embedded"
    from infraaudit.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:
        logger.warning("readyz: broker unreachable: %s", type(exc).__name__)
        return "unreachable"


@require_GET
def readyz(request):
    """The database and the broker (when one is configured) are reachable."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    ready = all(value in ("ok", "embedded") for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
