"""A named lock that holds across worker processes, on every supported deployment.

- With Redis (REDIS_URL): a Redis lock with a timeout, so a crashed holder cannot wedge it.
- With PostgreSQL and no Redis: a session advisory lock on its own short-lived connection.
- On the embedded default: an flock() on a file in the data dir (one machine, many processes).
"""
import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path

from django.conf import settings
from django.db import connections

from .conf import media_settings


class LockTimeout(Exception):
    pass


@contextlib.contextmanager
def named_lock(name: str, *, timeout: float = 60.0, hold_for: float = 120.0):
    redis_url = getattr(settings, "REDIS_URL", "")
    if redis_url:
        with _redis_lock(redis_url, name, timeout, hold_for):
            yield
    elif connections["default"].vendor == "postgresql":
        with _advisory_lock(name, timeout):
            yield
    else:
        with _file_lock(name, timeout):
            yield


_redis_clients: dict = {}


@contextlib.contextmanager
def _redis_lock(url: str, name: str, timeout: float, hold_for: float):
    import redis

    client = _redis_clients.get(url)
    if client is None:
        client = _redis_clients[url] = redis.Redis.from_url(url)
    lock = client.lock(f"mediasite:lock:{name}", timeout=hold_for, blocking_timeout=timeout)
    if not lock.acquire():
        raise LockTimeout(name)
    try:
        yield
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # expired while held: the work was idempotent anyway


def _lock_id(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _advisory_lock(name: str, timeout: float):
    import psycopg

    params = connections["default"].get_connection_params()
    # Its own connection: the caller's transactions must not be tied to the lock's lifetime.
    with psycopg.connect(**params, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", [_lock_id(name)]).fetchone()[0]:
            if time.monotonic() > deadline:
                raise LockTimeout(name)
            time.sleep(0.02)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_lock_id(name)])


@contextlib.contextmanager
def _file_lock(name: str, timeout: float):
    directory = Path(media_settings.DATA_DIR) / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha256(name.encode()).hexdigest()[:32]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(name) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
