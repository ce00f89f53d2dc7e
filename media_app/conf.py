"""Every Mediasite tunable with its default, read lazily from settings.MEDIASITE.

Lazy reads make `override_settings(MEDIASITE=...)` work in tests; unknown keys are rejected at
start-up so a typo in an operator's configuration cannot silently do nothing.
"""
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS = {
    "SERVER_NAME": "localhost:8000",
    "DATA_DIR": "./var",
    "MAX_UPLOAD_SIZE_BYTES": 52428800,
    "MAX_IMAGE_PIXELS": 32_000_000,
    "LEGACY_MEDIA": False,
    "STORAGE": "fs",
    "THUMBNAIL_STORAGE": "fs",
    # How often the in-memory access batch (last_access_ts + media.retrieved rows) is written.
    "ACCESS_FLUSH_SECONDS": 10.0,
    "ACCESS_FLUSH_THREAD": True,
    "MAX_PENDING_ACCESS_EVENTS": 100_000,
    "UNUSED_EXPIRES_SECONDS": 24 * 3600,
    "MAX_PENDING_UPLOADS_PER_USER": 100,
    "MAX_DOWNLOAD_TIMEOUT_MS": 60_000,
    "DEFAULT_DOWNLOAD_TIMEOUT_MS": 20_000,
    # Requests per process that may wait for a pending upload at once (the others answer
    # M_NOT_YET_UPLOADED at once); below gunicorn's threads per process, so some stay free.
    "PENDING_WAITERS_PER_PROCESS": 2,
    # Access tokens one user may mint through the API (`create_token` is not held to it).
    "MAX_TOKENS_PER_USER": 100,
    "ENCRYPTION_KEYS": [],
    "FEDERATION_SERVER_MAP": {},
    "OUTBOUND_ALLOWLIST": [],
    "BLOCKED_SERVERS": [],
    "REMOTE_MEDIA_LIFETIME_DAYS": 90,
    # Retention. A lifetime of None is "never" (the local ones are off unless the operator
    # sets them: deleting an upload is a human decision, these only propose it).
    "THUMBNAIL_LIFETIME_DAYS": 90,
    "LOCAL_MEDIA_LIFETIME_DAYS": None,
    "LOCAL_MEDIA_IDLE_DAYS": None,
    # Rows per transaction in the purge jobs: locks and memory are bounded by this, not by
    # the number of rows to purge.
    "RETENTION_BATCH_SIZE": 500,
    # mxc URIs per moderation request proposed by the local-media job.
    "RETENTION_PROPOSAL_BATCH_SIZE": 100,
    # Federation (media_app.federation). Outbound connections: connect and per-read timeouts,
    # and the total time one remote fetch may take.
    "OUTBOUND_CONNECT_TIMEOUT_SECONDS": 10.0,
    "OUTBOUND_READ_TIMEOUT_SECONDS": 30.0,
    "REMOTE_FETCH_DEADLINE_SECONDS": 120.0,
    "REMOTE_FETCH_IN_WORKER": False,
    # A failed remote fetch is remembered this long; requests meanwhile get the same error.
    "REMOTE_FAILURE_CACHE_SECONDS": 60,
    # Extra CA bundle for https federation peers (private federations with their own CA).
    "FEDERATION_TLS_CA_FILE": "",
    # Rate limits: bytes of remote media one user may pull in per window, and remote fetches
    # in flight at once per origin server.
    "REMOTE_DOWNLOAD_BYTES_PER_USER": 1 << 30,
    "REMOTE_DOWNLOAD_WINDOW_SECONDS": 3600,
    "REMOTE_FETCHES_PER_ORIGIN": 16,
    # Other servers' key fetches one client address may cause (a `limits` rate; empty: off).
    "KEY_FETCH_RATE_PER_IP": "30/minute",
    "UPLOAD_CHUNK_BYTES": 1 << 20,
    # Proxies (addresses or CIDR networks, "*" for any) whose X-Forwarded-For names the client
    # for per-address rate limits; gunicorn trusts their X-Forwarded-Proto from the same setting.
    "FORWARDED_ALLOW_IPS": ["127.0.0.1"],
    # `file` parts accepted in one multipart/form-data upload; each is held to MAX_UPLOAD_SIZE_BYTES.
    "MAX_UPLOAD_FILES_PER_REQUEST": 10,
    # An access token's last-used time is written at most this often (one UPDATE per token per
    # interval, not one per request).
    "TOKEN_LAST_USED_PRECISION_SECONDS": 60,
    # Thumbnails: (width, height, method) sizes offered; DYNAMIC renders the exact size asked,
    # capped at the largest of MAX_DYNAMIC_THUMBNAIL_SIZE in either dimension.
    "THUMBNAIL_SIZES": [(32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"), (640, 480, "scale"), (800, 600, "scale")],
    "DYNAMIC_THUMBNAILS": False,
    "MAX_DYNAMIC_THUMBNAIL_SIZE": 1600,
    "THUMBNAIL_PREGENERATE": True,
    # width x height x frames budget for animated thumbnails.
    "MAX_THUMBNAIL_FRAME_PIXELS": 400_000_000,
    "MAX_UPLOAD_NAME_CHARS": 255,
    # Storage (issue 3). Redirects to presigned URLs are off unless the operator turns them on;
    # a URL is signed at the start of its time bucket and stays valid MIN_VALIDITY past its end.
    "REDIRECT_DOWNLOADS": False,
    "REDIRECT_URL_BUCKET_SECONDS": 3600,
    "REDIRECT_URL_MIN_VALIDITY_SECONDS": 3600,
    # Unreferenced blobs and stray files younger than this are left alone by the collector.
    "GC_GRACE_SECONDS": 24 * 3600,
    "GC_INTERVAL_SECONDS": 6 * 3600,
    # The scheduled scrub re-hashes this many blobs per run, least recently verified first.
    "SCRUB_SAMPLE_BLOBS": 1000,
    "SCRUB_INTERVAL_SECONDS": 3600,
    # Reports a user may file (`limits` notation: N per second|minute|hour|day).
    "REPORT_RATE_LIMIT": "10/hour",
    # Abuse limits (media_app.ratelimit, services.quotas). Rates are `limits` strings ("" = off);
    # a reservation (POST /create) counts as an upload. Quotas of 0 are unlimited; a UserQuota
    # row in the admin overrides them per user.
    "UPLOAD_RATE_PER_USER": "600/minute",
    "UPLOAD_RATE_PER_IP": "1200/minute",
    "DEFAULT_QUOTA_BYTES": 0,
    "DEFAULT_QUOTA_FILES": 0,
    # Delegated authentication (services.delegated_auth): tokens this server did not mint are
    # checked against this homeserver's whoami; answers are cached this long (seconds).
    "HOMESERVER_URL": "",
    "HOMESERVER_CACHE_SECONDS": 60,
    "HOMESERVER_NEGATIVE_CACHE_SECONDS": 10,
    "HOMESERVER_TIMEOUT_SECONDS": 5.0,
    # Uncached whoami look-ups per client IP: random tokens cannot make us flood the homeserver.
    "HOMESERVER_LOOKUP_RATE_PER_IP": "60/minute",
    # Temp files of dead processes are removed this often (and whenever a web worker starts).
    "TEMP_SWEEP_INTERVAL_SECONDS": 300,
}


class _MediaSettings:
    def __getattr__(self, name):
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown Mediasite setting {name!r}")
        return getattr(settings, "MEDIASITE", {}).get(name, DEFAULTS[name])


media_settings = _MediaSettings()


def check_settings() -> None:
    unknown = set(getattr(settings, "MEDIASITE", {})) - set(DEFAULTS)
    if unknown:
        raise ImproperlyConfigured(f"Unknown MEDIASITE settings: {', '.join(sorted(unknown))}")
    from .ratelimit import trusted_proxies

    try:
        trusted_proxies(tuple(media_settings.FORWARDED_ALLOW_IPS))
    except ValueError as exc:
        raise ImproperlyConfigured(f"MEDIASITE_FORWARDED_ALLOW_IPS: {exc}") from None
    for name in ("STORAGE", "THUMBNAIL_STORAGE"):
        alias = getattr(media_settings, name)
        if alias not in settings.STORAGES:
            raise ImproperlyConfigured(f"MEDIASITE_{name}={alias!r} names no configured storage backend")
