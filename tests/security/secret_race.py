"""One process of the secret-file race (tests/security/test_secret_files.py), in a module of its
own: spawned processes import it, and it must not need Django."""
import os
import stat
import time

from mediasite.secret_files import read_or_create


def race(path, barrier, results, slow, late):
    def make():
        if slow:
            time.sleep(0.2)  # the first process is slow to write: nobody may read it half-done
        return os.urandom(16).hex().encode()

    barrier.wait()
    if late:
        time.sleep(0.05)
    data, created = read_or_create(path, make)
    results.put((data, created, stat.S_IMODE(os.stat(path).st_mode)))
