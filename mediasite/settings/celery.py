"""Celery: Redis when REDIS_URL is set; otherwise a broker that needs no server.

The embedded default keeps messages as files in the data directory (kombu's filesystem
transport), and `make run` starts one worker process beside gunicorn for them (see
mediasite/gunicorn_conf.py): background work runs in its own process, at a lower priority, and
never holds a web worker's GIL.
"""
from .base import DATA_DIR, env

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
else:
    BROKER_DIR = DATA_DIR / "broker"
    # kombu's filesystem transport, its messages written whole before they appear
    # (mediasite/broker.py). It ignores the host; naming one keeps kombu from warning.
    CELERY_BROKER_URL = "mediasite-fs://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "control_folder": str(BROKER_DIR / "control"),
        # How long a queued task can wait unseen: a directory listing this often costs the
        # idle worker next to nothing, and a request waiting for a task (a remote fetch with
        # MEDIASITE_REMOTE_FETCH_IN_WORKER) waits for it.
        "polling_interval": 0.05,
    }
    # The filesystem transport has no fanout exchange for remote control.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# "federation" holds what every process of a deployment must agree on (fetches in flight,
# failures, other servers' keys): Redis, or files in the data dir on the embedded default.
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
        "federation": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                       "KEY_PREFIX": "fed"},
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "federation": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                       "LOCATION": str(DATA_DIR / "cache" / "federation")},
    }
