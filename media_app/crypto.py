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

from .conf import media_settings

logger = logging.getLogger(__name__)


def _key_file_key() -> bytes:
    path = Path(media_settings.DATA_DIR) / "encryption_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "xb") as fh:  # the first process wins; the others read its key
            fh.write(Fernet.generate_key())
        path.chmod(0o600)
    except FileExistsError:
        pass
    return path.read_bytes().strip()


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


def decrypt(token: str) -> str | None:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        # A value no configured key opens: serve without it rather than fail the request.
        logger.error("An encrypted field could not be decrypted with the configured keys")
        return None


def rotate(token: str) -> str:
    return _fernet().rotate(token.encode("ascii")).decode("ascii")


class EncryptedTextField(models.TextField):
    """A text column whose stored form is a Fernet token; Python sees the plaintext."""

    def from_db_value(self, value, expression, connection):
        return None if value is None else decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return None if value is None else encrypt(value)
