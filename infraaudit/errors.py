"""The one error format of the API: ``{"error", "code", "details"}`` for every 4xx."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, JsonResponse
from django.views.defaults import bad_request, page_not_found, permission_denied
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

logger = logging.getLogger(__name__)

_CODES = {
    status.HTTP_400_BAD_REQUEST: "INVALID_REQUEST",
    status.HTTP_401_UNAUTHORIZED: "UNAUTHORIZED",
    status.HTTP_403_FORBIDDEN: "FORBIDDEN",
    status.HTTP_404_NOT_FOUND: "NOT_FOUND",
    status.HTTP_405_METHOD_NOT_ALLOWED: "METHOD_NOT_ALLOWED",
    status.HTTP_406_NOT_ACCEPTABLE: "NOT_ACCEPTABLE",
    status.HTTP_409_CONFLICT: "CONFLICT",
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "PAYLOAD_TOO_LARGE",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "UNSUPPORTED_MEDIA_TYPE",
    status.HTTP_422_UNPROCESSABLE_ENTITY: "UNPROCESSABLE",
    status.HTTP_429_TOO_MANY_REQUESTS: "THROTTLED",
}


class ApiError(exceptions.APIException):
    """An error with an explicit machine code and details, raised by views and services."""

    def __init__(self, message: str, *, code: str, status_code: int = 400, details=None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.details = details if details is not None else {}


class InvalidParameter(ApiError):
    """A query parameter failed validation; ``details`` maps each parameter to its messages."""

    def __init__(self, details: dict):
        super().__init__(
            "invalid query parameter", code="INVALID_PARAMETER", status_code=400, details=details
        )


def empty_parameters(query_params, names) -> dict[str, list[str]]:
    """The known parameters given empty (``?days=``), each with its message: an empty value
    is a bad value, not a request for the default."""
    return {
        name: ["must not be empty"]
        for name in names
        if name in query_params and query_params[name] == ""
    }


class Unprocessable(ApiError):
    def __init__(self, message: str, *, code: str = "UNPROCESSABLE", details=None):
        super().__init__(message, code=code, status_code=422, details=details)


class Conflict(ApiError):
    def __init__(self, message: str, *, code: str = "CONFLICT", details=None):
        super().__init__(message, code=code, status_code=409, details=details)


def error_body(message: str, code: str, details=None) -> dict:
    return {"error": message, "code": code, "details": details if details is not None else {}}


def _flatten(detail):
    """DRF error detail (ErrorDetail / list / dict) -> plain JSON structure of strings."""
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def body_too_large() -> ApiError:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return ApiError(
        f"the request body is larger than the limit of {limit} bytes",
        code="PAYLOAD_TOO_LARGE",
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        details={"max_bytes": limit},
    )


def too_many_parts(exc) -> ApiError:
    return ApiError(str(exc), code="INVALID_REQUEST", status_code=400)


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        # Raised by request.data / request.body above DATA_UPLOAD_MAX_MEMORY_SIZE; left to
        # Django it is a bare 400 (an HTML page with DEBUG on).
        exc = body_too_large()
    elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        exc = too_many_parts(exc)

    if not isinstance(exc, exceptions.APIException):
        return None  # a real bug: let Django log it and answer 500

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))

    if isinstance(exc, ApiError):
        body = error_body(str(exc.detail), exc.error_code, exc.details)
    elif isinstance(exc, exceptions.ParseError):
        # A body that is no JSON at all: the same code as a body that fails validation,
        # with the whole body as the offending part.
        body = error_body(str(exc.detail), "INVALID_BODY", {"body": [str(exc.detail)]})
    elif isinstance(exc, exceptions.ValidationError):
        details = _flatten(exc.detail)
        if not isinstance(details, dict):
            details = {"non_field_errors": details if isinstance(details, list) else [details]}
        body = error_body("invalid request body", "INVALID_BODY", details)
    else:
        code = _CODES.get(exc.status_code, "ERROR")
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            code = "UNAUTHORIZED"
        body = error_body(str(exc.detail), code)

    set_rollback()
    return Response(body, status=exc.status_code, headers=headers)


def _html_page(request) -> bool:
    """Outside the API (the admin, the docs) errors answer as Django's HTML pages."""
    return not request.path.startswith("/api/")


def json_404(request, exception=None):
    if _html_page(request):
        return page_not_found(request, exception)
    return JsonResponse(error_body("not found", "NOT_FOUND"), status=404)


def api_not_found(request, *args, **kwargs):
    """Any /api/ path no route matches: a JSON 404 with DEBUG on too, where Django would
    answer its HTML debug page (``handler404`` only serves DEBUG off)."""
    return JsonResponse(error_body(f"no endpoint {request.path}", "NOT_FOUND"), status=404)


def json_400(request, exception=None):
    if _html_page(request):
        return bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):  # read by a view outside DRF
        exc = body_too_large()
        return JsonResponse(error_body(str(exc.detail), exc.error_code, exc.details), status=413)
    return JsonResponse(error_body("bad request", "BAD_REQUEST"), status=400)


def json_403(request, exception=None):
    if _html_page(request):
        return permission_denied(request, exception)
    return JsonResponse(error_body("forbidden", "FORBIDDEN"), status=403)


def json_500(request):
    return JsonResponse(error_body("internal server error", "SERVER_ERROR"), status=500)
