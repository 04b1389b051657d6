from django_filters.rest_framework import DjangoFilterBackend

from infraaudit.errors import InvalidParameter, empty_parameters


class QueryFilterBackend(DjangoFilterBackend):
    """A bad filter value is a bad query parameter: 400 INVALID_PARAMETER naming it. A
    filter given empty (``?kind=``) is bad too, not a request for no filter."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        errors = empty_parameters(request.query_params, filterset.filters)
        if not filterset.is_valid():
            for key, messages in filterset.errors.items():
                errors.setdefault(key, [str(message) for message in messages])
        if errors:
            raise InvalidParameter(errors)
        return filterset.qs
