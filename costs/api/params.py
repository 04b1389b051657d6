"""Query parameters and serializer fields shared by the cost endpoints."""

import re

from rest_framework import serializers

from accounts.permissions import request_org
from infraaudit.errors import ApiError, InvalidParameter, empty_parameters
from providers.models import Provider

# The one written form of a number in a query string. Python's int() and float() also take
# other digits (Arabic-Indic, fullwidth), a sign, surrounding spaces, underscores, "1.0" for an
# int, and "1e-1", "nan" or "inf" for a float; none of them is a form a client means.
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")


class _WrittenForm:
    """A number field that takes a string only when it matches ``form`` as a whole."""

    form: re.Pattern

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if isinstance(data, str) and not self.form.fullmatch(data):
            self.fail("form")
        return value


class StrictIntegerField(_WrittenForm, serializers.IntegerField):
    """An IntegerField that takes a string only in ASCII digits (``7``, ``-3``)."""

    form = _INTEGER
    default_error_messages = {"form": "must be an integer in ASCII digits (0-9)"}


class StrictFloatField(_WrittenForm, serializers.FloatField):
    """A FloatField that takes a string only as an ASCII decimal (``0.9``, ``.9``)."""

    form = _DECIMAL
    default_error_messages = {"form": "must be a decimal number in ASCII digits (e.g. 0.8)"}


_STRICT = {serializers.IntegerField: StrictIntegerField, serializers.FloatField: StrictFloatField}


class ProviderScopedQuery(serializers.Serializer):
    provider_id = StrictIntegerField(
        required=False, min_value=1, help_text="Limit to one provider of the organization."
    )


def ranged_field(field_class, low, high, **kwargs) -> serializers.Field:
    """A numeric ``field_class`` from ``low`` to ``high``, taken only in ASCII digits, whose
    every rejection (not a number, too small, too large, another written form) says the
    range. The messages go to the constructor: the min/max validators copy them there, so
    updating ``error_messages`` later changes only the "invalid" one."""
    message = f"must be between {low} and {high}"
    keys = ("min_value", "max_value", "invalid", "max_string_length")
    messages = dict.fromkeys(keys, message)
    messages["form"] = f"{message}, written in ASCII digits"
    return _STRICT.get(field_class, field_class)(
        min_value=low, max_value=high, error_messages=messages, **kwargs
    )


def days_field(help_text: str) -> serializers.IntegerField:
    """``days`` (1..3650, default 30)."""
    return ranged_field(serializers.IntegerField, 1, 3650, default=30, help_text=help_text)


def parse_query(serializer_class, request) -> dict:
    """Validated query parameters, or 400 INVALID_PARAMETER naming each bad one. A known
    parameter given empty (``?days=``) is bad, not a request for its default."""
    serializer = serializer_class(data=request.query_params)
    errors = empty_parameters(request.query_params, serializer.fields)
    if not serializer.is_valid():
        for key, messages in serializer.errors.items():
            errors.setdefault(key, [str(message) for message in messages])
    if errors:
        raise InvalidParameter(errors)
    return serializer.validated_data


def scoped_provider(request, params: dict) -> Provider | None:
    """The provider named by ``provider_id`` in the caller's organization (404 otherwise)."""
    provider_id = params.get("provider_id")
    if provider_id is None:
        return None
    from django.shortcuts import get_object_or_404

    return get_object_or_404(Provider, pk=provider_id, organization=request_org(request))


def request_object(request) -> dict:
    """The request body, which must be a JSON object (an empty body counts as ``{}``)."""
    data = request.data
    if not isinstance(data, dict):
        message = "the request body must be a JSON object"
        raise ApiError(
            message, code="INVALID_BODY", details={"non_field_errors": [message]}
        )
    return data


def money_field() -> serializers.DecimalField:
    """An amount of a response. A new field for every key: a field instance binds to one
    name only, so one instance shared by several keys of a serializer leaves only the last
    of them in the OpenAPI schema."""
    return serializers.DecimalField(max_digits=20, decimal_places=2)
