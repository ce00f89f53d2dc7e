"""Named storage backends and the content-addressed layout of blobs.

Backends are Django `STORAGES` aliases resolved at call time (never a module-level instance),
so tests and operators can switch them. Keys are derived from the content hash: the same bytes
always land at the same key, which is what makes a lost upload race harmless.
"""
import errno
import os
import tempfile
from pathlib import Path

from django.core.files import File
from django.core.files.storage import FileSystemStorage, storages

from . import errors
from .conf import media_settings


class StorageFull(errors.MediasiteError):
    code, status, errcode, message = "STORAGE_FULL", 507, "M_UNKNOWN", "Media storage is full"


def blob_key(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def backend_for_new_blobs(*, thumbnail: bool = False) -> str:
    return media_settings.THUMBNAIL_STORAGE if thumbnail else media_settings.STORAGE


def temp_dir() -> Path:
    path = Path(media_settings.DATA_DIR) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_temp_file():
    """A temp file in the data dir: on the same filesystem as local media, so a rename is atomic."""
    return tempfile.NamedTemporaryFile(dir=temp_dir(), prefix="upload-", delete=False)


def _translate_os_error(exc: OSError) -> errors.MediasiteError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull()
    return errors.StorageUnavailable()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def put_file(alias: str, key: str, src_path: str) -> None:
    """Store the (already fsync'd) file at `src_path` under `key`, durably, then consume it."""
    storage = storages[alias]
    try:
        if isinstance(storage, FileSystemStorage):
            _put_local(storage, key, src_path)
        else:
            with open(src_path, "rb") as fh:
                saved = storage.save(key, File(fh, name=key))
            if saved != key:
                raise errors.StorageUnavailable("Storage backend renamed a content-addressed key")
            os.unlink(src_path)
    except OSError as exc:
        raise _translate_os_error(exc) from exc


def _put_local(storage: FileSystemStorage, key: str, src_path: str) -> None:
    dest = storage.path(key)
    directory = os.path.dirname(dest)
    os.makedirs(directory, exist_ok=True)
    if storage.file_permissions_mode is not None:
        os.chmod(src_path, storage.file_permissions_mode)
    try:
        # Atomic: readers see no file or the whole file. Same content at the same key, so
        # replacing the file of a racing upload of the same bytes changes nothing.
        os.replace(src_path, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # The temp dir is on another filesystem: copy beside the target, then rename.
        part = f"{dest}.{os.getpid()}.part"
        with open(src_path, "rb") as src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, dest)
        os.unlink(src_path)
    _fsync_dir(directory)


class _Window:
    """A read-limited view of an open file: the test client and non-sendfile servers read
    exactly the range; gunicorn's sendfile uses fileno() from the current offset and the
    Content-Length."""

    def __init__(self, fh, start: int, length: int):
        if start:
            fh.seek(start)
        self._fh, self._left = fh, length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._fh.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()

    def __getattr__(self, name):
        if name == "fileno":  # present only when the backend gives a real file
            return self._fh.fileno
        raise AttributeError(name)


def open_range(alias: str, key: str, start: int, length: int):
    """A readable stream of `length` bytes from `start` of the stored file."""
    try:
        return _Window(storages[alias].open(key, "rb"), start, length)
    except FileNotFoundError as exc:
        raise BlobMissing() from exc
    except OSError as exc:
        raise _translate_os_error(exc) from exc


def open_file(alias: str, key: str):
    """The whole stored file, for reading from the start (hashing, thumbnailing)."""
    try:
        return storages[alias].open(key, "rb")
    except FileNotFoundError as exc:
        raise BlobMissing() from exc
    except OSError as exc:
        raise _translate_os_error(exc) from exc


def local_path(alias: str, key: str) -> str | None:
    storage = storages[alias]
    return storage.path(key) if isinstance(storage, FileSystemStorage) else None


def delete_file(alias: str, key: str) -> None:
    try:
        storages[alias].delete(key)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _translate_os_error(exc) from exc


class BlobMissing(errors.MediasiteError):
    """The row exists but its bytes do not: a server-side fault, not the client's."""

    code, status, errcode, message = "MEDIA_UNREADABLE", 500, "M_UNKNOWN", "The stored media could not be read"
