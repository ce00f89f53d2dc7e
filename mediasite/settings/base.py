"""Settings shared by every environment, read from the environment (every variable is listed
in the README, "Configuration").

The embedded default needs nothing but a writable data directory: SQLite, local files and
in-process background work. Setting DATABASE_URL / REDIS_URL / MEDIASITE_STORAGE moves the
same code onto PostgreSQL, Redis and S3.
"""
from django.core.exceptions import ImproperlyConfigured
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

DATA_DIR = Path(env.str("MEDIASITE_DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
PORT = env.int("PORT", default=8000)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")  # filled from the data dir in production
DEBUG = False
ALLOWED_HOSTS = env.list("MEDIASITE_ALLOWED_HOSTS", default=["*"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "media_app",
    "media_app.moderation",
    "axes",
    "media_app.retention",
    "media_app.federation",
]

MIDDLEWARE = [
    "media_app.cors.MatrixCorsMiddleware",
    "media_app.middleware.AdminNulQueryMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out sign-in into its lockout response.
    "axes.middleware.AxesMiddleware",
]

# Admin sign-in is protected against guessing (django-axes): after AXES_FAILURE_LIMIT failures
# for one username from one address, that pair is locked out for the cool-off time. API tokens
# are not passwords (256 random bits) and are not affected.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("MEDIASITE_ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("MEDIASITE_ADMIN_LOGIN_COOLOFF_HOURS", default=1.0)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Sign-in passwords never reach the attempt log.
AXES_SENSITIVE_PARAMETERS = ["password"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

ROOT_URLCONF = "mediasite.urls"
CSRF_FAILURE_VIEW = "media_app.errors.csrf_failure"
WSGI_APPLICATION = "mediasite.wsgi.application"
# Matrix paths never end in a slash; redirecting them would break clients' POSTs.
APPEND_SLASH = False

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

from .database import DATABASES  # noqa: E402,F401  (needs env and DATA_DIR above)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

from .storages import STORAGES  # noqa: E402,F401
from .celery import *  # noqa: E402,F401,F403

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["media_app.auth.AccessTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "media_app.errors.drf_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Mediasite API",
    "DESCRIPTION": (
        "The Matrix Content Repository API and the native REST API of the Mediasite media repository. "
        "Authorize with an access token (`manage.py create_token USER` or `POST /api/v1/tokens`). "
        "Every error is JSON: `{\"errcode\": \"M_…\", \"error\": \"…\", \"code\": \"…\"}`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "PREPROCESSING_HOOKS": ["media_app.api.schema.exclude_disabled_endpoints"],
    # The Authorize dialog's token survives a reload of the docs page.
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True, "displayOperationId": False},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}


def _lifetime_days(variable: str, default: str) -> int | None:
    """The environment's `90d` or `90` -> 90; `off`, `none` or empty -> None (never). Anything
    else stops the start with a message naming the variable: a negative lifetime would purge
    everything."""
    value = env.str(variable, default=default).strip().lower()
    if value in ("", "off", "none", "never"):
        return None
    days = value[:-1] if value.endswith("d") else value
    if not (days.isascii() and days.isdigit()):
        raise ImproperlyConfigured(f"{variable}={value!r}: a number of days (`90d` or `90`), or `off`")
    return int(days)


# The Mediasite tunables the environment can set; media_app.conf holds every tunable with its
# default, reads these lazily and rejects unknown keys.
_server_name = env.str("MEDIASITE_SERVER_NAME", default=f"localhost:{PORT}")
MEDIASITE = {
    "SERVER_NAME": _server_name,
    "DATA_DIR": str(DATA_DIR),
    "MAX_UPLOAD_SIZE_BYTES": env.int("MEDIASITE_MAX_UPLOAD_SIZE", default=52428800),
    "MAX_IMAGE_PIXELS": env.int("MEDIASITE_MAX_IMAGE_PIXELS", default=32_000_000),
    "LEGACY_MEDIA": env.bool("MEDIASITE_LEGACY_MEDIA", default=False),
    "STORAGE": env.str("MEDIASITE_STORAGE", default="fs"),
    "THUMBNAIL_STORAGE": env.str("MEDIASITE_THUMBNAIL_STORAGE", default=env.str("MEDIASITE_STORAGE", default="fs")),
    "ACCESS_FLUSH_SECONDS": env.float("MEDIASITE_ACCESS_FLUSH_SECONDS", default=10.0),
    "ACCESS_FLUSH_THREAD": True,
    "UNUSED_EXPIRES_SECONDS": env.int("MEDIASITE_UNUSED_EXPIRES_SECONDS", default=24 * 3600),
    "MAX_UPLOAD_FILES_PER_REQUEST": env.int("MEDIASITE_MAX_UPLOAD_FILES", default=10),
    "MAX_PENDING_UPLOADS_PER_USER": env.int("MEDIASITE_MAX_PENDING_UPLOADS_PER_USER", default=100),
    "MAX_DOWNLOAD_TIMEOUT_MS": env.int("MEDIASITE_MAX_DOWNLOAD_TIMEOUT_MS", default=60_000),
    "PENDING_WAITERS_PER_PROCESS": env.int("MEDIASITE_PENDING_WAITERS_PER_PROCESS", default=2),
    "MAX_TOKENS_PER_USER": env.int("MEDIASITE_MAX_TOKENS_PER_USER", default=100),
    "DYNAMIC_THUMBNAILS": env.bool("MEDIASITE_DYNAMIC_THUMBNAILS", default=False),
    "THUMBNAIL_PREGENERATE": env.bool("MEDIASITE_THUMBNAIL_PREGENERATE", default=True),
    "ENCRYPTION_KEYS": env.list("MEDIASITE_ENCRYPTION_KEYS", default=[]),
    "REDIRECT_DOWNLOADS": env.bool("MEDIASITE_REDIRECT_DOWNLOADS", default=False),
    "REDIRECT_URL_BUCKET_SECONDS": env.int("MEDIASITE_REDIRECT_URL_BUCKET_SECONDS", default=3600),
    "REDIRECT_URL_MIN_VALIDITY_SECONDS": env.int("MEDIASITE_REDIRECT_URL_MIN_VALIDITY_SECONDS", default=3600),
    "GC_GRACE_SECONDS": env.int("MEDIASITE_GC_GRACE_SECONDS", default=24 * 3600),
    "GC_INTERVAL_SECONDS": env.int("MEDIASITE_GC_INTERVAL_SECONDS", default=6 * 3600),
    "SCRUB_SAMPLE_BLOBS": env.int("MEDIASITE_SCRUB_SAMPLE_BLOBS", default=1000),
    "SCRUB_INTERVAL_SECONDS": env.int("MEDIASITE_SCRUB_INTERVAL_SECONDS", default=3600),
    "TEMP_SWEEP_INTERVAL_SECONDS": env.int("MEDIASITE_TEMP_SWEEP_INTERVAL_SECONDS", default=300),
    "FEDERATION_SERVER_MAP": env.json("MEDIASITE_FEDERATION_SERVER_MAP", default={}),
    "OUTBOUND_ALLOWLIST": env.list("MEDIASITE_OUTBOUND_ALLOWLIST", default=[]),
    "BLOCKED_SERVERS": env.list("MEDIASITE_BLOCKED_SERVERS", default=[]),
    "REMOTE_MEDIA_LIFETIME_DAYS": _lifetime_days("MEDIASITE_REMOTE_MEDIA_LIFETIME", "90d"),
    "REPORT_RATE_LIMIT": env.str("MEDIASITE_REPORT_RATE_LIMIT", default="10/hour"),
    "UPLOAD_RATE_PER_USER": env.str("MEDIASITE_UPLOAD_RATE_PER_USER", default="600/minute"),
    "UPLOAD_RATE_PER_IP": env.str("MEDIASITE_UPLOAD_RATE_PER_IP", default="1200/minute"),
    "FORWARDED_ALLOW_IPS": env.list("MEDIASITE_FORWARDED_ALLOW_IPS", default=["127.0.0.1"]),
    "DEFAULT_QUOTA_BYTES": env.int("MEDIASITE_DEFAULT_QUOTA_BYTES", default=0),
    "DEFAULT_QUOTA_FILES": env.int("MEDIASITE_DEFAULT_QUOTA_FILES", default=0),
    "HOMESERVER_URL": env.str("MEDIASITE_HOMESERVER_URL", default=""),
    "HOMESERVER_CACHE_SECONDS": env.int("MEDIASITE_HOMESERVER_CACHE_SECONDS", default=60),
    "HOMESERVER_NEGATIVE_CACHE_SECONDS": env.int("MEDIASITE_HOMESERVER_NEGATIVE_CACHE_SECONDS", default=10),
    "HOMESERVER_LOOKUP_RATE_PER_IP": env.str("MEDIASITE_HOMESERVER_LOOKUP_RATE_PER_IP", default="60/minute"),
    "THUMBNAIL_LIFETIME_DAYS": _lifetime_days("MEDIASITE_THUMBNAIL_LIFETIME", "90d"),
    "LOCAL_MEDIA_LIFETIME_DAYS": _lifetime_days("MEDIASITE_LOCAL_MEDIA_LIFETIME", "off"),
    "LOCAL_MEDIA_IDLE_DAYS": _lifetime_days("MEDIASITE_LOCAL_MEDIA_IDLE", "off"),
    "RETENTION_BATCH_SIZE": env.int("MEDIASITE_RETENTION_BATCH_SIZE", default=500),
    "OUTBOUND_CONNECT_TIMEOUT_SECONDS": env.float("MEDIASITE_OUTBOUND_CONNECT_TIMEOUT", default=10.0),
    "OUTBOUND_READ_TIMEOUT_SECONDS": env.float("MEDIASITE_OUTBOUND_READ_TIMEOUT", default=30.0),
    "REMOTE_FETCH_DEADLINE_SECONDS": env.float("MEDIASITE_REMOTE_FETCH_DEADLINE", default=120.0),
    "REMOTE_FETCH_IN_WORKER": env.bool("MEDIASITE_REMOTE_FETCH_IN_WORKER", default=False),
    "REMOTE_FAILURE_CACHE_SECONDS": env.int("MEDIASITE_REMOTE_FAILURE_CACHE_SECONDS", default=60),
    "FEDERATION_TLS_CA_FILE": env.str("MEDIASITE_FEDERATION_TLS_CA_FILE", default=""),
    "REMOTE_DOWNLOAD_BYTES_PER_USER": env.int("MEDIASITE_REMOTE_DOWNLOAD_BYTES_PER_USER", default=1 << 30),
    "REMOTE_DOWNLOAD_WINDOW_SECONDS": env.int("MEDIASITE_REMOTE_DOWNLOAD_WINDOW_SECONDS", default=3600),
    "REMOTE_FETCHES_PER_ORIGIN": env.int("MEDIASITE_REMOTE_FETCHES_PER_ORIGIN", default=16),
    "KEY_FETCH_RATE_PER_IP": env.str("MEDIASITE_KEY_FETCH_RATE_PER_IP", default="30/minute"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Every handler carries the redaction filter (tokens, file names, query strings, reasons):
    # see mediasite/log_redaction.py. A handler added here must list it too.
    "filters": {"redact": {"()": "mediasite.log_redaction.RedactingFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": env.str("MEDIASITE_LOG_LEVEL", default="INFO")},
    "loggers": {
        # django.request logs request.path only (never the query string, where access_token
        # and filename may sit). It logs 4xx answers at WARNING: ERROR keeps that noise out
        # and still records every 5xx.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "ERROR"},
        # Its version banner on every start of every process and command, `create_token` included.
        "axes.apps": {"level": "WARNING"},
    },
}
