"""Settings, read from the environment (see `.env.example`).

With no environment at all the service runs on its embedded default: a SQLite file
under ``var/`` and Celery tasks executed in-process (no broker to install).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from infraaudit.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("INFRAAUDIT_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off "
            "(set DJANGO_DEBUG=1 for local development)."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# Fernet key(s) for provider credentials at rest. Several comma-separated keys allow
# rotation: the first encrypts, all decrypt.
ENCRYPTION_KEYS = env_list("INFRAAUDIT_ENCRYPTION_KEY")
if not ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "INFRAAUDIT_ENCRYPTION_KEY is required when DJANGO_DEBUG is off. Generate one with: "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
    ENCRYPTION_KEYS = [base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()]
for _key in ENCRYPTION_KEYS:  # a malformed key stops the start, not the first credential saved
    try:
        _valid = len(base64.urlsafe_b64decode(_key.encode())) == 32
    except (ValueError, binascii.Error):
        _valid = False
    if not _valid:
        raise ImproperlyConfigured(
            "INFRAAUDIT_ENCRYPTION_KEY must be one or more comma-separated Fernet keys "
            "(32 url-safe base64-encoded bytes); one of them is not"
        )

# The only local folder a FOCUS provider may read exports from.
IMPORT_ROOT = Path(env_str("INFRAAUDIT_IMPORT_ROOT") or VAR_DIR / "imports").resolve()
UPLOAD_DIR = Path(env_str("INFRAAUDIT_UPLOAD_DIR") or VAR_DIR / "uploads").resolve()
UPLOAD_MAX_BYTES = env_int("INFRAAUDIT_UPLOAD_MAX_BYTES", 2 * 1024**3)
# Use the server's own cloud identity (instance role, ADC, DefaultAzureCredential).
# Off by default: it would let one organization read another's data through us.
ALLOW_AMBIENT_CREDENTIALS = env_bool("INFRAAUDIT_ALLOW_AMBIENT_CREDENTIALS", default=False)
# Alert webhooks to loopback, private or link-local addresses (a receiver on your network).
WEBHOOK_ALLOW_INTERNAL = env_bool("INFRAAUDIT_WEBHOOK_ALLOW_INTERNAL", default=False)
DEFAULT_CURRENCY = env_str("INFRAAUDIT_DEFAULT_CURRENCY", "USD")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "accounts",
    "providers",
    "costs",
]

# Admin messages live in the session, not in a cookie: the message that shows a new API
# key once would otherwise travel in a signed (readable) cookie, to every proxy and log
# that records cookies.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "infraaudit.urls"
WSGI_APPLICATION = "infraaudit.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
if not DATABASE_URL:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASE_URL = f"sqlite:///{VAR_DIR / 'infraaudit.sqlite3'}"
try:
    DATABASES = {"default": environ.Env.db_url_config(DATABASE_URL)}
except Exception as exc:  # django-environ raises several types for a malformed URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded default serves concurrent requests and in-process jobs. A transaction
    # that reads and then writes (the default DEFERRED mode) cannot wait for another
    # writer: SQLite answers "database is locked" at once, a 500. IMMEDIATE takes the
    # write lock at BEGIN, so writers queue for up to ``timeout`` seconds instead; WAL
    # lets readers go on while one writes.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=30,
        transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "infraaudit_cache",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # larger uploads stream to a temporary file
FILE_UPLOAD_TEMP_DIR = None

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    # Only a TLS proxy in front may say the request came over HTTPS: where clients reach
    # gunicorn directly, the header is theirs to forge.
    if env_bool("DJANGO_TRUST_X_FORWARDED_PROTO", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.BearerKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.OrgRolePermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Bodies are JSON; only the FOCUS upload takes multipart (its own parser_classes).
    "DEFAULT_PARSER_CLASSES": ["infraaudit.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["infraaudit.filters.QueryFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "infraaudit.pagination.Pagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "infraaudit.errors.exception_handler",
    "COERCE_DECIMAL_TO_STRING": False,
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_RATES": {},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "InfraAudit Costs API",
    "DESCRIPTION": "Billing sync, spend overview and trend, forecasts and anomalies.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "PREPROCESSING_HOOKS": ["infraaudit.schema.paths_without_trailing_slash"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "infraaudit.schema.error_responses",
        "infraaudit.schema.response_keys_required",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key"}
        }
    },
    "SECURITY": [{"bearerAuth": []}],
    # Swagger UI is served from our own static files, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery. With no broker configured, tasks run in-process (eagerly) so the embedded
# default needs nothing installed; production sets CELERY_BROKER_URL=redis://...
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
# After every sync job a worker fits and caches the organization's forecasts, so the day's
# first request does not wait for a fit. Off without a broker: the fit would run inside
# the sync request.
FORECAST_WARM_AFTER_SYNC = env_bool(
    "INFRAAUDIT_FORECAST_WARM_AFTER_SYNC", default=bool(CELERY_BROKER_URL)
)
CELERY_TASK_EAGER_PROPAGATES = False
# Without a broker a retry would run at once, in the request: tasks give up instead
# (costs.tasks._final_attempt). The test suite turns this on to run the real retries.
TASK_EAGER_RETRIES = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Time limits of one provider's sync (seconds); a job still running after
# SYNC_JOB_STALE_SECONDS is marked failed by the sweeper.
SYNC_SOFT_TIME_LIMIT = env_int("INFRAAUDIT_SYNC_SOFT_TIME_LIMIT", 3300)
SYNC_TIME_LIMIT = env_int("INFRAAUDIT_SYNC_TIME_LIMIT", 3600)
SYNC_JOB_STALE_SECONDS = env_int("INFRAAUDIT_SYNC_JOB_STALE_SECONDS", 2 * 3600)
if not SYNC_SOFT_TIME_LIMIT < SYNC_TIME_LIMIT < SYNC_JOB_STALE_SECONDS:
    # The sweeper must only ever see syncs that their time limit has already stopped.
    raise ImproperlyConfigured(
        "need INFRAAUDIT_SYNC_SOFT_TIME_LIMIT < INFRAAUDIT_SYNC_TIME_LIMIT < "
        "INFRAAUDIT_SYNC_JOB_STALE_SECONDS (seconds)"
    )
# The longest a task waits before its retry, whatever Retry-After the other side asks
# (50 minutes by default): an attempt that ran to its time limit, then waited longer,
# would be swept as a lost worker. With Redis a message stays unacknowledged (acks_late)
# while it waits and while it runs, and one held past the visibility timeout is delivered
# to a second worker: the timeout covers both (its default, one hour, is as long as a sync
# may run alone).
TASK_RETRY_AFTER_MAX_SECONDS = max(60, min(3600, SYNC_JOB_STALE_SECONDS - SYNC_TIME_LIMIT - 600))
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": TASK_RETRY_AFTER_MAX_SECONDS + SYNC_TIME_LIMIT + 600
}
# The nightly sync, as a cron expression (minute hour day-of-month month day-of-week),
# used when the periodic task is first created; later edits are made in the admin.
NIGHTLY_SYNC_CRON = env_str("INFRAAUDIT_NIGHTLY_SYNC_CRON", "30 2 * * *")


if len(NIGHTLY_SYNC_CRON.split()) != 5:
    raise ImproperlyConfigured(
        f"INFRAAUDIT_NIGHTLY_SYNC_CRON must have 5 fields, got {NIGHTLY_SYNC_CRON!r}"
    )
# Periodic tasks live in the database (django-celery-beat) so staff can edit them in the
# admin; costs.schedule creates them after migrate from the settings above.
CELERY_BEAT_SCHEDULE = {}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "azure": {"level": "WARNING"},
        "cmdstanpy": {"level": "WARNING"},
        "prophet": {"level": "WARNING"},
    },
}
