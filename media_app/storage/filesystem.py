"""Blobs as files under a local directory (Django's FileSystemStorage configures where).

Local files are served zero-copy (gunicorn's sendfile through the stream's fileno()) and
stored by an atomic rename from the temp directory, which is on the same filesystem.
"""
import errno
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from .base import COPY_CHUNK_BYTES, MediaBackend, StoredFile
from .failures import guard
from .tempfiles import fsync_path, unlink_quietly


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

    def fileno(self) -> int:
        return self._fh.fileno()


class FileSystemBackend(MediaBackend):
    def _path(self, key: str) -> str:
        return self.django_storage.path(key)

    def local_path(self, key: str) -> str:
        return self._path(key)

    def put(self, key: str, src_path: str, *, keep_source: bool = False) -> None:
        with guard():
            self._put(key, src_path, keep_source=keep_source)

    def _put(self, key: str, src_path: str, *, keep_source: bool) -> None:
        dest = self._path(key)
        directory = os.path.dirname(dest)
        os.makedirs(directory, exist_ok=True)
        mode = self.django_storage.file_permissions_mode
        if mode is not None:
            os.chmod(src_path, mode)
        part = f"{dest}.{os.getpid()}.{os.urandom(4).hex()}.part"
        try:
            if keep_source:
                os.link(src_path, part)  # the same inode under a second name: no copy
                os.replace(part, dest)
            else:
                # Atomic: readers see no file or the whole file. Same content at the same key,
                # so replacing the file of a racing upload of the same bytes changes nothing.
                os.replace(src_path, dest)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                unlink_quietly(part)  # linked but not renamed into place (a full directory)
                raise
            # Another filesystem (or no hard links): copy beside the target, then rename.
            try:
                with open(src_path, "rb") as src, open(part, "wb") as out:
                    while chunk := src.read(COPY_CHUNK_BYTES):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(part, dest)
            except BaseException:
                unlink_quietly(part)
                raise
            if not keep_source:
                os.unlink(src_path)
        fsync_path(directory)

    def delete(self, key: str) -> None:
        with guard():
            unlink_quietly(self._path(key))

    def open(self, key: str):
        with guard():
            return open(self._path(key), "rb")

    def open_range(self, key: str, start: int, length: int):
        with guard():
            return _Window(open(self._path(key), "rb"), start, length)

    def iter_chunks(self, key: str, chunk_size: int = COPY_CHUNK_BYTES) -> Iterator[bytes]:
        with guard():
            fh = open(self._path(key), "rb")
        with fh:
            while True:
                with guard():
                    chunk = fh.read(chunk_size)
                if not chunk:
                    return
                yield chunk

    def exists(self, key: str) -> bool:
        with guard():
            return os.path.exists(self._path(key))

    def list_files(self) -> Iterator[StoredFile]:
        root = Path(self.django_storage.location)
        with guard():
            for directory, _dirs, files in os.walk(root):
                for name in files:
                    path = Path(directory) / name
                    try:
                        stat = path.stat()
                    except FileNotFoundError:
                        continue  # removed while we walked
                    yield StoredFile(
                        key=path.relative_to(root).as_posix(),
                        size=stat.st_size,
                        modified=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
                    )

    def free_space(self) -> int:
        root = Path(self.django_storage.location)
        with guard():
            root.mkdir(parents=True, exist_ok=True)
            return shutil.disk_usage(root).free

    def presign(self, key, *, signed_at, expires_seconds, response_headers) -> None:
        return None  # nobody but us can read these files: they are served by sendfile
