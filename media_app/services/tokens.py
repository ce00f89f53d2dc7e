"""Access tokens: random, shown once, stored only as a SHA-256 digest.

Tokens carry 256 bits of randomness, so a fast hash is enough: there is nothing to brute-force.
"""
import functools
import hashlib
import secrets

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS

from ..models import AccessToken
from ..prepared import PreparedQuery

PREFIX = "mst_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def token_create(*, user, name: str = "") -> tuple[AccessToken, str]:
    plaintext = PREFIX + secrets.token_urlsafe(32)
    row = AccessToken.objects.create(user=user, token_hash=hash_token(plaintext), name=name)
    return row, plaintext


@functools.cache
def _user_fields() -> tuple[str, ...]:
    # Model.from_db() takes values in the model's field order, so keep that order.
    wanted = {"id", "username", "is_active", "is_staff", "is_superuser"}
    return tuple(f.attname for f in get_user_model()._meta.concrete_fields if f.attname in wanted)


# Runs on every authenticated request: compiled once (see media_app.prepared).
_token_lookup = PreparedQuery(
    lambda token_hash: AccessToken.objects.filter(token_hash=token_hash).values_list(
        *(f"user__{name}" for name in _user_fields())
    )[:1]
)


def token_user(*, token: str):
    """The active user a token belongs to, or None. The user's other fields load on access."""
    row = _token_lookup.fetchone(hash_token(token))
    fields = _user_fields()
    if row is None or not row[fields.index("is_active")]:
        return None
    return get_user_model().from_db(DEFAULT_DB_ALIAS, fields, row)


def user_get_or_create(*, username: str, admin: bool = False):
    """The user named `username`, created if needed. `admin` makes them a moderator (staff, in
    the `moderators` group, not a superuser): a token for the admin API; to sign in to the
    Django admin they also need a password (`manage.py create_moderator`)."""
    from ..moderation.services import moderator_grant

    User = get_user_model()
    user, _ = User.objects.get_or_create(username=username)
    if admin:
        moderator_grant(user=user)
    return user
