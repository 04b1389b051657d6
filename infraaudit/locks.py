"""Locks across threads and processes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


def advisory_lock_id(name: str) -> int:
    """The 64-bit key of the PostgreSQL advisory lock ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(name: str) -> Iterator[bool]:
    """Hold the PostgreSQL session advisory lock ``name`` (hashed to 64 bits) while the
    block runs; yields True. Another process or thread asking for it waits until the
    block ends (or its connection closes, if its process dies). Elsewhere (SQLite, the
    embedded default) it yields False at once: callers that need a lock there bring
    their own."""
    if connection.vendor != "postgresql":
        yield False
        return
    lock_id = advisory_lock_id(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [lock_id])
    try:
        yield True
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
