from rest_framework.pagination import PageNumberPagination

from infraaudit.errors import InvalidParameter


class Pagination(PageNumberPagination):
    """Page-number pagination with a client-chosen page size (``?page_size=``, at most 1000).
    A page that is not a positive integer is a 400; a page past the end stays a 404."""

    page_size_query_param = "page_size"
    max_page_size = 1000

    def paginate_queryset(self, queryset, request, view=None):
        raw = request.query_params.get(self.page_query_param)
        valid = raw is None or raw in self.last_page_strings or (raw.isdigit() and int(raw) >= 1)
        if not valid:
            raise InvalidParameter({self.page_query_param: ["must be a positive integer"]})
        return super().paginate_queryset(queryset, request, view)
