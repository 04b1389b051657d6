from django_filters import rest_framework as filters

from providers.models import Provider

_BOOLEAN = {"true": True, "false": False, "1": True, "0": False}


class ProviderFilterSet(filters.FilterSet):
    """Query filters of the provider list; a value outside the choices is a 400."""

    kind = filters.ChoiceFilter(choices=Provider.Kind.choices)
    is_active = filters.TypedChoiceFilter(
        choices=[(value, value) for value in _BOOLEAN], coerce=_BOOLEAN.__getitem__
    )

    class Meta:
        model = Provider
        fields = ["kind", "is_active"]
