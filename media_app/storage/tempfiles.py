"""Temp files for bytes on their way into a backend, in the data directory.

They live on the same filesystem as the local media directory, so storing one there is an
atomic rename rather than a copy. Big ones are written back to disk while they grow
(`sync_file_range`), so the fsync that must precede the row's commit has little left to do.

A temp file is named after the process that owns it and stays flock()ed by that process until
it is discarded; the kernel drops the lock when the process dies, however it dies. So a sweep
can remove the temp files of dead processes at once (a worker killed mid-upload must not
leave its bytes until the collector's grace period ends) without touching uploads in flight.
"""
import ctypes
import ctypes.util
import fcntl
import os
import tempfile
import time
from pathlib import Path

from ..conf import media_settings
from .failures import translate_os_error


TEMP_PREFIX = "upload-"
# A file this young may not be locked yet by its (live) creator.
TEMP_LOCK_SETTLE_SECONDS = 60


def temp_dir() -> Path:
    path = Path(media_settings.DATA_DIR) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_path(path: str) -> None:
    """fsync a file or a directory by its path (a directory: so a rename into it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _owner_pid(name: str) -> int | None:
    parts = name.split("-")
    if len(parts) >= 3 and parts[0] + "-" == TEMP_PREFIX and parts[1].isdigit():
        return int(parts[1])
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process whose parent died too waits as a zombie until an init reaps it, which a
    # container's first process may never do: it holds no lock and writes nothing any more.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def temp_files_sweep() -> int:
    """Remove the temp files no live process holds; returns how many. Safe at any time, from
    any process: a file still locked is in use, and a young one whose owner lives may be
    about to be locked."""
    removed = 0
    now = time.time()
    for path in temp_dir().iterdir():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, IsADirectoryError, OSError):
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # held by a live process
            owner = _owner_pid(path.name)
            young = now - os.fstat(fd).st_mtime < TEMP_LOCK_SETTLE_SECONDS
            if young and (owner is None or _pid_alive(owner)):
                continue
            unlink_quietly(str(path))
            removed += 1
        finally:
            os.close(fd)
    return removed


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

    _fh = _lock_fd = None  # until __init__ has set them (so __del__ and __getattr__ are safe)

    def __init__(self):
        try:
            self._fh = tempfile.NamedTemporaryFile(
                dir=temp_dir(), prefix=f"{TEMP_PREFIX}{os.getpid()}-", delete=False, buffering=0
            )
        except OSError as exc:
            raise translate_os_error(exc) from exc
        self.name = self._fh.name
        # A descriptor of its own, so the lock outlives close() until discard().
        try:
            self._lock_fd = os.open(self.name, os.O_RDONLY)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.discard()
            raise translate_os_error(exc) from exc
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
        """Close for writing; the file stays locked (in use) until discard()."""
        self._fh.close()

    def discard(self) -> None:
        """Remove the file (if it is still here) and drop the lock."""
        self._fh.close()
        unlink_quietly(self.name)
        self.release()

    def release(self) -> None:
        """Drop the lock only: for a file that was renamed into place."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        self.release()

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
