"""DATABASES from DATABASE_URL, or an embedded SQLite file in the data directory."""
from .base import DATA_DIR, env  # noqa: F401  (imported while base is loading)

_db = env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'mediasite.sqlite3'}")
if _db["ENGINE"].endswith("sqlite3"):
    _db["OPTIONS"] = {
        # Several gunicorn workers share the file: WAL lets readers run beside the writer,
        # IMMEDIATE takes the write lock up front instead of failing on lock upgrade.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
# Persistent connections: opening one per request costs more than the request's queries.
_db.setdefault("CONN_MAX_AGE", 60)
_db["CONN_HEALTH_CHECKS"] = True

DATABASES = {"default": _db}
