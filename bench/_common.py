"""Helpers shared by the benchmarks (run as scripts: ``python bench/<name>.py``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named by ``url`` if it does not exist yet."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def bench_environment(url: str, **extra: str) -> dict[str, str]:
    """This process's environment with the settings a benchmark runs on: the database at
    ``url``, throwaway secrets unless set, no broker (tasks run in the process), and
    ``extra``."""
    from cryptography.fernet import Fernet

    env = dict(os.environ)
    env.update({
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "infraaudit.settings",
        "DJANGO_SECRET_KEY": env.get("DJANGO_SECRET_KEY") or "bench-only-secret-key",
        "INFRAAUDIT_ENCRYPTION_KEY": env.get("INFRAAUDIT_ENCRYPTION_KEY")
        or Fernet.generate_key().decode(),
        "CELERY_BROKER_URL": "",
        **extra,
    })
    return env


def setup_django(url: str) -> None:
    """Django set up in this process on a created and migrated database at ``url``."""
    os.environ.update(bench_environment(url, LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING")))
    ensure_database(url)
    sys.path.insert(0, str(REPO))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
