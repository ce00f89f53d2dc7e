"""Secrets kept in the data directory (Django's secret key, the encryption key, the federation
signing key): created by whichever process needs one first, read by all the others.

Plain Python, no Django: the production settings use it before Django is set up.
"""
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# A temp file this old is no other process's write in progress: its writer was killed between
# writing and publishing it (the secret in it was never used).
STALE_TEMP_SECONDS = 3600


def read_or_create(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """The contents of `path`, and whether this call created it from `make()`.

    The file is written whole under another name, owner-only (0600) from its first byte, synced,
    then published by a hard link, which fails if another process published first (its secret
    is then the one). So processes starting together agree on one secret, and none ever reads a
    partial or world-readable file: creating the file in place and then chmod-ing it left a
    moment where a second process read it empty, and its mode was the umask's.

    On a filesystem without hard links, the publishing is a rename made under an exclusive lock
    on `.<name>.lock` after checking that nobody published first: the same guarantees, at the
    price of a lock file beside the secret.
    """
    # Every call, not only those that create: the process that finds a killed writer's file
    # is usually not the one that made the secret after it.
    _remove_stale_temps(path)
    try:
        return path.read_bytes(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(make())
            fh.flush()
            os.fsync(fh.fileno())
        created = _publish(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass  # renamed into place
    if created:  # the name itself must survive a crash, or data encrypted with the key is lost
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path.read_bytes(), created


def _publish(tmp: str, path: Path) -> bool:
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return False
        os.rename(tmp, path)
        return True


def _remove_stale_temps(path: Path) -> None:
    """Best effort: a data dir that cannot be written to (read-only, secrets provisioned) must
    still start."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    # mkstemp's names (a directory not made yet has none): the prefix, then eight characters.
    for leftover in path.parent.glob(f".{path.name}-????????"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            pass
