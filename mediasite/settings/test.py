"""Test settings: the same stack as production, with the data dir in a temp folder.

DATABASE_URL / REDIS_URL / S3 variables from the environment still apply, so `.ci/run` runs the
suite against PostgreSQL, Redis and S3; without them it runs on the embedded default.
"""
import os
import tempfile

os.environ.setdefault("MEDIASITE_DATA_DIR", tempfile.mkdtemp(prefix="mediasite-test-"))
os.environ.setdefault("MEDIASITE_SERVER_NAME", "test.local")
# Room for the 200 MiB round trip of the live-server tests.
os.environ.setdefault("MEDIASITE_MAX_UPLOAD_SIZE", str(256 << 20))
# A fixed key (Fernet format) so a server process started by the tests reads the same rows.
os.environ.setdefault("MEDIASITE_ENCRYPTION_KEYS", "dGVzdC1rZXktMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=")

from .base import *  # noqa: E402,F401,F403
from .base import DATABASES, DATA_DIR, MEDIASITE  # noqa: E402

DATA_DIR.mkdir(parents=True, exist_ok=True)
SECRET_KEY = "test-only-secret-key-not-for-production-use-000000000000"
# Tests flush the access batch explicitly; a background thread would race the test transaction.
MEDIASITE["ACCESS_FLUSH_THREAD"] = False
# Tests that want pre-generated thumbnails turn it on; elsewhere it would race the test's rows.
MEDIASITE["THUMBNAIL_PREGENERATE"] = False
# Hundreds of uploads by the same user (and key fetches) from 127.0.0.1 across the suite: rate
# limits are turned on by the tests that test them (tests/security/test_quotas.py,
# tests/federation/test_request_auth.py).
MEDIASITE["UPLOAD_RATE_PER_USER"] = MEDIASITE["UPLOAD_RATE_PER_IP"] = MEDIASITE["KEY_FETCH_RATE_PER_IP"] = ""
# Tasks run inline unless a test hands them to a real worker process.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not :memory:, so a gunicorn started by the tests can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
else:
    # The flush between tests TRUNCATEs the tables while a server the tests started may still be
    # writing two of them in one transaction (its access batch, a request finishing): a deadlock.
    # PostgreSQL aborts the session that checks first; waiting longer here before checking makes
    # the server's transaction the one aborted (it retries), not the test's flush.
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = (_options.get("options", "") + " -c deadlock_timeout=10s").strip()

# Serve static files from the finders: tests do not run collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
