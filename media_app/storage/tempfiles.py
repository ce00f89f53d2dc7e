"""Temp files for bytes on their way into a backend, in the data directory.

They live on the same filesystem as the local media directory, so storing one there is an
atomic rename rather than a copy. Big ones are written back to disk while they grow
(`sync_file_range`), so the fsync that must precede the row's commit has little left to do.
"""
import ctypes
import ctypes.util
import tempfile
from pathlib import Path

from ..conf import media_settings
from .failures import translate_os_error


def temp_dir() -> Path:
    path = Path(media_settings.DATA_DIR) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _load_sync_file_range():
    """Linux's sync_file_range(2), which Python's os module lacks; None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return function


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
# Queue writeback every this many bytes: a final fsync that had to write a whole big upload at
# once would add a large share of the upload's time to the request, after the last byte came.
WRITEBACK_EVERY_BYTES = 16 << 20


class TempFile:
    """An unbuffered temp file whose write() writes everything or raises a Mediasite error.

    Unbuffered so that a full disk surfaces at write() (where the caller's cleanup runs)
    rather than at close(); looping because a write on a nearly full disk can be short, and a
    short write that went unnoticed would store bytes that do not match their hash.
    """

    def __init__(self):
        try:
            self._fh = tempfile.NamedTemporaryFile(dir=temp_dir(), prefix="upload-", delete=False, buffering=0)
        except OSError as exc:
            raise translate_os_error(exc) from exc
        self.name = self._fh.name
        self._written = 0
        self._flushed_to = 0

    def write(self, data) -> int:
        view = memoryview(data)
        try:
            while view:
                written = self._fh.write(view)
                view = view[written:]
        except OSError as exc:
            raise translate_os_error(exc) from exc
        self._written += len(data)
        if _sync_file_range and self._written - self._flushed_to >= WRITEBACK_EVERY_BYTES:
            # Asynchronous: queues the dirty pages for writing and returns at once.
            _sync_file_range(self._fh.fileno(), self._flushed_to, self._written - self._flushed_to,
                             _SYNC_FILE_RANGE_WRITE)
            self._flushed_to = self._written
        return len(data)

    def flush(self) -> None:
        pass  # unbuffered: nothing held back

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


def new_temp_file() -> TempFile:
    return TempFile()


def spool_file():
    """An anonymous temp file (gone when closed), for remote bytes a reader needs seekable."""
    try:
        return tempfile.TemporaryFile(dir=temp_dir(), prefix="read-")
    except OSError as exc:
        raise translate_os_error(exc) from exc
