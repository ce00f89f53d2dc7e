"""Secrets kept in the data directory (Django's secret key, the encryption key, the federation
signing key): created by whichever process needs one first, read by all the others.

Plain Python, no Django: the production settings use it before Django is set up.
"""
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """The contents of `path`, and whether this call created it from `make()`.

    The file is written whole under another name, owner-only (0600) from its first byte, synced,
    then published by a hard link, which fails if another process published first (its secret
    is then the one). So processes starting together agree on one secret, and none ever reads a
    partial or world-readable file: creating the file in place and then chmod-ing it left a
    moment where a second process read it empty, and its mode was the umask's.
    """
    try:
        return path.read_bytes(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
    created = False
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(make())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    if created:  # the name itself must survive a crash, or data encrypted with the key is lost
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path.read_bytes(), created
