"""drf-spectacular hooks."""


def paths_without_trailing_slash(endpoints):
    """Our API paths take an optional trailing slash (``/?``), which the schema generator
    renders as ``/``; the contract names every path without it."""
    return [
        (path.rstrip("/") or "/", path_regex, method, callback)
        for path, path_regex, method, callback in endpoints
    ]
