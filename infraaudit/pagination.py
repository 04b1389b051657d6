import re

from rest_framework.pagination import PageNumberPagination

from infraaudit.errors import InvalidParameter, empty_parameters

_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() and int() also take other digits (Arabic-Indic, fullwidth, superscripts)


class Pagination(PageNumberPagination):
    """Page-number pagination with a client-chosen page size (``?page_size=``, 1..1000).
    A page that is not a positive integer, or a page size outside 1..1000, is a 400 (both
    in ASCII digits); a page past the end stays a 404."""

    page_size_query_param = "page_size"
    max_page_size = 1000

    def paginate_queryset(self, queryset, request, view=None):
        errors = empty_parameters(
            request.query_params, [self.page_query_param, self.page_size_query_param]
        )
        page = request.query_params.get(self.page_query_param) or None
        if not (
            page is None
            or page in self.last_page_strings
            or (_DIGITS.fullmatch(page) and int(page) >= 1)
        ):
            errors[self.page_query_param] = ["must be a positive integer"]
        size = request.query_params.get(self.page_size_query_param) or None
        if size is not None and not (
            _DIGITS.fullmatch(size) and 1 <= int(size) <= self.max_page_size
        ):
            errors[self.page_size_query_param] = [
                f"must be an integer between 1 and {self.max_page_size}"
            ]
        if errors:
            raise InvalidParameter(errors)
        return super().paginate_queryset(queryset, request, view)
