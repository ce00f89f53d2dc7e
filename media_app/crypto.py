"""Encryption at rest for sensitive fields (original filenames, report texts).

Keys come from MEDIASITE_ENCRYPTION_KEYS (comma-separated Fernet keys, newest first: the first
encrypts, all decrypt, so keys rotate by prepending a new one and running
`manage.py rotate_encryption_keys`). Without that setting a key is generated once in the data
directory, so the embedded default needs no configuration.
"""
import functools
import logging
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.core.signals import setting_changed
from django.db import models

from mediasite import secret_files

from .conf import media_settings

logger = logging.getLogger(__name__)


def _key_file_key() -> bytes:
    key, _created = secret_files.read_or_create(Path(media_settings.DATA_DIR) / "encryption_key", Fernet.generate_key)
    return key.strip()


@functools.cache
def _fernet() -> MultiFernet:
    keys = [k.encode() if isinstance(k, str) else k for k in media_settings.ENCRYPTION_KEYS]
    return MultiFernet([Fernet(k) for k in (keys or [_key_file_key()])])


def _reset(**kwargs):
    if kwargs.get("setting") == "MEDIASITE":
        _fernet.cache_clear()


setting_changed.connect(_reset)


def encrypt(text: str) -> str:
    return _fernet().encrypt(text.encode("utf-8")).decode("ascii")


class Undecryptable(str):
    """What an encrypted column reads as when no configured key opens it: an operator error
    (a key was removed from MEDIASITE_ENCRYPTION_KEYS, or the data was restored without its
    key), shown as such in the admin and the API, never as None (a file without a name) nor as
    the ciphertext. It keeps the stored token, so saving the row writes it back unchanged and a
    later configuration with the right key still opens it."""

    TEXT = "[undecryptable: no configured encryption key opens this value]"

    def __new__(cls, ciphertext: str):
        obj = super().__new__(cls, cls.TEXT)
        obj.ciphertext = ciphertext
        return obj


class DecryptionError(Exception):
    """Raised by decrypt(strict=True) and by key rotation for a value no key opens."""


def is_undecryptable(value) -> bool:
    return isinstance(value, Undecryptable)


def decrypt(token: str, *, where: str = "an encrypted field") -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        logger.error(
            "Cannot decrypt %s with any key of MEDIASITE_ENCRYPTION_KEYS (or the data-dir key): "
            "a key this value was written with is missing from the key ring", where,
        )
        return Undecryptable(token)


def rotate(token: str) -> str:
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError) as exc:
        raise DecryptionError("no configured key opens this value") from exc


class EncryptedTextField(models.TextField):
    """A text column whose stored form is a Fernet token; Python sees the plaintext, or an
    Undecryptable marker when no configured key opens it."""

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return decrypt(value, where=f"{self.model._meta.db_table}.{self.column}")

    def get_prep_value(self, value):
        if isinstance(value, Undecryptable):
            return value.ciphertext  # written back as it was read: nothing is lost
        value = super().get_prep_value(value)
        return None if value is None else encrypt(value)
