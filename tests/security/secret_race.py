"""One process of the secret-file race (tests/security/test_secret_files.py), in a module of its
own: spawned processes import it, and it must not need Django."""
import errno
import os
import stat
import time

from mediasite.secret_files import read_or_create


def _no_hard_links(src, dst, **kwargs):
    raise OSError(errno.EPERM, "Operation not permitted")  # as vfat and some network mounts answer


def race(path, barrier, results, slow, late, hard_links=True):
    if not hard_links:
        os.link = _no_hard_links
    def make():
        if slow:
            time.sleep(0.2)  # the first process is slow to write: nobody may read it half-done
        return os.urandom(16).hex().encode()

    barrier.wait()
    if late:
        time.sleep(0.05)
    data, created = read_or_create(path, make)
    results.put((data, created, stat.S_IMODE(os.stat(path).st_mode)))
