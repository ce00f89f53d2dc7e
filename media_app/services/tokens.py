"""Access tokens: random, shown once, stored only as a SHA-256 digest.

Tokens carry 256 bits of randomness, so a fast hash is enough: there is nothing to brute-force.
"""
import hashlib
import logging
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from .. import errors
from ..conf import media_settings
from ..models import AccessToken
from ..selectors import token_with_user
from . import quotas

logger = logging.getLogger(__name__)

PREFIX = "mst_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


MAX_NAME_CHARS = AccessToken._meta.get_field("name").max_length


def token_create(*, user, name: str = "", max_tokens: int | None = None) -> tuple[AccessToken, str]:
    """A new token for `user`: the row, and the plaintext, which is never stored or shown again.
    With `max_tokens` (a user minting their own), refused once the user holds that many."""
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise errors.InvalidParam(f"name must be a string of at most {MAX_NAME_CHARS} characters")
    if "\x00" in name:  # PostgreSQL text cannot hold it: refuse rather than fail on insert
        raise errors.InvalidParam("name must not contain a NUL character")
    plaintext = PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        if max_tokens is not None:
            # Counted under the user's row lock, as quotas are: concurrent requests cannot slip past.
            quotas.user_lock(user=user)
            if AccessToken.objects.filter(user=user).count() >= max_tokens:
                raise errors.QuotaExceeded(f"You have {max_tokens} access tokens, the most one user may have; "
                                           "revoke one first")
        row = AccessToken.objects.create(user=user, token_hash=hash_token(plaintext), name=name.strip())
    return row, plaintext


def token_list(*, user):
    return AccessToken.objects.filter(user=user).order_by("-created_ts", "-pk")


def token_revoke(*, token_id: int, user=None) -> None:
    """Delete a token (only `user`'s own when given). Every node checks the database on each
    request, with no cache, so the token stops working everywhere at once."""
    if not 0 < token_id < 2**63:  # outside the column's range: no such row
        raise errors.TokenNotFound()
    rows = AccessToken.objects.filter(pk=token_id)
    if user is not None:
        rows = rows.filter(user=user)
    deleted, _ = rows.delete()
    if not deleted:
        raise errors.TokenNotFound()


def _note_use(token_id: int, last_used, now) -> None:
    """Record that a token was used, at most once per precision interval: the lookup already
    read the last time, so most requests write nothing, and the conditional UPDATE keeps
    concurrent requests on other nodes from writing it again."""
    precision = timedelta(seconds=media_settings.TOKEN_LAST_USED_PRECISION_SECONDS)
    if last_used is not None and now - last_used < precision:
        return
    try:
        AccessToken.objects.filter(pk=token_id).filter(
            Q(last_used_ts__isnull=True) | Q(last_used_ts__lt=now - precision)
        ).update(last_used_ts=now)
    except DatabaseError:
        # Bookkeeping only: a busy SQLite file must not fail the request it rides on.
        logger.warning("Could not record the last use of token %s", token_id, exc_info=True)


def token_user(*, token: str):
    """The active user a token belongs to, or None. The user's other fields load on access."""
    row = token_with_user(token_hash=hash_token(token))
    if row is None or not row.user.is_active:
        return None
    _note_use(row.pk, row.last_used_ts, timezone.now())
    return row.user


def user_get_or_create(*, username: str, admin: bool = False):
    """The user named `username`, created if needed. `admin` makes them a moderator (staff, in
    the `moderators` group, not a superuser): a token for the admin API; to sign in to the
    Django admin they also need a password (`manage.py create_moderator`)."""
    from ..moderation.services import moderator_grant

    User = get_user_model()
    user, created = User.objects.get_or_create(username=username)
    if created:  # marked as having none, rather than an empty one no hasher knows
        user.set_unusable_password()
        user.save(update_fields=["password"])
    if admin:
        moderator_grant(user=user)
    return user
