"""Query-parameter serializers shared by the cost endpoints."""

from rest_framework import serializers

from accounts.permissions import request_org
from infraaudit.errors import InvalidParameter
from providers.models import Provider


class ProviderScopedQuery(serializers.Serializer):
    provider_id = serializers.IntegerField(
        required=False, min_value=1, help_text="Limit to one provider of the organization."
    )


def ranged_field(field_class, low, high, **kwargs) -> serializers.Field:
    """A numeric ``field_class`` from ``low`` to ``high`` whose every rejection (not a
    number, too small, too large) says the range. The messages go to the constructor:
    the min/max validators copy them there, so updating ``error_messages`` later changes
    only the "invalid" one."""
    message = f"must be between {low} and {high}"
    keys = ("min_value", "max_value", "invalid", "max_string_length")
    return field_class(
        min_value=low, max_value=high, error_messages=dict.fromkeys(keys, message), **kwargs
    )


def days_field(help_text: str) -> serializers.IntegerField:
    """``days`` (1..3650, default 30)."""
    return ranged_field(serializers.IntegerField, 1, 3650, default=30, help_text=help_text)


def parse_query(serializer_class, request) -> dict:
    """Validated query parameters, or 400 INVALID_PARAMETER naming each bad one."""
    serializer = serializer_class(data=request.query_params)
    if not serializer.is_valid():
        raise InvalidParameter(
            {key: [str(message) for message in messages] for key, messages in serializer.errors.items()}
        )
    return serializer.validated_data


def scoped_provider(request, params: dict) -> Provider | None:
    """The provider named by ``provider_id`` in the caller's organization (404 otherwise)."""
    provider_id = params.get("provider_id")
    if provider_id is None:
        return None
    from django.shortcuts import get_object_or_404

    return get_object_or_404(Provider, pk=provider_id, organization=request_org(request))
