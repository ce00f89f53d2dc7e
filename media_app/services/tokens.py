"""Access tokens: random, shown once, stored only as a SHA-256 digest.

Tokens carry 256 bits of randomness, so a fast hash is enough: there is nothing to brute-force.
"""
import hashlib
import secrets

from django.contrib.auth import get_user_model

from ..models import AccessToken
from ..selectors import user_for_token_hash

PREFIX = "mst_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def token_create(*, user, name: str = "") -> tuple[AccessToken, str]:
    plaintext = PREFIX + secrets.token_urlsafe(32)
    row = AccessToken.objects.create(user=user, token_hash=hash_token(plaintext), name=name)
    return row, plaintext


def token_user(*, token: str):
    """The active user a token belongs to, or None. The user's other fields load on access."""
    user = user_for_token_hash(token_hash=hash_token(token))
    if user is None or not user.is_active:
        return None
    return user


def user_get_or_create(*, username: str, admin: bool = False):
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=username)
    if admin and not (user.is_staff and user.is_superuser):
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    return user
