"""Rate limits for every part of Mediasite (uploads here; federation and moderation reuse it).

A rule is a `limits` rate string ("600/minute", "10/second;100/hour"); an empty rule is no
limit. Counters live in Redis when REDIS_URL is set, so every web process and node shares them,
and in process memory otherwise (the embedded default: one machine, counters per process).
The moving-window strategy counts exactly the hits of the last window, so a burst at a window
boundary cannot double the rate.

    from media_app import ratelimit
    ratelimit.hit(rule=media_settings.UPLOAD_RATE_PER_USER, scope="upload-user", key=str(user.pk))

`hit` raises errors.RateLimited (429 M_LIMIT_EXCEEDED with Retry-After) when over the limit.
"""
import bisect
import functools
import ipaddress
import logging
import threading
import time

from django.conf import settings
from django.core.signals import setting_changed
from limits import parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from . import errors
from .conf import media_settings

logger = logging.getLogger(__name__)

# Keys are namespaced per Mediasite deployment (its server name) inside a shared Redis.
_PREFIX = "mediasite"


_build_lock = threading.Lock()


class SweptMemoryStorage(MemoryStorage):
    """`limits`' in-process counters, with what has expired swept by the hits themselves at
    most once every SWEEP_SECONDS instead of by a timer thread.

    MemoryStorage starts a new 10 ms threading.Timer on a hit whenever the last one has run
    out, so under steady traffic nearly every hit starts a thread, and Thread.start waits until
    the new thread has run: while another thread of the process is busy in Python, up to two
    GIL switch intervals per hit (docs/PERFORMANCE.md, "Rate limits"). The sweep only bounds
    memory (every read already ignores what has expired): it removes the keys, and their locks,
    of every client no longer counted, where MemoryStorage's own keeps an empty list for each.
    """

    SWEEP_SECONDS = 10.0

    def __init__(self, uri: str = "memory://", **options):
        super().__init__(uri, **options)
        self.timer.cancel()  # the one __init__ starts
        self._sweep_lock = threading.Lock()
        self._next_sweep = time.monotonic() + self.SWEEP_SECONDS

    # MemoryStorage calls this (a name-mangled private method; `limits` is pinned, and
    # tests/security/test_quotas.py fails if a hit starts a thread again) before each hit.
    def _MemoryStorage__schedule_expiry(self) -> None:
        if time.monotonic() < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = time.monotonic() + self.SWEEP_SECONDS
            self._sweep(time.time())
        except Exception:  # never the hit's failure: the next sweep comes in SWEEP_SECONDS
            logger.warning("Sweeping expired rate-limit counters failed", exc_info=True)
        finally:
            self._sweep_lock.release()

    def _sweep(self, now: float) -> None:
        # Moving windows: entries newest first, each with its expiry.
        for key in list(self.events):
            with self.locks[key]:
                entries = self.events.get(key)
                if entries is None:
                    continue
                kept = bisect.bisect_left(entries, -now, key=lambda entry: -entry.expiry)
                if kept:
                    self.events[key] = entries[:kept]
                    continue
                del self.events[key]
                # A hit already waiting for this lock then writes to a fresh list: at worst one
                # more hit is let through in that window.
                self.locks.pop(key, None)
        # Fixed windows: counters past their expiry (get() removes them too, when read).
        for key, expiry in list(self.expirations.items()):
            if expiry <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)


def counter_storage() -> Storage:
    """Where counters live: Redis when REDIS_URL is set (shared by every process and node),
    else this process's memory."""
    # Built under a lock: `limits` imports the redis client lazily and reads its version from
    # the module, which a second thread would see half-imported on a server's first requests.
    with _build_lock:
        url = getattr(settings, "REDIS_URL", "")
        return storage_from_string(url) if url else SweptMemoryStorage()


@functools.cache
def _limiter() -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(counter_storage())


@functools.cache
def _items(rule: str):
    return tuple(parse_many(rule)) if rule and rule.strip() else ()


def hit(*, rule: str, scope: str, key: str, cost: int = 1, message: str | None = None) -> None:
    """Count `cost` hits for (scope, key) against every rate of `rule`; RateLimited if any is
    exhausted (a refused hit is not counted). A Redis outage lets the request through, logged: a
    rate limit is a protection, not a reason to refuse every upload."""
    items = _items(rule)
    if not items:
        return
    keys = (_PREFIX, media_settings.SERVER_NAME, scope, key)
    try:
        limiter = _limiter()
        for item in items:
            # hit() is atomic in the storage (a Lua script on Redis): concurrent requests
            # cannot both take the last slot.
            if not limiter.hit(item, *keys, cost=cost):
                reset_at, _remaining = limiter.get_window_stats(item, *keys)
                retry_ms = max(1000, int((reset_at - time.time()) * 1000))
                raise errors.RateLimited(message, retry_after_ms=retry_ms)
    except errors.RateLimited:
        raise
    except Exception:  # the counter store is down
        logger.exception("Rate-limit storage unavailable; request allowed")


def reset() -> None:
    """Forget every counter (tests; an operator clearing a mistaken block)."""
    _limiter().storage.reset()


def _settings_changed(**kwargs):
    if kwargs.get("setting") in ("REDIS_URL",):
        _limiter.cache_clear()


setting_changed.connect(_settings_changed)


# Named groups of rules an Endpoint declares (`rate_limits = {"post": "upload"}`): for each, the
# setting holding the per-user rule and the one holding the per-client-IP rule.
GROUPS = {
    "upload": ("UPLOAD_RATE_PER_USER", "UPLOAD_RATE_PER_IP"),
}


@functools.lru_cache(maxsize=8)
def trusted_proxies(entries: tuple[str, ...]):
    """The networks of FORWARDED_ALLOW_IPS; None for "*" (any peer may be the proxy). Raises
    ValueError for an entry that is neither (conf.check_settings calls it at start-up)."""
    entries = tuple(entry.strip() for entry in entries if entry.strip())
    if "*" in entries:
        return None
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(entry: str):
    """An address written in a header or REMOTE_ADDR, without the port some proxies add
    (`203.0.113.9:5555`, `[2001:db8::1]:443`); None for anything else (`unknown`, empty)."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return ipaddress.ip_address(entry)
    except ValueError:
        return None


def _is_trusted(address, networks) -> bool:
    return address is not None and any(address in network for network in networks)


def client_ip(request) -> str:
    """The client's address, for per-address limits: the peer's, or, when the peer is a trusted
    proxy (FORWARDED_ALLOW_IPS), the nearest address in X-Forwarded-For that is not one.

    Read from the right: a proxy appends the address it was reached from to whatever the client
    sent, so only the entries the trusted proxies wrote can be believed; the leftmost entry,
    which django-ipware and python-ipware return, is the client's to choose. With "*" any peer
    is taken for the proxy, but no entry for another: the rightmost one, which the peer wrote,
    is the client. gunicorn itself leaves REMOTE_ADDR at the peer's address."""
    peer = request.META.get("REMOTE_ADDR") or "unknown"
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if not forwarded:
        return peer
    networks = trusted_proxies(tuple(media_settings.FORWARDED_ALLOW_IPS))
    if networks is not None and not _is_trusted(_address(peer), networks):
        return peer
    client = peer
    for entry in reversed(forwarded.split(",")):
        address = _address(entry)
        if address is None:
            break  # what a trusted proxy wrote is not an address: the last one before it stands
        client = str(address)
        if networks is None or not _is_trusted(address, networks):
            break
    return client


def request_hit(group: str, request) -> None:
    """Count a request against a group's per-user and per-IP rules."""
    user_setting, ip_setting = GROUPS[group]
    user = getattr(request, "user", None)
    if user is not None and user.pk is not None:
        hit(rule=getattr(media_settings, user_setting), scope=f"{group}-user", key=str(user.pk))
    hit(rule=getattr(media_settings, ip_setting), scope=f"{group}-ip", key=client_ip(request))
