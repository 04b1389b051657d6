"""Settings come from the environment and fail loudly on bad values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from infraaudit.env import env_bool, env_int, env_list

REPO = Path(__file__).resolve().parents[1]
_SETUP = "import django; django.setup(); print('started')"


def _start(env_overrides: dict, code: str = _SETUP) -> subprocess.CompletedProcess:
    """``code`` run in a fresh interpreter on the real settings, with only these variables
    of ours set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "INFRAAUDIT_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "infraaudit.settings", **env_overrides})
    return subprocess.run(  # noqa: S603 (the test's own code, not input)
        [sys.executable, "-c", code],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )


def test_settings_refuse_to_start_without_secret_key_when_not_debug():
    result = _start({})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in result.stderr


def test_settings_refuse_to_start_without_encryption_key_when_not_debug():
    result = _start({"DJANGO_SECRET_KEY": "x" * 50})
    assert result.returncode != 0
    assert "INFRAAUDIT_ENCRYPTION_KEY is required" in result.stderr


@pytest.mark.parametrize("key", ["notafernetkey", "YWJj", "x" * 44])
def test_settings_refuse_to_start_with_a_malformed_encryption_key(key):
    # It used to start and answer 500 to the first provider saved with credentials.
    good = "3q2T6fD7Xb1o7qsFq3o1q0Zq5vQmRkY6m7jcW0xkX6U="
    result = _start({"DJANGO_SECRET_KEY": "x" * 50, "INFRAAUDIT_ENCRYPTION_KEY": f"{good},{key}"})
    assert result.returncode != 0
    assert "one of them is not" in result.stderr
    assert key not in result.stderr  # the message never repeats a key
    assert _start({"DJANGO_SECRET_KEY": "x" * 50, "INFRAAUDIT_ENCRYPTION_KEY": good}).returncode == 0


def test_settings_start_in_debug_with_embedded_defaults():
    result = _start({"DJANGO_DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_settings_reject_malformed_boolean():
    result = _start({"DJANGO_DEBUG": "ture"})
    assert result.returncode != 0
    assert "DJANGO_DEBUG must be one of" in result.stderr


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("Yes", True), ("off", False),
                                               ("", False)])
def test_env_bool_parses(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env_bool("X_FLAG") is expected


def test_env_int_and_list(monkeypatch):
    monkeypatch.setenv("X_INT", "12")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_int("X_INT", 3) == 12
    assert env_int("X_MISSING", 3) == 3
    assert env_list("X_LIST") == ["a", "b", "c"]
    monkeypatch.setenv("X_INT", "twelve")
    with pytest.raises(ImproperlyConfigured, match="X_INT must be an integer"):
        env_int("X_INT", 3)


_SQLITE_WRITERS = """
import threading

import django

django.setup()
from django.db import connection, connections, transaction

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE probe (n integer)")
    cursor.execute("INSERT INTO probe VALUES (0)")
meet, errors = threading.Barrier(2), []


def read_then_write():
    try:
        with transaction.atomic(), connections["default"].cursor() as cursor:
            cursor.execute("SELECT n FROM probe")
            try:  # both have read before either writes, unless one waits at BEGIN
                meet.wait(timeout=1)
            except threading.BrokenBarrierError:
                pass
            cursor.execute("UPDATE probe SET n = n + 1")
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connections.close_all()


threads = [threading.Thread(target=read_then_write) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
with connection.cursor() as cursor:
    cursor.execute("SELECT n FROM probe")
    print(errors, cursor.fetchone()[0])
"""


def test_sqlite_default_queues_concurrent_writers_instead_of_failing(tmp_path):
    """Two requests that each read, then write, at the same time on the embedded default:
    both commit (before IMMEDIATE transactions one got 'database is locked', a 500)."""
    result = _start(
        {
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "INFRAAUDIT_VAR_DIR": str(tmp_path),
        },
        _SQLITE_WRITERS,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["[]", "2"], result.stdout


def test_settings_refuse_a_sweeper_faster_than_the_sync_time_limit():
    result = _start({"DJANGO_DEBUG": "1", "INFRAAUDIT_SYNC_JOB_STALE_SECONDS": "600"})
    assert result.returncode != 0
    assert "INFRAAUDIT_SYNC_TIME_LIMIT < INFRAAUDIT_SYNC_JOB_STALE_SECONDS" in result.stderr


_PROXY = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.SECURE_PROXY_SSL_HEADER, settings.SECURE_HSTS_SECONDS)"
)
_PRODUCTION = {
    "DJANGO_SECRET_KEY": "x" * 50,
    "INFRAAUDIT_ENCRYPTION_KEY": "oR0WGVbBa7k8lS0xYbW6WkVo2m0b9N0VxJpR8yqZ0Uc=",
}


@pytest.mark.parametrize(
    ("extra", "printed"),
    [
        ({}, "None 0"),  # clients reaching gunicorn directly cannot claim HTTPS
        ({"DJANGO_TRUST_X_FORWARDED_PROTO": "true", "DJANGO_HSTS_SECONDS": "31536000"},
         "('HTTP_X_FORWARDED_PROTO', 'https') 31536000"),
    ],
)
def test_settings_trust_the_proxy_header_only_when_told(extra, printed):
    result = _start({**_PRODUCTION, **extra}, _PROXY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == printed
