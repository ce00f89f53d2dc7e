"""Where blobs' bytes live: named storage backends and the content-addressed layout of keys.

A backend is a Django `STORAGES` alias (`fs`, `s3`), resolved at call time so tests and
operators can switch them; `backend(alias)` turns it into a `MediaBackend` (base.py), choosing
the class once per configured alias: `FileSystemBackend` (filesystem.py) or `S3Backend`
(s3.py). Temp files for bytes on their way in are in tempfiles.py, the presigner for redirects
in presign.py, and the translation of every backend failure into the error model in
failures.py. See docs/ARCHITECTURE.md, "Storage".

Keys are derived from the content hash: the same bytes always land at the same key, which is
what makes a lost upload race harmless.
"""
import logging
import os
import threading
import weakref

from django.core.files.storage import FileSystemStorage, InvalidStorageError, storages

from .. import errors
from ..conf import media_settings
from .base import COPY_CHUNK_BYTES, MediaBackend, StoredFile
from .filesystem import FileSystemBackend
from .presign import download_redirect
from .s3 import S3Backend
from .tempfiles import TempFile, fsync_path, new_temp_file, temp_dir, temp_files_sweep

__all__ = [
    "COPY_CHUNK_BYTES", "MediaBackend", "StoredFile", "TempFile", "backend", "backend_for_new_blobs",
    "blob_key", "copy_blob", "download_redirect", "fsync_path", "new_temp_file", "sha256_of_key", "temp_dir",
    "temp_files_sweep",
]

logger = logging.getLogger(__name__)


def blob_key(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def sha256_of_key(key: str) -> str | None:
    """The hash a content-addressed key was made from, or None for anything else (debris)."""
    parts = key.split("/")
    if len(parts) == 3 and len(parts[2]) == 64 and blob_key(parts[2]) == key:
        try:
            int(parts[2], 16)
        except ValueError:
            return None
        return parts[2]
    return None


def backend_for_new_blobs(*, thumbnail: bool = False) -> str:
    return media_settings.THUMBNAIL_STORAGE if thumbnail else media_settings.STORAGE


def _backend_class(django_storage) -> type[MediaBackend]:
    # The only place that asks what kind of Django storage an alias is. django-storages' S3
    # module is imported only when the storage is not a filesystem one: it imports boto3, which
    # would cost a process on local disks a fraction of a second and its memory for nothing.
    if isinstance(django_storage, FileSystemStorage):
        return FileSystemBackend
    from storages.backends.s3 import S3Storage

    if isinstance(django_storage, S3Storage):
        return S3Backend
    raise errors.StorageUnavailable(f"Unsupported storage backend {type(django_storage).__name__}")


# One MediaBackend per Django storage instance: Django builds a new instance when STORAGES
# changes (override_settings in tests), and the old one, with its wrapper, is dropped.
_backends: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_unconfigured_reported: set[str] = set()
_report_lock = threading.Lock()


def backend(alias: str) -> MediaBackend:
    """The backend configured under `alias`.

    An alias that settings.STORAGES no longer configures (an operator removed the S3 settings
    while blobs still live there) is an operator error, logged once per alias and process; the
    client gets STORAGE_UNAVAILABLE, as for any backend it cannot reach.
    """
    try:
        django_storage = storages[alias]
    except InvalidStorageError:
        with _report_lock:
            first = alias not in _unconfigured_reported
            _unconfigured_reported.add(alias)
        if first:
            logger.error(
                "Blobs are stored on backend %r, which settings.STORAGES does not configure: "
                "restore its settings (for 's3': AWS_STORAGE_BUCKET_NAME and friends) or move the "
                "blobs with migrate_storage", alias,
            )
        raise errors.StorageUnavailable() from None
    wrapped = _backends.get(django_storage)
    if wrapped is None:
        wrapped = _backends.setdefault(django_storage, _backend_class(django_storage)(alias, django_storage))
    return wrapped


def copy_blob(key: str, *, source: str, target: str) -> None:
    """Copy the blob at `key` from one backend to another, bounded in memory.

    A source with a local path is uploaded straight from it; anything else is first spooled to
    a temp file on disk, so the destination write is the same durable put as an upload's.
    """
    src, dest = backend(source), backend(target)
    source_path = src.local_path(key)
    if source_path is not None:
        if not os.path.exists(source_path):
            raise errors.BlobMissing()
        dest.put(key, source_path, keep_source=True)
        return
    tmp = new_temp_file()
    try:
        for chunk in src.iter_chunks(key):
            tmp.write(chunk)
        os.fsync(tmp.fileno())
        tmp.close()
        dest.put(key, tmp.name)
    finally:
        tmp.discard()
