"""Proof by attack: a canary file name and a canary token, planted in every flow a client can
drive (upload by query and by reservation, the native API, downloads by both URL forms,
thumbnails, background pre-generation by a real Celery worker, failed requests), appear in no
log line of a real gunicorn server (access and error logs, at DEBUG) or of the worker, and in
no byte of the database."""
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
from tests.conftest import ROOT, _database_url, start_server, stop_server
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


@pytest.fixture
def worker(transactional_db, tmp_path):
    """A real Celery worker on the configured broker (Redis, or the embedded file broker)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
        "DATABASE_URL": _database_url(),
        "MEDIASITE_DATA_DIR": settings.MEDIASITE["DATA_DIR"],
        "MEDIASITE_SERVER_NAME": settings.MEDIASITE["SERVER_NAME"],
        "MEDIASITE_LOG_LEVEL": "DEBUG",
    }
    celery = [sys.executable, "-m", "celery", "-A", "mediasite"]
    subprocess.run([*celery, "purge", "-f"], cwd=ROOT, env=env, capture_output=True)
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [*celery, "worker", "-l", "debug", "--pool", "solo", "--without-heartbeat", "--without-mingle",
         "--without-gossip"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    yield log_path
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


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
    for source, text in logs.items():
        for marker in MARKERS:
            assert marker not in text, f"{marker!r} in the {source} log:\n" + "\n".join(
                line for line in text.splitlines() if marker in line)[:3000]
    dump = database_dump()
    for marker in MARKERS:
        assert marker.encode() not in dump, f"{marker!r} in the database dump"
