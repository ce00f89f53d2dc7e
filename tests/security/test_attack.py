"""Proof by attack: a canary file name and a canary token, planted in every flow a client can
drive (upload by query and by reservation, the native API, downloads by both URL forms,
thumbnails, background pre-generation by a real Celery worker, failed requests, and a fetch
over signed federation from a second instance), appear in no log line of a real gunicorn server
(access and error logs, at DEBUG) or of a worker, and in no byte of either database."""
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from django.conf import settings
from PIL import Image

from media_app.models import AccessToken, Media, Thumbnail
from media_app.services.tokens import hash_token, user_get_or_create
from tests.conftest import ROOT, _database_url, _free_port, start_server, stop_server
from tests.security.test_encryption_at_rest import database_dump

# Both contain "Canary", which nothing else in the flow does; the name has spaces and a quote
# so it travels percent-encoded in URLs and decoded in the server's path.
CANARY_NAME = "Canary Holiday 'Photo' 4f1c.jpg"
CANARY_TOKEN = "mst_CanaryTokenZ8k2Lr7Qw1Xv9Pn4Ty6Bh3Jd5Gf0Sa2Mc8"
CANARY_BAD_TOKEN = "mst_CanaryRevokedTokenHx5Wq8Ez1Ru4Yo7Ip0"
MARKERS = ("Canary", "canary", "Canary%20Holiday", "Holiday 'Photo'", "CanaryToken", "Z8k2Lr7Qw1Xv9Pn4")


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((640, 480)).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def _call(base, method, path, *, data=None, token=None, query=None):
    url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _start_worker(log_path, **extra_env):
    """A real Celery worker on the configured broker (Redis, or the embedded file broker), for
    the live server's own settings; returns the process."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
        "DATABASE_URL": _database_url(),
        "MEDIASITE_DATA_DIR": settings.MEDIASITE["DATA_DIR"],
        "MEDIASITE_SERVER_NAME": settings.MEDIASITE["SERVER_NAME"],
        "MEDIASITE_LOG_LEVEL": "DEBUG",
        **extra_env,
    }
    celery = [sys.executable, "-m", "celery", "-A", "mediasite"]
    subprocess.run([*celery, "purge", "-f"], cwd=ROOT, env=env, capture_output=True)
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [*celery, "worker", "-l", "debug", "--pool", "solo", "--without-heartbeat", "--without-mingle",
         "--without-gossip"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process


def _stop(process):
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def worker(transactional_db, tmp_path):
    log_path = tmp_path / "worker.log"
    process = _start_worker(log_path)
    yield log_path
    _stop(process)


def _assert_no_marker(logs: dict):
    for source, text in logs.items():
        for marker in MARKERS:
            assert marker not in text, f"{marker!r} in the {source} log:\n" + "\n".join(
                line for line in text.splitlines() if marker in line)[:3000]


@pytest.mark.server
def test_canary_name_and_token_reach_no_log_line_and_no_database_byte(worker, tmp_path):
    user = user_get_or_create(username="attack-probe")
    AccessToken.objects.create(user=user, token_hash=hash_token(CANARY_TOKEN), name="probe")
    server = start_server(tmp_path, "--log-level", "debug", MEDIASITE_LOG_LEVEL="DEBUG",
                          MEDIASITE_THUMBNAIL_PREGENERATE="true")
    try:
        base, jpeg = server.url, _jpeg()
        # Upload: filename and token in the query string.
        status, body = _call(base, "POST", "/_matrix/media/v3/upload", data=jpeg,
                             query={"filename": CANARY_NAME, "access_token": CANARY_TOKEN})
        assert status == 200, body
        mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
        # Reservation, then filled with a name, Bearer header.
        status, body = _call(base, "POST", "/_matrix/media/v1/create", token=CANARY_TOKEN)
        reserved = json.loads(body)["content_uri"].removeprefix("mxc://")
        status, _ = _call(base, "PUT", f"/_matrix/media/v3/upload/{reserved}", data=jpeg[:-10] + b"0123456789",
                          token=CANARY_TOKEN, query={"filename": CANARY_NAME})
        assert status == 200
        # Native API upload and content.
        status, body = _call(base, "POST", "/api/v1/media", data=b"plain text body", token=CANARY_TOKEN,
                             query={"filename": CANARY_NAME})
        assert status == 201, body
        native = json.loads(body)
        assert _call(base, "GET", f"/api/v1/media/{native['server_name']}/{native['media_id']}/content",
                     token=CANARY_TOKEN)[0] == 200
        # Downloads, both URL forms, token by header and by query.
        quoted = urllib.parse.quote(CANARY_NAME)
        assert _call(base, "GET", f"/_matrix/client/v1/media/download/{mxc}", token=CANARY_TOKEN)[0] == 200
        status, content = _call(base, "GET", f"/_matrix/client/v1/media/download/{mxc}/{quoted}",
                                query={"access_token": CANARY_TOKEN})
        assert status == 200 and content == jpeg
        # Thumbnail.
        assert _call(base, "GET", f"/_matrix/client/v1/media/thumbnail/{mxc}",
                     query={"width": "32", "height": "32", "access_token": CANARY_TOKEN})[0] == 200
        # Failures log more than successes: unknown token, missing media, bad parameters.
        assert _call(base, "GET", f"/_matrix/client/v1/media/download/{mxc}/{quoted}", token=CANARY_BAD_TOKEN)[0] == 401
        assert _call(base, "GET", f"/_matrix/client/v1/media/download/{mxc.split('/')[0]}/NoSuchMedia/{quoted}",
                     token=CANARY_TOKEN)[0] == 404
        assert _call(base, "GET", f"/_matrix/client/v1/media/thumbnail/{mxc}",
                     query={"width": CANARY_NAME, "height": "x", "access_token": CANARY_TOKEN})[0] == 400
        # An old r0 path some clients still send: no route, same file-name segment.
        assert _call(base, "GET", f"/_matrix/media/r0/download/{mxc}/{quoted}",
                     query={"access_token": CANARY_TOKEN})[0] == 404
        # The worker pre-generates thumbnails of both JPEG uploads.
        deadline = time.monotonic() + 60
        while Thumbnail.objects.count() < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert Thumbnail.objects.count() >= 2, worker.read_text()[-3000:]
    finally:
        stop_server(server)

    assert Media.objects.filter(uploader=user).count() == 3
    logs = {"gunicorn": server.log(), "worker": worker.read_text(errors="replace")}
    assert "download/" in logs["gunicorn"] and "[REDACTED]" in logs["gunicorn"]  # the log is real
    assert "media_app.thumbnails.pregenerate" in logs["worker"]
    _assert_no_marker(logs)
    dump = database_dump()
    for marker in MARKERS:
        assert marker.encode() not in dump, f"{marker!r} in the database dump"


def _sqlite_file_bytes(path) -> bytes:
    return b"".join(open(f"{path}{suffix}", "rb").read() for suffix in ("", "-wal", "-journal")
                    if os.path.exists(f"{path}{suffix}"))


@pytest.mark.server
def test_canary_name_crosses_federation_and_reaches_no_log_line_and_no_database_byte(transactional_db, tmp_path):
    """Media uploaded under the canary name to a second instance (B, embedded default) and
    fetched over signed federation by this one (A: gunicorn and its own Celery worker, at
    DEBUG): the name reaches A encrypted, and no log of either side nor either database holds it."""
    port_a, port_b = _free_port(), _free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    dir_a.mkdir()
    dir_b.mkdir()
    env_b = {"DJANGO_SETTINGS_MODULE": "mediasite.settings.production", "MEDIASITE_SERVER_NAME": "b.test",
             "MEDIASITE_DATA_DIR": str(dir_b), "DATABASE_URL": f"sqlite:///{dir_b / 'mediasite.sqlite3'}",
             "REDIS_URL": "", "MEDIASITE_EMBEDDED_WORKER": "true", "MEDIASITE_LOG_LEVEL": "DEBUG",
             "MEDIASITE_OUTBOUND_ALLOWLIST": "127.0.0.0/8",
             "MEDIASITE_FEDERATION_SERVER_MAP": json.dumps({settings.MEDIASITE["SERVER_NAME"]: url_a})}
    federation_a = {"MEDIASITE_OUTBOUND_ALLOWLIST": "127.0.0.0/8",
                    "MEDIASITE_FEDERATION_SERVER_MAP": json.dumps({"b.test": url_b})}

    def manage_b(*args):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**os.environ, **env_b},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    manage_b("migrate", "--noinput", "-v", "0")
    token_b = manage_b("create_token", "bob").strip().splitlines()[-1]
    user = user_get_or_create(username="attack-probe")
    AccessToken.objects.create(user=user, token_hash=hash_token(CANARY_TOKEN), name="probe")

    server_b = start_server(dir_b, "--log-level", "debug", port=port_b, **env_b)
    worker_a = server_a = None
    try:
        worker_a = _start_worker(dir_a / "worker.log", **federation_a)
        server_a = start_server(dir_a, "--log-level", "debug", port=port_a, MEDIASITE_LOG_LEVEL="DEBUG",
                                **federation_a)
        jpeg = _jpeg()
        status, body = _call(url_b, "POST", "/_matrix/media/v3/upload", data=jpeg, token=token_b,
                             query={"filename": CANARY_NAME})
        assert status == 200, body
        mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
        assert mxc.startswith("b.test/")
        # A fetches it from B over signed federation (its worker does), then serves it.
        quoted = urllib.parse.quote(CANARY_NAME)
        status, content = _call(url_a, "GET", f"/_matrix/client/v1/media/download/{mxc}/{quoted}",
                                token=CANARY_TOKEN)
        assert status == 200 and content == jpeg, (content[:500], server_a.log()[-3000:])
        assert _call(url_a, "GET", f"/_matrix/client/v1/media/download/{mxc}",
                     query={"access_token": CANARY_TOKEN})[0] == 200
        assert _call(url_a, "GET", f"/_matrix/client/v1/media/thumbnail/{mxc}",
                     query={"width": "32", "height": "32", "access_token": CANARY_TOKEN})[0] == 200
    finally:
        for server in (server_a, server_b):
            if server is not None:
                stop_server(server)
        if worker_a is not None:
            _stop(worker_a)

    # The name crossed: A holds it, decryptable, under B's media.
    remote = Media.objects.get(server_name="b.test", media_id=mxc.split("/")[1])
    assert remote.origin == "remote" and remote.upload_name == CANARY_NAME
    logs = {"A gunicorn": server_a.log(), "A worker": (dir_a / "worker.log").read_text(errors="replace"),
            "B gunicorn and embedded worker": server_b.log()}
    assert f"/_matrix/federation/v1/media/download/{remote.media_id}" in logs["B gunicorn and embedded worker"]
    assert "media_app.federation.fetch_remote_media" in logs["A worker"]  # the logs are real
    _assert_no_marker(logs)
    for source, dump in {"A": database_dump(), "B": _sqlite_file_bytes(dir_b / "mediasite.sqlite3")}.items():
        assert len(dump) > 10_000 and remote.media_id.encode() in dump  # the dumps are real
        for marker in MARKERS:
            assert marker.encode() not in dump, f"{marker!r} in the database of {source}"
