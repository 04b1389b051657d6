"""The API's JSON parser: every body that is not usable JSON is a 400, never a 500."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Far deeper than any request body of the API; a deeper one is an attack or a bug, and
# the serializers and the database would recurse through it again after the parser.
MAX_DEPTH = 64


def _depth(value) -> int:
    """How deeply ``value`` nests arrays and objects (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser, which lets the RecursionError of a deeply nested body through (a
    500); here that body, and one nested deeper than ``MAX_DEPTH``, is a 400 ParseError."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            too_deep = True  # raised below, once the recursion has unwound
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        else:
            too_deep = _depth(data) > MAX_DEPTH
        if too_deep:
            raise ParseError(
                f"JSON parse error - JSON nested too deeply (at most {MAX_DEPTH} levels)"
            )
        return data
