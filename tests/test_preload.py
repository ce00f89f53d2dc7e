"""gunicorn's master (mediasite/gunicorn_conf.py): it imports the application and what its first
requests need before forking the workers (media_app/startup.py), so those pages are shared; the
embedded Celery worker is forked from it too (mediasite/embedded_worker.py) and ends with it,
reloaded or not."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import start_server, stop_server


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _mapped(pid: int, name: str) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return any(name in line for line in maps)


def _shared_dirty_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("Shared_Dirty:"))


def _celery_children(pid: int) -> list[int]:
    return [c for c in _children(pid) if b"celery" in open(f"/proc/{c}/cmdline", "rb").read()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _celery_started(master: int) -> list[int]:
    """The master's Celery children, once there is one (within 20 s; named once Celery runs)."""
    deadline = time.monotonic() + 20
    while not (celery := _celery_children(master)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return celery


def _ended(pid: int, within: float = 30) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _alive(pid)


@pytest.mark.parametrize("preload", ["true", "false"])
def test_the_master_loads_what_the_workers_share(django_db_setup, tmp_path, preload):
    server = start_server(tmp_path, MEDIASITE_PRELOAD_APP=preload, MEDIASITE_EMBEDDED_WORKER="true", REDIS_URL="")
    try:
        master = server.process.pid
        deadline = time.monotonic() + 20
        # Two web workers and the embedded Celery worker (named once Celery has started).
        while (len(children := _children(master)) < 3 or not _celery_children(master)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_celery_children(master)) == 1
        # libmagic and Pillow's core are loaded by warm_up, in the master only with preload.
        loaded = [_mapped(master, "libmagic") and _mapped(master, "PIL/_imaging")]
        if preload == "true":
            assert loaded == [True]
            # Written by the master before the fork and not since: tens of MB, in every worker,
            # the Celery worker included.
            assert all(_shared_dirty_kb(pid) > 20 << 10 for pid in children), [_shared_dirty_kb(p) for p in children]
        else:
            assert loaded == [False]
    finally:
        stop_server(server)


def test_warm_up_loads_what_first_uploads_and_remote_fetches_import_lazily(tmp_path):
    code = (
        "import sys, django; django.setup()\n"
        "from media_app.startup import warm_up\n"
        "lazy = ['media_app.federation.remote', 'dns.resolver', 'media_app.tasks.thumbnails']\n"
        "before = [m in sys.modules for m in lazy]\n"
        "warm_up()\n"
        "print(before, [m in sys.modules for m in lazy])\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mediasite.settings.production", "MEDIASITE_DATA_DIR": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[False, False, False] [True, True, True]"


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def test_the_forked_celery_worker_holds_no_listening_socket_and_is_replaced_when_it_ends(transactional_db, tmp_path):
    # A database the server's processes can open (its scheduler reads its tables).
    server = start_server(tmp_path, MEDIASITE_EMBEDDED_WORKER="true", REDIS_URL="")
    try:
        master = server.process.pid
        celery = _celery_started(master)
        assert len(celery) == 1 and f"Started the embedded Celery worker (pid {celery[0]})" in server.log()
        listening = _listening_inodes(server.host_port[1])
        assert listening and listening & _socket_inodes(master)
        assert not listening & _socket_inodes(celery[0])
        # Killed as the kernel's out-of-memory killer would: the master starts another.
        os.kill(celery[0], signal.SIGKILL)
        assert _ended(celery[0])
        replaced = _celery_started(master)
        assert len(replaced) == 1 and replaced != celery, server.log()[-3000:]
        assert f"The embedded Celery worker (pid {celery[0]}) ended with -9; starting another" in server.log()
        assert server.process.poll() is None  # the master went on serving throughout
    finally:
        stop_server(server)
    assert _ended(replaced[0])  # and the replacement stops with the master




def test_the_embedded_worker_stops_with_gunicorn_after_a_reload(django_db_setup, tmp_path):
    server = start_server(tmp_path, MEDIASITE_EMBEDDED_WORKER="true", REDIS_URL="")
    try:
        master = server.process.pid
        celery = _celery_started(master)
        assert len(celery) == 1
        os.kill(master, signal.SIGHUP)  # gunicorn reloads its configuration (this file again)
        time.sleep(3)
        assert _celery_children(master) == celery  # still the one worker, not a second
        assert "starting another" not in server.log()
    finally:
        stop_server(server)
    orphaned = not _ended(celery[0])
    if orphaned:  # not left behind: the worker and its beat process
        for pid in [*_children(celery[0]), celery[0]]:
            os.kill(pid, signal.SIGKILL)
    assert not orphaned


def test_the_embedded_worker_ends_when_the_master_is_killed(transactional_db, tmp_path):
    server = start_server(tmp_path, MEDIASITE_EMBEDDED_WORKER="true", REDIS_URL="")
    workers, celery = [], []
    try:
        master = server.process.pid
        celery = _celery_started(master)
        assert len(celery) == 1
        workers = [pid for pid in _children(master) if pid not in celery]
        os.kill(master, signal.SIGKILL)  # no on_exit: the master cannot stop it itself
        orphaned = not _ended(celery[0])
    finally:
        stop_server(server)
        for pid in [*workers, *celery]:  # gunicorn's own workers notice their master's end themselves
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not orphaned
