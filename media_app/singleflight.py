"""Single flight: compute a result once, across processes and machines; everyone else waits for it.

Many requests can ask at once for something that does not exist yet (the thumbnail of an image
just posted to a big room, a remote server's media). Exactly one of them, the *owner*, must do
the work; the others must be released together as soon as the result exists — not one after
another through an exclusive lock — or receive the owner's failure.

A flight is named by a key (a string; its meaning belongs to the caller). The pieces:

- ``claim(key, lease=...)`` → a ``Flight`` when this caller now owns the work, ``None`` when
  another owner holds it. Raises the cached failure while one is cached for the key (see below).
  The claim is a *lease*: if the owner's process dies, the flight becomes free again by itself
  (Redis: the key expires after ``lease`` seconds; PostgreSQL and the file lock: the lock dies with
  the owner's connection or process). An owner whose work outlasts ``lease`` calls ``renew``, or
  claims with ``renew_for=`` seconds: the lease is then renewed in the background while the
  owner's process lives, up to that long, so a short lease frees a crashed owner's flight soon
  while a live owner keeps it for as long as its work may take.
- ``publish_done(flight)``: the owner has stored its result where ``lookup`` finds it (committed);
  the flight ends and every waiter wakes. Call it only once the result is visible to others.
- ``publish_failure(flight, error, ttl=0)``: the owner failed with ``error`` (a
  ``media_app.errors.MediasiteError``); the flight ends and every waiter raises an error of the
  same class, code and message. With ``ttl > 0`` the failure is also *cached*: for ``ttl`` seconds
  ``claim`` and ``raise_if_failed`` raise it instead of letting anyone try again (a dead origin is
  not hammered).
- ``abandon(flight)``: end the flight without a result (waiters take over or time out).
- ``wait(key, lookup=..., timeout=..., queued=False)`` → the result. ``lookup()`` returns the
  result or ``None``; it is called at once, whenever the owner ends, and on a short period, so a
  result that appears by any route is seen. Raises the owner's failure,
  ``errors.FlightTimedOut`` after ``timeout`` seconds, and, when the owner vanished without a
  result, ``errors.FlightAbandoned`` — unless ``queued=True``, which says the owner may not have
  started yet (a queued Celery task), so only the timeout ends the wait.
- ``in_flight(key)``: whether an owner currently holds the key. ``raise_if_failed(key)``: raise the
  cached failure, if any.
- ``run_once(key, lookup=..., compute=..., timeout=...)``: the whole pattern for an owner in the
  caller's own process: return ``lookup()`` if it has a result, else claim and ``compute()`` (which
  must store the result where ``lookup`` finds it, and return it), else wait; when the owner
  vanishes, one waiter takes over.

Two uses:

Thumbnails (``services/thumbnails.py``)::

    thumb = singleflight.run_once(
        thumbnail_flight_key(...), lookup=lambda: _cached(...), compute=lambda: _render_and_store(...),
        timeout=60,
    )

Work done by another process (a Celery task per remote media)::

    # request handler: never does the work itself
    media = lookup()
    if media is None:
        singleflight.raise_if_failed(key)          # a recent failure, cached: answer it at once
        if not singleflight.in_flight(key):
            fetch_remote_media.delay(server, media_id)   # two requesters may both enqueue
        media = singleflight.wait(key, lookup=lookup, timeout=timeout_ms / 1000, queued=True)

    # the Celery task: the owner; a second task for the same key finds the flight taken
    flight = singleflight.claim(key, lease=120)    # raises the cached failure, if any
    if flight is None:
        return
    try:
        if lookup() is None:
            fetch_and_store()
    except errors.MediasiteError as exc:
        singleflight.publish_failure(flight, exc, ttl=60)
        raise
    except BaseException:
        singleflight.publish_failure(flight, errors.RemoteFetchFailed(), ttl=60)
        raise
    singleflight.publish_done(flight)

The backend follows the deployment:

- Redis (``REDIS_URL`` set): the owner is a key set with NX and an expiry (the lease); the end of
  a flight is published on a channel every waiter subscribes to; failures are keys with expiries.
- PostgreSQL without Redis: the owner holds a session advisory lock on a connection of its own;
  waiters LISTEN on a channel the owner NOTIFYs when it ends, and see a dead owner's lock vanish
  from ``pg_locks``. Failures are rows of ``FlightFailure``, written on the owner's connection so
  the caller's transaction does not hold them back.
- The embedded SQLite default (one machine): the owner holds an ``flock`` on a file in the data
  dir and counts its end in that file; waiters probe the lock and the count every few
  milliseconds (system calls, not queries) and look the result up when a flight has ended or
  its owner died.
  Failures are small JSON files beside the lock.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.db import connections

from . import errors
from .conf import media_settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A failure stays readable this long at least, so waiters that poll see it even with ttl=0; it
# never blocks a new claim unless ttl > 0.
FAILURE_VISIBLE_SECONDS = 30.0
# How often a notified waiter also re-checks the result and the owner's liveness: this bounds
# how long a crashed owner (Redis: after its lease) goes unnoticed.
RECHECK_SECONDS = 0.5
# The file backend has no wake-up: waiters probe the owner's lock this often.
FILE_POLL_SECONDS = 0.01
FILE_CLAIM_PATIENCE_SECONDS = 0.003
# The file backend's files of a key no flight has used for this long are removed by the
# scheduled sweep (FileBackend.sweep): one pair per key ever flown would otherwise stay for good.
FILE_IDLE_SECONDS = 24 * 3600


@dataclasses.dataclass(eq=False)
class Flight:
    """Ownership of one key; hand it back through publish_done/publish_failure/abandon."""

    key: str
    token: str
    backend: Backend
    handle: Any = None  # the backend's hold on the flight (a connection, a file descriptor)
    ended: bool = False
    renewing: threading.Event | None = None  # set to stop the background renewal


def _renew_in_background(flight: Flight, lease: float, renew_for: float) -> None:
    stop = flight.renewing = threading.Event()
    until = time.monotonic() + renew_for

    def run():
        while not stop.wait(lease / 3):
            if time.monotonic() >= until:
                return
            try:
                flight.backend.renew(flight, lease)
            except Exception:  # a passing Redis error: the next renewal comes before the lease ends
                logger.warning("Could not renew the lease of flight %s", flight.key, exc_info=True)

    threading.Thread(target=run, name=f"flight-lease:{flight.key}", daemon=True).start()


# --- the public API ---------------------------------------------------------------------------

@contextlib.contextmanager
def _reachable(chosen: Backend):
    """A backend whose server cannot be reached answers 503 COORDINATION_UNAVAILABLE (retry),
    not a 500: nothing is wrong with the request, and nothing is lost."""
    try:
        yield
    except chosen.unreachable as exc:
        logger.warning("The single-flight backend is unreachable: %s", exc)
        raise errors.CoordinationUnavailable() from exc


def claim(key: str, *, lease: float = 60.0, renew_for: float = 0.0) -> Flight | None:
    chosen = backend()
    with _reachable(chosen):
        flight = chosen.claim(key, lease)
    if flight is not None and renew_for > 0 and chosen.leases_expire:
        _renew_in_background(flight, lease, renew_for)
    return flight


def renew(flight: Flight, *, lease: float = 60.0) -> None:
    flight.backend.renew(flight, lease)


def publish_done(flight: Flight) -> None:
    _end(flight, None, 0.0)


def publish_failure(flight: Flight, error: errors.MediasiteError, *, ttl: float = 0.0) -> None:
    _end(flight, _error_payload(error), ttl)


def _end(flight: Flight, failure: dict | None, ttl: float) -> None:
    if not flight.ended:
        flight.ended = True
        if flight.renewing is not None:
            flight.renewing.set()  # the background renewal stops now, not at its next turn
        try:
            flight.backend.end(flight, failure, ttl)
        except Exception:
            # The owner's own work is done and must not fail over this (Redis gone, say): the
            # waiters re-check the result every RECHECK_SECONDS, and see the owner gone once its
            # hold lapses (the lease, or the session a failed unlock closes). Only a failure
            # meant for them is lost, and one of them then takes the flight over.
            logger.warning("Could not end flight %s", flight.key, exc_info=True)


def abandon(flight: Flight) -> None:
    publish_done(flight)


def in_flight(key: str) -> bool:
    chosen = backend()
    with _reachable(chosen):
        return chosen.owner_alive(key)


def raise_if_failed(key: str) -> None:
    chosen = backend()
    with _reachable(chosen):
        payload = chosen.cached_failure(key)
    if payload is not None:
        raise _error_from_payload(payload)


def wait(key: str, *, lookup: Callable[[], T | None], timeout: float, queued: bool = False) -> T:
    deadline = time.monotonic() + timeout
    chosen = backend()
    with _reachable(chosen), chosen.waiter(key) as waiter:
        while True:
            result = lookup()
            if result is not None:
                return result
            if not waiter.owner_alive():
                payload = waiter.failure()
                if payload is not None:
                    raise _error_from_payload(payload)
                # The owner may have published its result between our lookup and this check.
                result = lookup()
                if result is not None:
                    return result
                if not queued:
                    raise errors.FlightAbandoned()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.FlightTimedOut()
            waiter.sleep(remaining)


def run_once(key: str, *, lookup: Callable[[], T | None], compute: Callable[[], T], timeout: float,
             lease: float = 60.0, failure_ttl: float | Callable[[errors.MediasiteError], float] = 0.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = lookup()
        if result is not None:
            return result
        flight = claim(key, lease=lease)
        if flight is not None:
            return _compute_as_owner(flight, lookup, compute, failure_ttl)
        try:
            return wait(key, lookup=lookup, timeout=max(0.0, deadline - time.monotonic()))
        except errors.FlightAbandoned:
            continue  # the owner died: the next claim decides who takes over


def _compute_as_owner(flight: Flight, lookup, compute, failure_ttl):
    try:
        result = lookup()  # a previous owner may have finished between our lookup and claim
        if result is None:
            result = compute()
    except errors.MediasiteError as exc:
        publish_failure(flight, exc, ttl=failure_ttl(exc) if callable(failure_ttl) else failure_ttl)
        raise
    except BaseException:
        # An unexpected error is this process's to log; waiters get the same 500 it answers.
        publish_failure(flight, errors.InternalError(), ttl=0.0)
        raise
    publish_done(flight)
    return result


# --- failures travel as their code, message and extra attributes ------------------------------

def _error_payload(error: errors.MediasiteError) -> dict:
    extra = {}
    for name, value in vars(error).items():
        if name in ("message", "headers"):
            continue
        try:
            json.dumps(value)
        except TypeError:
            continue
        extra[name] = value
    return {"code": error.code, "message": error.message, "headers": error.headers, "extra": extra}


def _error_from_payload(payload: dict) -> errors.MediasiteError:
    cls = next((c for c in errors.error_classes() if c.code == payload.get("code")), errors.InternalError)
    # Built without the subclass's __init__, whose arguments vary: the state travels instead.
    error = cls.__new__(cls)
    errors.MediasiteError.__init__(error, payload.get("message"), headers=payload.get("headers") or {})
    for name, value in (payload.get("extra") or {}).items():
        setattr(error, name, value)
    return error


# --- backends -----------------------------------------------------------------------------------

def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Backend(abc.ABC):
    """What each deployment's backend provides; one subclass per deployment below."""

    # Whether a claim ends by itself after its lease (else with the owner's connection or process).
    leases_expire = False
    # What the backend's client raises when its server cannot be reached.
    unreachable: tuple[type[BaseException], ...] = ()

    @abc.abstractmethod
    def claim(self, key: str, lease: float) -> Flight | None:
        """Own the flight for `key`, or None if a live owner has it; raise a cached failure."""

    @abc.abstractmethod
    def renew(self, flight: Flight, lease: float) -> None:
        """Extend the owner's lease."""

    @abc.abstractmethod
    def end(self, flight: Flight, failure: dict | None, ttl: float) -> None:
        """End the flight, recording `failure` (cached `ttl` seconds), and wake the waiters."""

    @abc.abstractmethod
    def owner_alive(self, key: str) -> bool:
        """Whether some process still owns the flight for `key`."""

    @abc.abstractmethod
    def cached_failure(self, key: str) -> dict | None:
        """The failure recorded for `key` while it is visible, else None."""

    @abc.abstractmethod
    def waiter(self, key: str):
        """A waiter woken when the flight for `key` ends."""


class _Waiter:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass


class RedisBackend(Backend):
    leases_expire = True

    # Claim: refused while a failure is cached; a new flight clears the previous one's failure.
    _CLAIM = """
    local cached = redis.call('GET', KEYS[3])
    if cached then return {2, cached} end
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
        redis.call('DEL', KEYS[2])
        return {1}
    end
    return {0}
    """
    _RENEW = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
    """
    # End: the failure first, then the owner key, then the wake-up, in one step, so a woken
    # waiter always finds the owner gone and the failure (if any) in place. An owner whose lease
    # lapsed and whose flight another owner has since claimed ends nothing: the flight, its
    # failure and its waiters are the new owner's.
    _END = """
    local holder = redis.call('GET', KEYS[1])
    if holder and holder ~= ARGV[1] then return 0 end
    if ARGV[2] ~= '' then
        redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
        if tonumber(ARGV[4]) > 0 then redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4]) end
    end
    if holder then redis.call('DEL', KEYS[1]) end
    redis.call('PUBLISH', ARGV[5], 'end')
    return 1
    """

    def __init__(self, url: str):
        import redis

        self.unreachable = (redis.ConnectionError, redis.TimeoutError)
        self.client = client = redis.Redis.from_url(url)
        self._claim = client.register_script(self._CLAIM)
        self._renew = client.register_script(self._RENEW)
        self._end = client.register_script(self._END)

    @staticmethod
    def _keys(key: str) -> tuple[str, str, str, str]:
        base = f"mediasite:flight:{_digest(key)}"
        return f"{base}:owner", f"{base}:failure", f"{base}:cached", f"{base}:channel"

    def claim(self, key, lease):
        owner, failure, cached, _ = self._keys(key)
        token = secrets.token_hex(16)
        answer = self._claim(keys=[owner, failure, cached], args=[token, max(1, int(lease * 1000))])
        if answer[0] == 2:
            raise _error_from_payload(json.loads(answer[1]))
        return Flight(key, token, self) if answer[0] == 1 else None

    def renew(self, flight, lease):
        self._renew(keys=[self._keys(flight.key)[0]], args=[flight.token, max(1, int(lease * 1000))])

    def end(self, flight, failure, ttl):
        owner, failure_key, cached, channel = self._keys(flight.key)
        payload = json.dumps(failure) if failure is not None else ""
        visible_ms = int(max(ttl, FAILURE_VISIBLE_SECONDS) * 1000)
        self._end(keys=[owner, failure_key, cached],
                  args=[flight.token, payload, visible_ms, int(ttl * 1000), channel])

    def owner_alive(self, key):
        return bool(self.client.exists(self._keys(key)[0]))

    def cached_failure(self, key):
        raw = self.client.get(self._keys(key)[2])
        return json.loads(raw) if raw else None

    def waiter(self, key):
        return _RedisWaiter(self, key)


class _RedisWaiter(_Waiter):
    def __init__(self, backend: RedisBackend, key: str):
        self.backend, self.key = backend, key
        self.owner, self.failure_key, _, channel = backend._keys(key)
        # Subscribed (confirmed by the server) before the first lookup, so an end published
        # after that lookup cannot be missed.
        self.pubsub = backend.client.pubsub()
        self.pubsub.subscribe(channel)
        deadline = time.monotonic() + 5
        while (message := self.pubsub.get_message(timeout=1)) is None or message["type"] != "subscribe":
            if time.monotonic() > deadline:
                break  # the periodic re-check still finds the result

    def owner_alive(self):
        return bool(self.backend.client.exists(self.owner))

    def failure(self):
        raw = self.backend.client.get(self.failure_key)
        return json.loads(raw) if raw else None

    def sleep(self, remaining):
        self.pubsub.get_message(ignore_subscribe_messages=True, timeout=min(remaining, RECHECK_SECONDS))

    def close(self):
        self.pubsub.close()


_inherited_connections: list = []


class PostgresBackend(Backend):
    """Advisory lock for ownership, LISTEN/NOTIFY for the wake-up, a table for failures."""

    def __init__(self, alias: str = "default"):
        self.alias = alias
        self._local = threading.local()
        self._opened: list = []

    def _connect(self):
        """This thread's flight connection, opened once and kept.

        A connection of its own: the caller's transaction must not hold back or roll back the
        flight's state, and the lock must end with the owner's process. Kept, because opening
        one per claim and per wait costs more than the wait itself when a crowd arrives.
        """
        import psycopg

        conn, pid = getattr(self._local, "conn", None), getattr(self._local, "pid", None)
        if pid is not None and pid != os.getpid():
            # Inherited through fork(): the socket is the parent's. Closing it would end the
            # parent's session, so it is only set aside.
            _inherited_connections.append(conn)
            conn = None
        if conn is None or conn.closed or conn.broken:
            params = connections[self.alias].get_connection_params()
            conn = self._local.conn = psycopg.connect(**params, autocommit=True)
            self._local.pid = os.getpid()
            self._opened = [(p, c) for p, c in self._opened if not c.closed] + [(os.getpid(), conn)]
        return conn

    def close_connections(self) -> None:
        """Close the flight connections this process opened (before dropping its database, say);
        threads open new ones when they next need them."""
        opened, self._opened = self._opened, []
        for pid, conn in opened:
            if pid == os.getpid():
                conn.close()

    @staticmethod
    def _lock_id(key: str) -> int:
        return int.from_bytes(hashlib.sha256(b"flight:" + key.encode()).digest()[:8], "big", signed=True)

    @staticmethod
    def _channel(key: str) -> str:
        return "mediasite_flight_" + _digest(key)[:40]

    @staticmethod
    def _table() -> str:
        from .models import FlightFailure

        return FlightFailure._meta.db_table

    def _failure_row(self, conn, key: str, *, cached_only: bool) -> dict | None:
        condition = "cached_until > now()" if cached_only else "visible_until > now()"
        row = conn.execute(
            f"SELECT payload FROM {self._table()} WHERE key = %s AND {condition}", [_digest(key)]
        ).fetchone()
        if row is None:
            return None
        return row[0] if isinstance(row[0], dict) else json.loads(row[0])

    def _on_live_connection(self, work):
        """work(conn) on this thread's connection; once more on a new one if the kept connection
        turns out to have died while idle (a server restart, an idle timeout)."""
        import psycopg

        conn = self._connect()
        try:
            return work(conn)
        except psycopg.OperationalError:
            if not conn.broken:
                raise
            return work(self._connect())

    def claim(self, key, lease):
        return self._on_live_connection(lambda conn: self._claim_on(conn, key))

    def _claim_on(self, conn, key):
        lock_id = self._lock_id(key)
        held = self._held(conn)
        # Advisory locks nest within a session: a second claim from this thread must be refused
        # here, as it is by the other backends.
        if lock_id in held or not conn.execute("SELECT pg_try_advisory_lock(%s)", [lock_id]).fetchone()[0]:
            return None
        held.add(lock_id)
        try:
            # Read under the lock: a failure published by the owner we just replaced counts.
            cached = self._failure_row(conn, key, cached_only=True)
            if cached is not None:
                raise _error_from_payload(cached)
            conn.execute(f"DELETE FROM {self._table()} WHERE key = %s", [_digest(key)])
        except BaseException:
            self._unlock(conn, lock_id)
            raise
        return Flight(key, secrets.token_hex(16), self, handle=conn)

    _held_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _held(self, conn) -> set:
        """The advisory locks of the flights this session owns."""
        return self._held_locks.setdefault(conn, set())

    def _unlock(self, conn, lock_id: int) -> None:
        self._held(conn).discard(lock_id)
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
        except Exception:
            conn.close()  # the session ends, and the lock with it
            raise

    def renew(self, flight, lease):
        pass  # the lock lives as long as the owner's connection

    def end(self, flight, failure, ttl):
        conn = flight.handle
        lock_id = self._lock_id(flight.key)
        try:
            if failure is not None:
                table = self._table()
                conn.execute(f"DELETE FROM {table} WHERE visible_until < now()")
                conn.execute(
                    f"INSERT INTO {table} (key, payload, cached_until, visible_until) "
                    "VALUES (%s, %s, now() + %s * interval '1 second', now() + %s * interval '1 second') "
                    "ON CONFLICT (key) DO UPDATE SET payload = EXCLUDED.payload, "
                    "cached_until = EXCLUDED.cached_until, visible_until = EXCLUDED.visible_until",
                    [_digest(flight.key), json.dumps(failure), ttl, max(ttl, FAILURE_VISIBLE_SECONDS)],
                )
        finally:
            # Unlocked before the wake-up: a woken waiter must find the owner gone.
            self._unlock(conn, lock_id)
        conn.execute("SELECT pg_notify(%s, 'end')", [self._channel(flight.key)])

    def _owner_alive_on(self, conn, key) -> bool:
        unsigned = self._lock_id(key) & 0xFFFF_FFFF_FFFF_FFFF
        return conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)",
            [unsigned >> 32, unsigned & 0xFFFF_FFFF],
        ).fetchone()[0]

    def owner_alive(self, key):
        return self._on_live_connection(lambda conn: self._owner_alive_on(conn, key))

    def cached_failure(self, key):
        return self._on_live_connection(lambda conn: self._failure_row(conn, key, cached_only=True))

    def waiter(self, key):
        return _PostgresWaiter(self, key)


class _PostgresWaiter(_Waiter):
    def __init__(self, backend: PostgresBackend, key: str):
        from psycopg import sql

        self.backend, self.key = backend, key
        self.channel = sql.Identifier(backend._channel(key))
        self.conn = backend._on_live_connection(self._listen)

    def _listen(self, conn):
        from psycopg import sql

        conn.execute(sql.SQL("LISTEN {}").format(self.channel))
        return conn

    def owner_alive(self):
        return self.backend._owner_alive_on(self.conn, self.key)

    def failure(self):
        return self.backend._failure_row(self.conn, self.key, cached_only=False)

    def sleep(self, remaining):
        # A stray wake-up from an earlier wait on this connection only causes an early re-check.
        for _ in self.conn.notifies(timeout=min(remaining, RECHECK_SECONDS), stop_after=1):
            pass

    def close(self):
        from psycopg import sql

        if not self.conn.closed:
            self.conn.execute(sql.SQL("UNLISTEN {}").format(self.channel))


class FileBackend(Backend):
    """flock() on a file per key in a directory: one machine, any number of processes."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def _paths(self, key: str) -> tuple[Path, Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = _digest(key)[:40]
        return self.directory / f"{name}.lock", self.directory / f"{name}.failure"

    @staticmethod
    def _read_failure(path: Path, field: str) -> dict | None:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record["payload"] if record.get(field, 0) > time.time() else None

    def claim(self, key, lease):
        lock_path, failure_path = self._paths(key)
        # A waiter's probe holds a shared lock for microseconds; an owner holds it for the whole
        # work. Refused for longer than FILE_CLAIM_PATIENCE_SECONDS means an owner.
        deadline = time.monotonic() + FILE_CLAIM_PATIENCE_SECONDS
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.0002)
                continue
            if self._still_at(fd, lock_path):
                break
            os.close(fd)  # the sweep removed this file between our open and our lock: anew
        # Read under the lock: a failure published by the owner we just replaced counts.
        cached = self._read_failure(failure_path, "cached_until")
        if cached is not None:
            os.close(fd)  # closing releases the lock
            raise _error_from_payload(cached)
        failure_path.unlink(missing_ok=True)  # a new flight: the previous one's failure is over
        return Flight(key, secrets.token_hex(16), self, handle=fd)

    def renew(self, flight, lease):
        pass  # the lock lives as long as the owner's process

    def end(self, flight, failure, ttl):
        lock_path, failure_path = self._paths(flight.key)
        try:
            if failure is not None:
                now = time.time()
                record = {"payload": failure, "cached_until": now + ttl,
                          "visible_until": now + max(ttl, FAILURE_VISIBLE_SECONDS)}
                # Written whole under another name, then renamed: readers never see half of it.
                fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".failure-")
                try:
                    with os.fdopen(fd, "w") as fh:
                        json.dump(record, fh)
                    os.replace(tmp, failure_path)
                except OSError:
                    # A full disk must not leave the half-written record behind. Unrecorded, the
                    # failure reaches waiters as an abandoned flight, and the next request retries.
                    os.unlink(tmp)
                    logger.warning("Could not record a failed flight (%s)", failure.get("code"))
        finally:
            try:
                self._count_end(flight.handle)
            finally:
                fcntl.flock(flight.handle, fcntl.LOCK_UN)
                os.close(flight.handle)

    @staticmethod
    def _still_at(fd: int, path: Path) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            return False

    def sweep(self, *, idle_seconds: float = FILE_IDLE_SECONDS) -> int:
        """Remove the files of keys no flight has used for `idle_seconds` (a lock file's mtime
        moves at each flight's end) and whose failure is no longer visible; returns how many
        keys. Each lock file is removed while holding its lock, and a claim checks, once it has
        the lock, that its file is still the one at the path (else it claims anew): an owner
        never works on a removed file. A waiter holding a removed one still finds the result
        by its lookups, which it makes every RECHECK_SECONDS."""
        removed, now = 0, time.time()
        try:
            paths = list(self.directory.iterdir())
        except FileNotFoundError:
            return 0
        for path in paths:
            if path.name.startswith(".failure-"):  # a write cut short by a crash
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > idle_seconds:
                        path.unlink()
                continue
            if path.suffix != ".lock":
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # an owner is at work
                failure_path = path.with_suffix(".failure")
                if now - os.fstat(fd).st_mtime < idle_seconds or self._read_failure(failure_path, "visible_until"):
                    continue
                failure_path.unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                removed += 1
            finally:
                os.close(fd)  # releases the lock
        return removed

    # The lock file holds the number of flights ended on it, bumped by each owner under its lock:
    # a waiter sees an end happen even when the whole flight began and ended between two of
    # its probes (a queued task that has not started when the waiter looks has no lock to probe).
    @staticmethod
    def _ends(fd: int) -> int:
        return int.from_bytes(os.pread(fd, 8, 0), "little")

    def _count_end(self, fd: int) -> None:
        os.pwrite(fd, ((self._ends(fd) + 1) % (1 << 64)).to_bytes(8, "little"), 0)

    def owner_alive(self, key):
        try:
            fd = os.open(self._paths(key)[0], os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            return self._locked(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _locked(fd: int) -> bool:
        try:
            # A shared lock is refused while the owner holds its exclusive one.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    def cached_failure(self, key):
        return self._read_failure(self._paths(key)[1], "cached_until")

    def waiter(self, key):
        return _FileWaiter(self, key)


class _FileWaiter(_Waiter):
    def __init__(self, backend: FileBackend, key: str):
        self.backend, self.key = backend, key
        lock_path, self.failure_path = backend._paths(key)
        self.fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o600)
        self.ends_seen = backend._ends(self.fd)  # before the caller's first lookup
        self.saw_owner = False  # at the last probe

    def owner_alive(self):
        self.saw_owner = self.backend._locked(self.fd)
        return self.saw_owner

    def failure(self):
        return self.backend._read_failure(self.failure_path, "visible_until")

    def sleep(self, remaining):
        # Probing costs system calls, a lookup costs a query: probe, and return for a lookup
        # when a flight has ended, when an owner seen holding the lock lets go without ending
        # (it died), or every RECHECK_SECONDS, to be safe. With no owner yet (a queued task),
        # this waits for one to come and go, rather than looking up in a loop.
        until = time.monotonic() + min(remaining, RECHECK_SECONDS)
        while True:
            ends = self.backend._ends(self.fd)
            if ends != self.ends_seen:
                self.ends_seen = ends
                return
            held_before = self.saw_owner  # counting the caller's own probe just before
            if not self.owner_alive() and held_before:
                return
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, FILE_POLL_SECONDS))

    def close(self):
        os.close(self.fd)


def sweep_idle_files() -> int:
    """With the file backend (the embedded default), remove the files of keys idle for a day
    (FileBackend.sweep); the other backends' entries expire by themselves. Returns how many."""
    chosen = backend()
    return chosen.sweep() if isinstance(chosen, FileBackend) else 0


def backend() -> Backend:
    """The backend for this deployment: Redis if configured, else PostgreSQL, else file locks."""
    redis_url = getattr(settings, "REDIS_URL", "")
    if redis_url:
        return _redis_backend(redis_url)
    if connections["default"].vendor == "postgresql":
        global _postgres_backend
        if _postgres_backend is None:
            _postgres_backend = PostgresBackend()
        return _postgres_backend
    return FileBackend(Path(media_settings.DATA_DIR) / "flights")


_redis_backends: dict[str, RedisBackend] = {}
_postgres_backend: PostgresBackend | None = None


def _redis_backend(url: str) -> RedisBackend:
    found = _redis_backends.get(url)
    if found is None:
        found = _redis_backends[url] = RedisBackend(url)
    return found
