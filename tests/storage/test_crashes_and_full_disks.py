"""Faults that lose nothing and leave nothing, injected for real: small tmpfs filesystems filled
by blobs, by the database and by thumbnails; worker processes and whole servers killed with
SIGKILL in the middle of uploads.

What every test checks in the end: each acknowledged upload downloads byte-identical, no row
points at a missing file, and no file is left without a row (after the sweep, where the test
names one).
"""
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from media_app import storage
from media_app.models import Blob, Media, Thumbnail
from media_app.services import gc
from tests.conftest import ROOT, download_url, png_bytes, require_service, start_server, stop_server, upload


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    require_service("a mountable tmpfs (needs root)", result.returncode == 0, result.stderr.strip())


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size; all are unmounted after the test."""
    mounted = []

    def mount(size: str = "1m", name: str = "small") -> Path:
        path = tmp_path / name
        _mount_tmpfs(path, size)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no byte left."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        block = b"\0" * 4096
        try:
            while True:
                fh.write(block)
        except OSError:
            pass
        try:
            while True:
                fh.write(b"\0")
        except OSError:
            pass
    return filler


def files_under(path: Path, *, but=()) -> list[Path]:
    """Files but those in `but` and the embedded default's lock files (media_app.singleflight: one
    empty file per lock name, kept by design)."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p not in but and p.parent.name != "flights")


def every_row_has_its_file() -> None:
    for blob in Blob.objects.all():
        assert storage.backend(blob.storage).exists(blob.key), f"row {blob.sha256} has no file"


def every_file_has_its_row(media_dir: Path) -> None:
    keys = {p.relative_to(media_dir).as_posix() for p in files_under(media_dir)}
    assert keys == set(Blob.objects.values_list("key", flat=True)), "files without rows (or rows without files)"


# --- temp files of dead processes ----------------------------------------------------------

_DIE_HOLDING_A_TEMP_FILE = """
import os, django
django.setup()
from media_app import storage
tmp = storage.new_temp_file()
tmp.write(b"x" * 100_000)
print(tmp.name, flush=True)
os.kill(os.getpid(), 9)
"""


@pytest.mark.django_db
def test_temp_files_of_a_killed_process_are_swept_and_those_in_use_are_not():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mediasite.settings.test",
           "MEDIASITE_DATA_DIR": django_settings.MEDIASITE["DATA_DIR"]}
    dead = subprocess.run([sys.executable, "-c", _DIE_HOLDING_A_TEMP_FILE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    dead_file = Path(dead.stdout.strip())
    assert dead_file.exists()

    in_use = storage.new_temp_file()  # an upload in flight in this (live) process
    in_use.write(b"y" * 1000)
    in_use.close()  # closed for writing, not yet stored: still in use
    try:
        from media_app.tasks.maintenance import sweep_temp_files

        removed = sweep_temp_files.delay().get()
        assert removed >= 1
        assert not dead_file.exists()  # swept at once, not after the collector's grace period
        assert Path(in_use.name).exists()
    finally:
        in_use.discard()
    assert not Path(in_use.name).exists()


# --- full filesystems ------------------------------------------------------------------------

def _point_at(settings, *, data_dir: Path, media_dir: Path, thumbs_dir: Path | None = None) -> None:
    settings.MEDIASITE = {**settings.MEDIASITE, "DATA_DIR": str(data_dir), "STORAGE": "fs",
                          "THUMBNAIL_STORAGE": "thumbs" if thumbs_dir else "fs"}
    fs = settings.STORAGES["fs"]
    # Local backends only: the collector these tests run visits every configured backend.
    kept = {alias: settings.STORAGES[alias] for alias in ("default", "staticfiles")}
    storages_ = {**kept, "fs": {**fs, "OPTIONS": {**fs["OPTIONS"], "location": str(media_dir)}}}
    if thumbs_dir:
        storages_["thumbs"] = {**fs, "OPTIONS": {**fs["OPTIONS"], "location": str(thumbs_dir)}}
    settings.STORAGES = storages_


def _thumbnail(client, mxc):
    return client.get(f"/_matrix/client/v1/media/thumbnail/{mxc}?width=32&height=32&method=crop")


@pytest.mark.django_db
def test_full_temp_filesystem_while_rendering_a_thumbnail_is_a_507_and_leaves_no_temp_file(
        alice_client, tmpfs, tmp_path, settings):
    small = tmpfs("1m")
    _point_at(settings, data_dir=small, media_dir=tmp_path / "media")
    mxc = upload(alice_client, png_bytes(600, 600))
    filler = fill(small)

    response = _thumbnail(alice_client, mxc)

    assert response.status_code == 507, response.content
    assert response.json()["code"] == "STORAGE_FULL"
    assert files_under(small, but={filler}) == []  # no 0-byte temp file of the render
    assert not Thumbnail.objects.exists()
    filler.unlink()
    assert _thumbnail(alice_client, mxc).status_code == 200  # space is back
    every_row_has_its_file()


@pytest.mark.django_db
def test_full_thumbnail_filesystem_is_a_507_and_leaves_nothing(alice_client, tmpfs, tmp_path, settings):
    small = tmpfs("1m")
    _point_at(settings, data_dir=tmp_path / "data", media_dir=tmp_path / "media", thumbs_dir=small / "thumbs")
    mxc = upload(alice_client, png_bytes(600, 600))
    filler = fill(small)

    response = _thumbnail(alice_client, mxc)

    assert response.status_code == 507, response.content
    assert files_under(small, but={filler}) == []
    assert files_under(tmp_path / "data" / "tmp") == []
    assert not Thumbnail.objects.exists()
    filler.unlink()
    assert _thumbnail(alice_client, mxc).status_code == 200
    every_row_has_its_file()


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _post(server, token: str, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*server.host_port, timeout=60)
    try:
        conn.request("POST", "/_matrix/media/v3/upload", body=body,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def _get(server, token: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*server.host_port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_sqlite_full_on_commit_is_a_507_and_the_stored_file_is_removed(tmpfs, tmp_path):
    """The embedded default's database on a filesystem that fills up: the bytes are stored
    (elsewhere, with room) before the rows commit; the commit fails; the file goes too."""
    db_dir = tmpfs("4m", "db")
    data_dir = tmp_path / "data"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
           "DATABASE_URL": f"sqlite:///{db_dir / 'mediasite.sqlite3'}", "MEDIASITE_DATA_DIR": str(data_dir)}
    env.pop("REDIS_URL", None)
    env["MEDIASITE_STORAGE"] = "fs"
    _manage(env, "migrate", "--noinput", "-v", "0")
    token = _manage(env, "create_token", "alice").strip().splitlines()[-1]
    server = start_server(tmp_path, DATABASE_URL=env["DATABASE_URL"], MEDIASITE_DATA_DIR=str(data_dir),
                          REDIS_URL="", MEDIASITE_STORAGE="fs")
    try:
        status, _ = _post(server, token, os.urandom(1000))  # warm: connections open, pages cached
        assert status == 200
        filler = fill(db_dir)
        media_dir = data_dir / "media"
        before = files_under(media_dir)

        data = os.urandom(256 << 10)
        status, body = _post(server, token, data)

        assert status == 507, body
        assert body["code"] == "STORAGE_FULL"
        assert files_under(media_dir) == before  # the file stored for the failed row is gone
        assert files_under(data_dir / "tmp") == []
        filler.unlink()
        status, body = _post(server, token, data)  # room again: the same bytes are accepted
        assert status == 200, body
        status, got = _get(server, token, download_url(body["content_uri"].removeprefix("mxc://")))
        assert status == 200 and got == data
    finally:
        stop_server(server)


# --- killed processes --------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture
def own_data_dir(tmp_path, settings):
    """A data directory for a server of this test's own, seen by the test process too."""
    data_dir = tmp_path / "data"
    _point_at(settings, data_dir=data_dir, media_dir=data_dir / "media")
    return data_dir


def test_a_worker_killed_mid_upload_leaves_no_temp_file(transactional_db, own_data_dir, make_user, make_token, tmp_path):
    token = make_token(make_user("alice"))
    server = start_server(tmp_path, MEDIASITE_DATA_DIR=str(own_data_dir), MEDIASITE_STORAGE="fs")
    temp = own_data_dir / "tmp"
    sock = socket.create_connection(server.host_port, timeout=30)
    try:
        sock.sendall(b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + token.encode() + b"\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: 8000000\r\n\r\n" + os.urandom(2 << 20))
        deadline = time.monotonic() + 20
        while not (files := list(temp.glob("upload-*"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(files) == 1, "the upload never reached a temp file"
        owner = int(files[0].name.split("-")[1])
        assert owner in _children(server.process.pid)
        os.kill(owner, signal.SIGKILL)
        try:
            sock.sendall(os.urandom(6 << 20))
            answer = sock.recv(100)
        except OSError:
            answer = b""
        assert answer == b""  # never acknowledged: the connection died with the worker
        # gunicorn starts a replacement, which sweeps before serving.
        deadline = time.monotonic() + 30
        while files[0].exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not files[0].exists(), server.log()[-2000:]
        assert files_under(temp) == []
        data = os.urandom(100_000)
        status, body = _post(server, token, data)
        assert status == 200
        assert _get(server, token, download_url(body["content_uri"].removeprefix("mxc://"))) == (200, data)
    finally:
        sock.close()
        stop_server(server)


def test_kill_9_of_the_whole_server_mid_burst_loses_no_acknowledged_upload(
        transactional_db, own_data_dir, make_user, make_token, tmp_path):
    token = make_token(make_user("alice"))
    server = start_server(tmp_path, MEDIASITE_DATA_DIR=str(own_data_dir), MEDIASITE_STORAGE="fs")
    acknowledged: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def uploader(seed: int):
        n = 0
        while not stop.is_set():
            n += 1
            # Some bodies repeat: deduplicated uploads crash too.
            data = hashlib.sha256(f"{seed}-{n % 7}".encode()).digest() * (2000 + 500 * (n % 5))
            try:
                status, body = _post(server, token, data)
            except OSError:
                return  # the server died under this request: not acknowledged
            if status == 200:
                with lock:
                    acknowledged[body["content_uri"].removeprefix("mxc://")] = data

    threads = [threading.Thread(target=uploader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = [server.process.pid, *_children(server.process.pid)]
    for pid in reversed(pids):  # workers, then the arbiter: nobody shuts down cleanly
        os.kill(pid, signal.SIGKILL)
    server.process.wait()
    stop.set()
    for t in threads:
        t.join(60)
    assert len(acknowledged) >= 30

    every_row_has_its_file()
    restarted = start_server(tmp_path, MEDIASITE_DATA_DIR=str(own_data_dir), MEDIASITE_STORAGE="fs")
    try:
        for mxc, data in acknowledged.items():
            assert _get(restarted, token, download_url(mxc)) == (200, data)
    finally:
        stop_server(restarted)
    assert Media.objects.filter(blob__isnull=False).count() >= len(acknowledged)

    # The sweep: files of requests that died before their rows committed, and temp files.
    gc.blobs_collect_garbage(grace_seconds=0)
    every_row_has_its_file()
    every_file_has_its_row(own_data_dir / "media")
    assert files_under(own_data_dir / "tmp") == []
