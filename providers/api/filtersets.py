from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field

from providers.models import Provider

_BOOLEAN = {"true": True, "false": False, "1": True, "0": False}


@extend_schema_field({"type": "string", "enum": list(_BOOLEAN)})
class _BooleanChoiceFilter(filters.TypedChoiceFilter):
    """A boolean given as one of ``_BOOLEAN``'s words; the schema says so (read from the
    model field, it was a boolean limited to strings)."""


class ProviderFilterSet(filters.FilterSet):
    """Query filters of the provider list; a value outside the choices is a 400."""

    kind = filters.ChoiceFilter(choices=Provider.Kind.choices)
    is_active = _BooleanChoiceFilter(
        choices=[(value, value) for value in _BOOLEAN], coerce=_BOOLEAN.__getitem__
    )

    class Meta:
        model = Provider
        fields = ["kind", "is_active"]
