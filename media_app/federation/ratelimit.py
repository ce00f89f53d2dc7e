"""Rate limits on remote media, in one place (the `limits` library; Redis when REDIS_URL is
set, so every process and machine shares the counts, process memory otherwise).

- Per requesting user: bytes of remote media pulled in per window (checked before a fetch
  starts, charged with the real size once it is cached).
- Per origin server: remote fetches in flight at once. `limits` counts events in windows, not
  concurrency, so this one is a Redis sorted set of flight IDs scored by expiry (a crashed worker's
  slot frees itself), or a dict in process memory.

A Redis outage: the byte counts let requests through (logged), as the upload limits do; a slot
cannot be taken (503 COORDINATION_UNAVAILABLE), and one that cannot be given back frees itself
when its expiry passes. A fetch already made is never failed for its bookkeeping.
"""
import logging
import math
import threading
import time
import uuid

from django.conf import settings
from limits import RateLimitItemPerSecond
from limits.strategies import FixedWindowRateLimiter

from .. import errors, ratelimit
from ..conf import media_settings

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_limiter: FixedWindowRateLimiter | None = None
_local_slots: dict[str, dict[str, float]] = {}


def _redis_url() -> str:
    return getattr(settings, "REDIS_URL", "") or ""


def limiter() -> FixedWindowRateLimiter:
    global _limiter
    if _limiter is None:
        with _lock:
            if _limiter is None:
                _limiter = FixedWindowRateLimiter(ratelimit.counter_storage())
    return _limiter


def _bytes_item() -> RateLimitItemPerSecond:
    return RateLimitItemPerSecond(media_settings.REMOTE_DOWNLOAD_BYTES_PER_USER,
                                  media_settings.REMOTE_DOWNLOAD_WINDOW_SECONDS)


def _user_key(user) -> str:
    return str(user.pk) if user is not None and getattr(user, "pk", None) else "anonymous"


def check_user_bytes(user) -> None:
    """429 when the user has used up this window's remote bytes."""
    item = _bytes_item()
    try:
        if limiter().test(item, "remote-bytes", _user_key(user)):
            return
        reset_at = limiter().get_window_stats(item, "remote-bytes", _user_key(user)).reset_time
    except Exception:  # the counter store is down
        logger.warning("Remote-byte limit storage unavailable; request allowed", exc_info=True)
        return
    raise errors.RateLimited("Too much remote media requested; try again later",
                             retry_after_ms=max(1000, math.ceil((reset_at - time.time()) * 1000)))


def charge_user_bytes(user, size: int) -> None:
    if size <= 0:
        return
    try:
        limiter().hit(_bytes_item(), "remote-bytes", _user_key(user), cost=size)
    except Exception:  # the counter store is down: the bytes are fetched and stored all the same
        logger.warning("Remote-byte limit storage unavailable; %s bytes not counted", size, exc_info=True)


def _origin_key(origin: str) -> str:
    # Host names are case-insensitive: `Origin.Example` is the same server as `origin.example`,
    # and must not get slots of its own. (An explicit port is kept: it can change where
    # discovery leads.)
    return origin.lower()


def acquire_origin_slot(origin: str, *, hold_seconds: float) -> str:
    """A flight ID holding one of the origin's concurrent-fetch slots, or 429."""
    origin = _origin_key(origin)
    flight = uuid.uuid4().hex
    now = time.time()
    cap = media_settings.REMOTE_FETCHES_PER_ORIGIN
    url = _redis_url()
    if url:
        import redis

        client = _redis(url)
        key = f"mediasite:fed:origin-slots:{origin}"
        pipe = client.pipeline()
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {flight: now + hold_seconds})
        pipe.zcard(key)
        pipe.expire(key, int(hold_seconds) + 60)
        try:
            count = pipe.execute()[2]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("Origin fetch slots unavailable: %s", exc)
            raise errors.CoordinationUnavailable() from exc
        if count > cap:
            client.zrem(key, flight)
            raise errors.RateLimited("Too many fetches from this server in progress", retry_after_ms=1000)
        return flight
    with _lock:
        slots = _local_slots.setdefault(origin, {})
        for other, expiry in list(slots.items()):
            if expiry < now:
                del slots[other]
        if len(slots) >= cap:
            raise errors.RateLimited("Too many fetches from this server in progress", retry_after_ms=1000)
        slots[flight] = now + hold_seconds
    return flight


def release_origin_slot(origin: str, flight: str) -> None:
    origin = _origin_key(origin)
    url = _redis_url()
    if url:
        try:
            _redis(url).zrem(f"mediasite:fed:origin-slots:{origin}", flight)
        except Exception:  # it frees itself when its expiry passes
            logger.warning("Could not release an origin fetch slot of %s", origin, exc_info=True)
        return
    with _lock:
        _local_slots.get(origin, {}).pop(flight, None)


_redis_clients: dict = {}


def _redis(url: str):
    import redis

    client = _redis_clients.get(url)
    if client is None:
        client = _redis_clients[url] = redis.Redis.from_url(url)
    return client
