"""media_app.singleflight on each backend: one owner, waiters released by its end, its failure
passed on, failures cached for their ttl, timeouts, and a crashed owner's flight freed.

Owners and waiters run in threads (each takes its own connection or file descriptor, so they
contend exactly as processes do) and, for the crash, in a forked process killed with SIGKILL.
"""
import fcntl
import multiprocessing
import os
import signal
import threading
import time
import uuid

import pytest
from django.conf import settings
from django.db import connection

from media_app import errors, singleflight
from tests.conftest import require_service

BACKENDS = ["file", "postgresql", "redis"]


@pytest.fixture(params=BACKENDS)
def flights(request, db, tmp_path, monkeypatch):
    """The module's API bound to one backend."""
    if request.param == "redis":
        require_service("Redis", bool(getattr(settings, "REDIS_URL", "")), "set REDIS_URL")
        chosen = singleflight.RedisBackend(settings.REDIS_URL)
    elif request.param == "postgresql":
        require_service("PostgreSQL", connection.vendor == "postgresql", "set DATABASE_URL")
        chosen = singleflight.PostgresBackend()
    else:
        chosen = singleflight.FileBackend(tmp_path / "flights")
    monkeypatch.setattr(singleflight, "backend", lambda: chosen)
    yield singleflight
    if isinstance(chosen, singleflight.PostgresBackend):
        chosen.close_connections()


@pytest.fixture
def key():
    return f"test:{uuid.uuid4()}"


def in_threads(n, target):
    """Run target() in n threads started together; returns each one's result or exception."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            results[i] = target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_only_one_claim_wins_until_the_flight_ends(flights, key):
    claims = in_threads(6, lambda: flights.claim(key))
    owners = [c for c in claims if isinstance(c, singleflight.Flight)]
    assert len(owners) == 1 and claims.count(None) == 5
    assert flights.in_flight(key)
    flights.publish_done(owners[0])
    assert not flights.in_flight(key)
    again = flights.claim(key)
    assert again is not None
    flights.publish_done(again)


def test_run_once_computes_once_for_concurrent_callers(flights, key):
    store, computed = {}, []

    def compute():
        computed.append(1)
        time.sleep(0.3)  # long enough that every other caller arrives while it runs
        store["result"] = "rendered"
        return "rendered"

    results = in_threads(8, lambda: flights.run_once(key, lookup=lambda: store.get("result"),
                                                     compute=compute, timeout=10))
    assert results == ["rendered"] * 8
    assert len(computed) == 1


def test_waiters_get_the_result_when_the_owner_publishes_it(flights, key):
    store = {}
    flight = flights.claim(key)
    waiting = []

    def waiter():
        waiting.append(1)
        return flights.wait(key, lookup=lambda: store.get("result"), timeout=10)

    threads_done = []
    t = threading.Thread(target=lambda: threads_done.append(in_threads(5, waiter)))
    t.start()
    while len(waiting) < 5:
        time.sleep(0.01)
    store["result"] = 42
    flights.publish_done(flight)
    t.join(10)
    assert threads_done == [[42] * 5]


def test_owner_failure_reaches_every_waiter_as_the_same_error(flights, key):
    flight = flights.claim(key)
    waiting = []

    def waiter():
        waiting.append(1)
        return flights.wait(key, lookup=lambda: None, timeout=10)

    out = []
    t = threading.Thread(target=lambda: out.append(in_threads(4, waiter)))
    t.start()
    while len(waiting) < 4:
        time.sleep(0.01)
    time.sleep(0.05)
    flights.publish_failure(flight, errors.RateLimited("origin says slow down", retry_after_ms=7000))
    t.join(10)
    for exc in out[0]:
        assert isinstance(exc, errors.RateLimited)
        assert (exc.code, exc.status, exc.message) == ("RATE_LIMITED", 429, "origin says slow down")
        assert exc.retry_after_ms == 7000 and exc.headers == {"Retry-After": "7"}
        assert exc.as_dict()["retry_after_ms"] == 7000


def test_failure_in_compute_is_raised_by_owner_and_waiters(flights, key):
    def compute():
        time.sleep(0.3)
        raise errors.MediaTooManyPixels()

    results = in_threads(5, lambda: flights.run_once(key, lookup=lambda: None, compute=compute, timeout=10))
    assert all(isinstance(r, errors.MediaTooManyPixels) for r in results), results


def test_unexpected_owner_error_reaches_waiters_as_internal_error(flights, key):
    lookups = []
    everyone_waits = threading.Event()

    def lookup():
        # The owner looks twice (before and after its claim), each waiter twice (before its
        # claim and inside wait): after 8 lookups the other three are surely waiting.
        lookups.append(1)
        if len(lookups) >= 8:
            everyone_waits.set()

    def compute():
        everyone_waits.wait(10)
        raise OSError("disk on fire")

    results = in_threads(4, lambda: flights.run_once(key, lookup=lookup, compute=compute, timeout=10))
    assert sum(isinstance(r, OSError) for r in results) == 1
    assert sum(isinstance(r, errors.InternalError) for r in results) == 3


def test_failure_is_cached_for_its_ttl_then_forgotten(flights, key):
    flights.publish_failure(flights.claim(key), errors.RemoteFetchFailed(), ttl=1.0)
    with pytest.raises(errors.RemoteFetchFailed):
        flights.claim(key)
    with pytest.raises(errors.RemoteFetchFailed):
        flights.raise_if_failed(key)
    time.sleep(1.2)
    flights.raise_if_failed(key)
    flight = flights.claim(key)
    assert flight is not None
    flights.publish_done(flight)


def test_failure_without_ttl_does_not_block_the_next_claim(flights, key):
    flights.publish_failure(flights.claim(key), errors.RemoteFetchFailed(), ttl=0)
    flights.raise_if_failed(key)
    flight = flights.claim(key)
    assert flight is not None
    flights.publish_done(flight)


def test_wait_honours_its_timeout(flights, key):
    flight = flights.claim(key)
    started = time.monotonic()
    with pytest.raises(errors.FlightTimedOut):
        flights.wait(key, lookup=lambda: None, timeout=0.3)
    assert time.monotonic() - started >= 0.3
    flights.publish_done(flight)


def test_queued_wait_outlasts_an_owner_that_has_not_started(flights, key):
    """A request waiting for a queued task: no owner yet is not abandonment."""
    store = {}

    def task():
        time.sleep(0.3)
        flight = flights.claim(key)
        if flight is not None:  # otherwise the waiter times out and the test fails
            store["result"] = "fetched"
            flights.publish_done(flight)

    threading.Thread(target=task).start()
    assert flights.wait(key, lookup=lambda: store.get("result"), timeout=10, queued=True) == "fetched"
    with pytest.raises(errors.FlightTimedOut):
        flights.wait(f"{key}:never", lookup=lambda: None, timeout=0.3, queued=True)


def test_without_an_owner_a_plain_wait_says_abandoned(flights, key):
    with pytest.raises(errors.FlightAbandoned):
        flights.wait(key, lookup=lambda: None, timeout=5)


def _claim_and_hang(chosen, key, ready):
    flight = chosen.claim(key, lease=0.5)
    ready.send(flight is not None)
    time.sleep(600)


def test_a_killed_owner_frees_the_flight_and_a_waiter_takes_over(flights, key):
    chosen = singleflight.backend()
    parent_end, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_claim_and_hang, args=(chosen, key, child_end))
    child.start()
    try:
        assert parent_end.recv() is True
        assert flights.claim(key) is None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        with pytest.raises(errors.FlightAbandoned):
            flights.wait(key, lookup=lambda: None, timeout=10)
        computed = []
        result = flights.run_once(key, lookup=lambda: None, compute=lambda: computed.append(1) or "mine", timeout=10)
        assert result == "mine" and computed == [1]
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)


def _claim_renewed_and_hang(key, ready):
    flight = singleflight.claim(key, lease=0.6, renew_for=60)  # the backend the test bound
    ready.send(flight is not None)
    time.sleep(600)


def test_a_renewed_lease_keeps_a_live_owner_and_frees_a_killed_ones_flight_within_the_lease(flights, key):
    parent_end, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_claim_renewed_and_hang, args=(key, child_end))
    child.start()
    try:
        assert parent_end.recv() is True
        time.sleep(2.0)  # more than three leases
        assert flights.claim(key) is None  # still its owner's
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        started = time.monotonic()
        with pytest.raises(errors.FlightAbandoned):
            flights.wait(key, lookup=lambda: None, timeout=10)
        assert time.monotonic() - started < 3.0  # within a lease and a re-check or two, not its renew_for
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)


def _renewing(key: str) -> bool:
    return any(t.name == f"flight-lease:{key}" and t.is_alive() for t in threading.enumerate())


def test_a_lease_is_renewed_no_longer_than_asked_and_its_renewal_stops_with_the_flight(key, monkeypatch):
    require_service("Redis", bool(getattr(settings, "REDIS_URL", "")), "set REDIS_URL")
    redis = singleflight.RedisBackend(settings.REDIS_URL)
    monkeypatch.setattr(singleflight, "backend", lambda: redis)
    singleflight.claim(key, lease=0.6, renew_for=1.2)
    time.sleep(1.0)
    assert redis.owner_alive(key)  # past its lease: renewed
    time.sleep(1.5)
    assert not redis.owner_alive(key)  # renewed for 1.2 s only, then left to expire
    assert not _renewing(key)
    other = f"{key}:other"
    flight = singleflight.claim(other, lease=0.6, renew_for=60)
    assert _renewing(other)
    singleflight.publish_done(flight)
    time.sleep(0.1)  # less than a renewal period: the end wakes the thread
    assert not _renewing(other)


def test_an_owner_whose_lease_lapsed_does_not_end_its_successors_flight(key):
    require_service("Redis", bool(getattr(settings, "REDIS_URL", "")), "set REDIS_URL")
    redis = singleflight.RedisBackend(settings.REDIS_URL)
    stale = redis.claim(key, 0.2)
    time.sleep(0.4)
    successor = redis.claim(key, 30)
    assert successor is not None
    singleflight.publish_failure(stale, errors.RemoteFetchFailed(), ttl=60)
    assert redis.owner_alive(key)  # still the successor's
    assert redis.cached_failure(key) is None
    singleflight.publish_done(successor)
    assert not redis.owner_alive(key)


def test_postgres_flight_connection_that_died_idle_is_replaced(db, key):
    require_service("PostgreSQL", connection.vendor == "postgresql", "set DATABASE_URL")
    chosen = singleflight.PostgresBackend()
    try:
        kept = chosen._connect()
        with connection.cursor() as cursor:  # an idle timeout or a server restart, in effect
            cursor.execute("SELECT pg_terminate_backend(%s)", [kept.info.backend_pid])
        flight = chosen.claim(key, 60)
        assert flight is not None and flight.handle is not kept
        assert chosen.owner_alive(key)
        flight.backend.end(flight, None, 0)
        assert not chosen.owner_alive(key)
    finally:
        chosen.close_connections()


def test_the_file_backend_sweeps_idle_keys_files_and_a_claim_never_works_on_a_swept_file(tmp_path, monkeypatch):
    """One lock file per key ever flown would stay for good: the sweep removes those idle for
    FILE_IDLE_SECONDS, not one an owner holds nor one whose failure is still visible, and an
    owner that locked a file the sweep removed meanwhile claims anew on the file at the path."""
    chosen = singleflight.FileBackend(tmp_path / "flights")
    idle, held, failed = "test:idle", "test:held", "test:failed"
    for key in (idle, failed):
        chosen.end(chosen.claim(key, 60), None, 0)
    chosen.end(chosen.claim(failed, 60), singleflight._error_payload(errors.RemoteFetchFailed()), 0)
    owner = chosen.claim(held, 60)
    files = {key: chosen._paths(key)[0] for key in (idle, held, failed)}
    assert chosen.sweep(idle_seconds=3600) == 0  # all of them young
    old = time.time() - 7200
    for path in files.values():
        os.utime(path, (old, old))
    assert chosen.sweep(idle_seconds=3600) == 1
    assert not files[idle].exists() and files[held].exists() and files[failed].exists()
    chosen.end(owner, None, 0)

    # A claimer that opened the file and got its lock only after the sweep removed it.
    real_flock, raced = fcntl.flock, []

    def flock_after_a_sweep(fd, operation):
        if operation == fcntl.LOCK_EX | fcntl.LOCK_NB and not raced:
            raced.append(fd)
            files[held].unlink()  # what the sweep does, between this claimer's open and its lock
        return real_flock(fd, operation)

    monkeypatch.setattr(singleflight.fcntl, "flock", flock_after_a_sweep)
    flight = chosen.claim(held, 60)
    monkeypatch.setattr(singleflight.fcntl, "flock", real_flock)
    assert flight is not None and raced
    assert os.fstat(flight.handle).st_ino == os.stat(files[held]).st_ino  # the file at the path
    assert chosen.claim(held, 60) is None  # and it is held: a second claimer is refused
    chosen.end(flight, None, 0)
