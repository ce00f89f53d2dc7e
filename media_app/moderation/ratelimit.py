"""Per-user rate limit on reports, with the `limits` library: shared through Redis when
REDIS_URL is set (every process counts together), in process memory otherwise."""
import functools
import math
import time

from django.conf import settings
from limits import parse, storage, strategies

from .. import errors
from ..conf import media_settings


@functools.cache
def _limiter() -> strategies.MovingWindowRateLimiter:
    url = getattr(settings, "REDIS_URL", "") or "memory://"
    return strategies.MovingWindowRateLimiter(storage.storage_from_string(url))


def check_report(*, user_id: int) -> None:
    """Count one report by `user_id`, or raise RateLimited with the time until the next."""
    limit = parse(media_settings.REPORT_RATE_LIMIT)
    limiter = _limiter()
    if limiter.hit(limit, "media-report", str(user_id)):
        return
    reset_at = limiter.get_window_stats(limit, "media-report", str(user_id)).reset_time
    raise errors.RateLimited("Too many reports; try again later",
                             retry_after_ms=max(1000, math.ceil((reset_at - time.time()) * 1000)))


def reset() -> None:
    """Forget every count (tests)."""
    _limiter().storage.reset()
