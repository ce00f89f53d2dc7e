"""Servers whose media is refused, decided before any DNS lookup or connection.

Two sources: MEDIASITE_BLOCKED_SERVERS (operator configuration) and the approved entries of the
moderation app (`BlockedServer.active`). The database answer is cached for a few seconds per
process, so the check costs nothing on the download path's miss branch under load."""
import time

from ..conf import media_settings

_CACHE_SECONDS = 5.0
_cache: tuple[float, frozenset] | None = None


def _active_rows() -> frozenset:
    global _cache
    now = time.monotonic()
    if _cache is None or _cache[0] < now:
        from ..moderation.models import BlockedServer

        names = frozenset(n.lower() for n in BlockedServer.objects.filter(active=True).values_list("server_name", flat=True))
        _cache = (now + _CACHE_SECONDS, names)
    return _cache[1]


def clear_cache() -> None:
    global _cache
    _cache = None


def is_blocked(server_name: str) -> bool:
    """Blocked by its full name or by its host without the port (`evil.org` covers
    `evil.org:8448`)."""
    name = server_name.lower()
    host = name[1:name.find("]")] if name.startswith("[") and "]" in name else name.rsplit(":", 1)[0]
    configured = {s.strip().lower() for s in media_settings.BLOCKED_SERVERS}
    if name in configured or host in configured:
        return True
    rows = _active_rows()
    return name in rows or host in rows
