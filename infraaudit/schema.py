"""drf-spectacular hooks."""

from django.conf import settings


def paths_without_trailing_slash(endpoints):
    """Our API paths take an optional trailing slash (``/?``), which the schema generator
    renders as ``/``; the contract names every path without it."""
    return [
        (path.rstrip("/") or "/", path_regex, method, callback)
        for path, path_regex, method, callback in endpoints
    ]


ERROR_SCHEMA = {
    "type": "object",
    "description": "The error format of every 4xx answer.",
    "properties": {
        "error": {"type": "string", "description": "A human message."},
        "code": {"type": "string", "description": "A machine code, e.g. INVALID_PARAMETER."},
        "details": {
            "type": "object",
            "description": "The offending parameter(s) and their messages.",
            "additionalProperties": True,
        },
    },
    "required": ["error", "code", "details"],
}
_DESCRIPTIONS = {
    "400": "Bad parameter or body (details name them).",
    "401": "Missing, invalid, revoked or expired API key.",
    "403": "The key's role may not do this (viewers only read).",
    "404": "No such object in the caller's organization.",
    "409": "State conflict.",
    "413": "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE ({max_bytes} bytes).",
    "415": "The body is not JSON (an upload: not multipart/form-data).",
    "422": "A valid request the data cannot answer (e.g. several currencies, too little history).",
}
# Paths whose data can make a valid request unanswerable.
_UNPROCESSABLE = ("/costs/overview", "/costs/trend", "/costs/forecast", "/costs/sync", "/import")


def error_responses(result, generator, request, public):
    """Document the error format and the 4xx answers each operation can give."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            codes = ["401"]
            if method in ("post", "put", "patch", "delete"):
                codes.append("403")
            query = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            if "{" in path or "provider_id" in query or path.endswith("/costs/sync"):
                codes.append("404")
            if query or operation.get("requestBody"):
                codes.append("400")
            if path.endswith(_UNPROCESSABLE):
                codes.append("422")
            if operation.get("requestBody"):
                codes += ["413", "415"]
            responses = operation.setdefault("responses", {})
            for code in codes:
                description = _DESCRIPTIONS[code]
                if code == "413":
                    description = (
                        "The upload is larger than INFRAAUDIT_UPLOAD_MAX_BYTES."
                        if path.endswith("/import")
                        else description.format(max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
                    )
                responses.setdefault(code, {"description": description, "content": ref})
            # Error answers an operation declares itself (with a description of its own)
            # have the same format.
            for code, response in responses.items():
                if code.startswith("4") and not response.get("content"):
                    response["content"] = ref
    return result


def response_keys_required(result, generator, request, public):
    """Every key of a response object is always there (``null`` when it has no value), so
    every property of a response component is required. The generator leaves out the
    fields a request may omit (a provider's ``config``), the model fields with a default
    (an anomaly's ``status``) and the paginator's ``next`` and ``previous``; a client
    generated from the schema would read them as optional."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") or name.startswith("Patched") or name == "Error":
            continue
        if component.get("properties"):
            component["required"] = sorted(component["properties"])
    return result
