"""Thumbnail pre-generation through a real Celery worker process and Redis."""
import io
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.test import override_settings
from PIL import Image

from media_app.models import MediaEvent, Thumbnail
from tests.conftest import ROOT, _database_url, require_service, upload


def _redis_up() -> bool:
    url = os.environ.get("REDIS_URL")
    if not url:
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture
def celery_worker(transactional_db, tmp_path):
    require_service("Redis", _redis_up(), "set REDIS_URL to run the Celery worker tests")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
        "DATABASE_URL": _database_url(),
        "MEDIASITE_DATA_DIR": settings.MEDIASITE["DATA_DIR"],
        "MEDIASITE_SERVER_NAME": settings.MEDIASITE["SERVER_NAME"],
    }
    celery = [sys.executable, "-m", "celery", "-A", "mediasite"]
    subprocess.run([*celery, "purge", "-f"], cwd=ROOT, env=env, check=True, capture_output=True)
    log = open(tmp_path / "worker.log", "wb")
    process = subprocess.Popen([*celery, "worker", "-l", "info", "--pool", "solo", "--without-heartbeat"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    yield tmp_path / "worker.log"
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_upload_is_answered_before_thumbnails_are_rendered_by_the_worker(celery_worker, client_for, make_user,
                                                                         monkeypatch):
    from mediasite.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", False)  # to Redis and the worker process
    client = client_for(make_user("alice"))
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((2400, 1800)).convert("RGB").save(buf, "JPEG")
    with override_settings(MEDIASITE={**settings.MEDIASITE, "THUMBNAIL_PREGENERATE": True}):
        mxc = upload(client, buf.getvalue())
        assert Thumbnail.objects.count() == 0  # nothing rendered inside the upload request
        deadline = time.monotonic() + 60
        while Thumbnail.objects.count() < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
    sizes = sorted(Thumbnail.objects.values_list("width", "height", "method"))
    assert sizes == sorted(tuple(s) for s in [(32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"),
                                                  (640, 480, "scale"), (800, 600, "scale")]), celery_worker.read_text()[-2000:]
    events = MediaEvent.objects.filter(event_type="media.thumbnail_generated")
    assert {e.payload["media_id"] for e in events} == {mxc.split("/")[1]}
    assert "media_app.thumbnails.pregenerate" in celery_worker.read_text()


def test_make_run_without_redis_starts_its_own_worker(transactional_db, tmp_path, make_user, make_token):
    """The embedded default: a filesystem broker and a worker process started by gunicorn."""
    import json

    from tests.conftest import start_server, stop_server

    server = start_server(tmp_path, REDIS_URL="", MEDIASITE_THUMBNAIL_PREGENERATE="true",
                          MEDIASITE_EMBEDDED_WORKER="true")
    try:
        token = make_token(make_user("alice"))
        buf = io.BytesIO()
        Image.linear_gradient("L").resize((1200, 900)).convert("RGB").save(buf, "JPEG")
        import http.client

        conn = http.client.HTTPConnection(*server.host_port, timeout=60)
        conn.request("POST", "/_matrix/media/v3/upload", body=buf.getvalue(),
                     headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        json.loads(response.read())
        deadline = time.monotonic() + 60
        while Thumbnail.objects.count() < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert Thumbnail.objects.count() == 5, server.log()[-3000:]
        assert "Started the embedded Celery worker" in server.log()
    finally:
        stop_server(server)


def test_with_redis_gunicorn_starts_no_embedded_worker(transactional_db, tmp_path):
    """Several nodes share Redis and run `make worker`: no node starts a worker of its own, even
    with MEDIASITE_EMBEDDED_WORKER left at (or set to) true."""
    from tests.conftest import start_server, stop_server

    require_service("Redis", _redis_up(), "set REDIS_URL")
    server = start_server(tmp_path, REDIS_URL=os.environ["REDIS_URL"], MEDIASITE_EMBEDDED_WORKER="true")
    try:
        assert "Booting worker" in server.log()
        assert "Started the embedded Celery worker" not in server.log()
    finally:
        stop_server(server)
