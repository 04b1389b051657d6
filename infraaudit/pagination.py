from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    """Page-number pagination with a client-chosen page size (``?page_size=``, at most 1000)."""

    page_size_query_param = "page_size"
    max_page_size = 1000
