"""Delegated authentication: the users of an existing Matrix homeserver use Mediasite with the
access tokens their homeserver gave them (MEDIASITE_HOMESERVER_URL).

A Bearer token this server did not mint is shown to the homeserver's
`GET /_matrix/client/v3/account/whoami`; the Matrix user ID it answers becomes a local user of
that name (created on first use, with no password: it signs in only through the homeserver).
Answers are cached in the Django cache (Redis when configured, shared by every process) under
the token's SHA-256, never the token itself: positive answers for HOMESERVER_CACHE_SECONDS,
refusals for HOMESERVER_NEGATIVE_CACHE_SECONDS. So a token revoked on the homeserver stops
working here within HOMESERVER_CACHE_SECONDS. Tokens with our own prefix are never sent away,
and uncached look-ups are rate-limited per client IP so random tokens cannot make Mediasite
flood the homeserver.
"""
import json
import logging
import urllib.error
import urllib.request

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import IntegrityError

from .. import errors, ratelimit
from ..conf import media_settings
from .tokens import hash_token

logger = logging.getLogger(__name__)

_REFUSED = ""  # cached for a token the homeserver does not know


def _whoami(token: str) -> str | None:
    """The homeserver's user ID for this token, None if it refuses the token."""
    url = media_settings.HOMESERVER_URL.rstrip("/") + "/_matrix/client/v3/account/whoami"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=media_settings.HOMESERVER_TIMEOUT_SECONDS) as response:
            body = json.loads(response.read(64 * 1024))
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return None
        logger.warning("Homeserver whoami answered HTTP %s", exc.code)
        raise errors.HomeserverUnavailable() from None
    except (OSError, ValueError):
        logger.warning("Homeserver whoami unreachable or malformed")
        raise errors.HomeserverUnavailable() from None
    user_id = body.get("user_id") if isinstance(body, dict) else None
    # Guests register without credentials on many homeservers: they do not get to upload here.
    if not isinstance(user_id, str) or not user_id.startswith("@") or body.get("is_guest"):
        return None
    return user_id


def homeserver_user(*, token: str, client_ip: str):
    """The local user for a homeserver's token, or None if the homeserver refuses it."""
    key = f"mediasite:whoami:{hash_token(token)}"
    user_id = cache.get(key)
    if user_id is None:
        ratelimit.hit(rule=media_settings.HOMESERVER_LOOKUP_RATE_PER_IP, scope="whoami-ip", key=client_ip)
        user_id = _whoami(token) or _REFUSED
        ttl = media_settings.HOMESERVER_CACHE_SECONDS if user_id else media_settings.HOMESERVER_NEGATIVE_CACHE_SECONDS
        cache.set(key, user_id, ttl)
    if user_id == _REFUSED:
        return None
    return _local_user(user_id)


def _local_user(user_id: str):
    User = get_user_model()
    if len(user_id) > User._meta.get_field(User.USERNAME_FIELD).max_length:
        return None
    user = User.objects.filter(username=user_id).first()
    if user is None:
        try:
            user = User(username=user_id)
            user.set_unusable_password()
            user.save()
        except IntegrityError:  # another request created it first
            user = User.objects.get(username=user_id)
    return user if user.is_active else None
