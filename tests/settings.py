"""Settings for the test suite: the real settings on PostgreSQL, tasks run eagerly."""

import os
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/infraaudit")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")
# A fixed Fernet key for tests only (never used outside the suite).
os.environ.setdefault("INFRAAUDIT_ENCRYPTION_KEY", "oR0WGVbBa7k8lS0xYbW6WkVo2m0b9N0VxJpR8yqZ0Uc=")
os.environ.setdefault(
    "INFRAAUDIT_VAR_DIR", os.path.join(tempfile.gettempdir(), "infraaudit-test-var")
)
os.makedirs(os.path.join(os.environ["INFRAAUDIT_VAR_DIR"], "static"), exist_ok=True)

from infraaudit.settings import *  # noqa: E402, F403

CELERY_TASK_ALWAYS_EAGER = True
CELERY_BROKER_URL = ""
TASK_EAGER_RETRIES = True  # the real retries, run at once (tests that want the default turn it off)
FORECAST_WARM_AFTER_SYNC = False  # tests that want it turn it on
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
