from django_filters.rest_framework import DjangoFilterBackend

from infraaudit.errors import InvalidParameter


class QueryFilterBackend(DjangoFilterBackend):
    """A bad filter value is a bad query parameter: 400 INVALID_PARAMETER naming it."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            raise InvalidParameter(
                {key: [str(message) for message in messages]
                 for key, messages in filterset.errors.items()}
            )
        return filterset.qs
