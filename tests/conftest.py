"""Shared fixtures: users and tokens, an authenticated test client, a real gunicorn server.

The suite runs on whatever DATABASE_URL / REDIS_URL point at (PostgreSQL and Redis in CI) and
on the embedded SQLite default without them.
"""
import io
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from PIL import Image

from media_app.services.access import access_batch
from media_app.services.tokens import token_create, user_get_or_create

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"


def require_service(name: str, available: bool, reason: str = "") -> None:
    """Skip a test whose service is absent on a developer's machine; fail it in CI."""
    if available:
        return
    message = f"{name} is not available{': ' + reason if reason else ''}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's, plus: single-flight connections (PostgreSQL without Redis) are closed
    before the test database is dropped, which they would otherwise keep open."""
    yield
    from media_app import singleflight

    if singleflight._postgres_backend is not None:
        singleflight._postgres_backend.close_connections()


@pytest.fixture(autouse=True)
def _empty_access_batch():
    """Each test starts and ends with no accesses waiting to be written."""
    access_batch.discard()
    yield
    access_batch.discard()


@pytest.fixture
def make_user(db):
    def make(username="alice", admin=False):
        return user_get_or_create(username=username, admin=admin)

    return make


@pytest.fixture
def make_token(db):
    def make(user):
        return token_create(user=user)[1]

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def alice_token(alice, make_token):
    return make_token(alice)


@pytest.fixture
def client_for(client, make_token):
    """A Django test client sending `Authorization: Bearer` for the given user."""
    from django.test import Client

    def make(user):
        return Client(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")

    return make


@pytest.fixture
def alice_client(client_for, alice):
    return client_for(alice)


def upload(client, data: bytes, *, filename=None, content_type="application/octet-stream") -> str:
    """Upload through the Matrix API; returns 'server/media_id'."""
    url = "/_matrix/media/v3/upload" + (f"?filename={filename}" if filename else "")
    response = client.post(url, data=data, content_type=content_type)
    assert response.status_code == 200, response.content
    return response.json()["content_uri"].removeprefix("mxc://")


def download_url(mxc_path: str, file_name: str | None = None) -> str:
    return f"/_matrix/client/v1/media/download/{mxc_path}" + (f"/{file_name}" if file_name else "")


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def stored_media(server_name: str, media_id: str, timeout: float = 30):
    """The media row, once it exists. Remote media fetched by a request is stored when that
    request's answer has gone out, so the row may follow the answer by a moment."""
    from media_app.models import Media

    deadline = time.monotonic() + timeout
    while True:
        media = Media.objects.filter(server_name=server_name, media_id=media_id).first()
        if media is not None or time.monotonic() > deadline:
            assert media is not None, f"{server_name}/{media_id} was never stored"
            return media
        time.sleep(0.05)


def png_bytes(width=8, height=8, mode="RGB", color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def noisy_png(width: int, height: int | None = None) -> bytes:
    """A PNG of random pixels (square unless `height` is given): about 3 bytes per pixel, as it
    does not compress."""
    height = width if height is None else height
    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), secrets.token_bytes(width * height * 3)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(width=16, height=16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (0, 128, 255)).save(buf, "JPEG")
    return buf.getvalue()


# --- a real server --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class LiveServer:
    def __init__(self, base_url: str, process: subprocess.Popen, log_path: Path):
        self.url, self.process, self.log_path = base_url, process, log_path

    @property
    def host_port(self):
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(log_dir: Path, *extra_args: str, port: int | None = None, **extra_env: str) -> LiveServer:
    """gunicorn with the production settings, two workers, on the test database. `port` is
    for servers that must know each other's address before they start (federation)."""
    port = port or _free_port()
    log_path = log_dir / "gunicorn.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
        "DATABASE_URL": _database_url(),
        "MEDIASITE_DATA_DIR": settings.MEDIASITE["DATA_DIR"],
        "MEDIASITE_SERVER_NAME": settings.MEDIASITE["SERVER_NAME"],
        "MEDIASITE_MAX_UPLOAD_SIZE": str(settings.MEDIASITE["MAX_UPLOAD_SIZE_BYTES"]),
        "MEDIASITE_ACCESS_FLUSH_SECONDS": "0.2",
        "MEDIASITE_WORKERS": "2",
        "MEDIASITE_THUMBNAIL_PREGENERATE": "false",
        "MEDIASITE_EMBEDDED_WORKER": "false",
        # Load tests upload hundreds of files from 127.0.0.1: rate limits off unless asked for.
        "MEDIASITE_UPLOAD_RATE_PER_USER": "",
        "MEDIASITE_UPLOAD_RATE_PER_IP": "",
        "PORT": str(port),
        **extra_env,
    }
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "mediasite/gunicorn_conf.py", *extra_args, "mediasite.wsgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/_matrix/client/v1/media/config", timeout=1)
        except urllib.error.HTTPError:
            break  # 401: it answers
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("gunicorn did not start:\n" + log_path.read_text())
            time.sleep(0.1)
    return LiveServer(base, process, log_path)


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def live_server_proc(django_db_setup, django_db_blocker, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("server"))
    yield server
    stop_server(server)


@pytest.fixture
def live(live_server_proc, transactional_db):
    """The running server, with this test's rows committed so the server sees them."""
    return live_server_proc


def pytest_report_header(config):
    db = settings.DATABASES["default"]
    return [f"mediasite: database {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}, "
            f"redis {'on' if os.environ.get('REDIS_URL') else 'off'}, CI={IN_CI}"]


def pytest_collection_modifyitems(config, items):
    # Interop tests start real Matrix software; `make test-interop` runs them (-m interop).
    for item in items:
        if "tests/interop/" in item.nodeid:
            item.add_marker(pytest.mark.interop)
