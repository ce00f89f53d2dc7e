"""Faults injected for real: the S3 server stopped or answering 5xx, a full filesystem."""
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from media_app.models import Blob, Media
from tests.conftest import body_of, download_url, require_service, upload
from tests.storage.conftest import storages_with_s3, use_backend

DATA = os.urandom(64 * 1024)


def temp_files(settings) -> set[str]:
    tmp = Path(settings.MEDIASITE["DATA_DIR"]) / "tmp"
    return {p.name for p in tmp.iterdir()} if tmp.exists() else set()


def assert_unavailable(response):
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "STORAGE_UNAVAILABLE"
    assert response.json()["errcode"] == "M_UNKNOWN"
    assert int(response["Retry-After"]) > 0
    assert "moto" not in response.content.decode() and "127.0.0.1" not in response.content.decode()


@pytest.fixture
def on_private_s3(private_moto, settings):
    settings.STORAGES = storages_with_s3(private_moto.endpoint)
    use_backend(settings, "s3")
    return private_moto


@pytest.mark.django_db
def test_upload_while_s3_is_down_is_a_503_and_leaves_nothing(alice_client, on_private_s3, settings):
    before = temp_files(settings)
    on_private_s3.stop()
    response = alice_client.post("/_matrix/media/v3/upload", data=DATA, content_type="application/octet-stream")
    assert_unavailable(response)
    assert not Blob.objects.exists() and not Media.objects.exists()
    assert temp_files(settings) == before

    on_private_s3.start()  # back (empty, as a fresh server is): uploads work again
    mxc = upload(alice_client, DATA)
    assert body_of(alice_client.get(download_url(mxc))) == DATA


@pytest.mark.django_db
def test_download_while_s3_is_down_is_a_503(alice_client, on_private_s3):
    mxc = upload(alice_client, DATA)
    on_private_s3.stop()
    assert_unavailable(alice_client.get(download_url(mxc)))
    assert_unavailable(alice_client.get(download_url(mxc), HTTP_RANGE="bytes=0-9"))


class _Failing(http.server.BaseHTTPRequestHandler):
    """An "S3" that answers every request with 503 SlowDown / 500."""

    def _fail(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        body = b"<Error><Code>InternalError</Code><Message>boom</Message></Error>"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _fail

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_s3(settings):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.STORAGES = storages_with_s3(f"http://127.0.0.1:{server.server_address[1]}")
    use_backend(settings, "s3")
    yield
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_s3_answering_5xx_is_a_503(alice_client, failing_s3, settings):
    before = temp_files(settings)
    response = alice_client.post("/_matrix/media/v3/upload", data=DATA, content_type="application/octet-stream")
    assert_unavailable(response)
    assert not Blob.objects.exists() and temp_files(settings) == before


@pytest.mark.django_db
def test_migration_to_a_dead_backend_changes_nothing(alice_client, private_moto, settings):
    use_backend(settings, "fs")
    settings.STORAGES = storages_with_s3(private_moto.endpoint)
    mxc = upload(alice_client, DATA)
    private_moto.stop()
    with pytest.raises(CommandError, match="STORAGE_UNAVAILABLE"):
        call_command("migrate_storage", "--to", "s3")
    assert Blob.objects.get().storage == "fs"
    assert body_of(alice_client.get(download_url(mxc))) == DATA


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs mounted for this test (we run as root in CI), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    require_service("a mountable tmpfs (needs root)", result.returncode == 0, result.stderr.strip())
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


@pytest.mark.django_db
def test_full_disk_while_receiving_is_a_507_and_leaves_nothing(alice_client, small_fs, settings):
    """Temp files and media on the full filesystem: the body does not fit while it streams in."""
    settings.MEDIASITE = {**settings.MEDIASITE, "DATA_DIR": str(small_fs), "STORAGE": "fs"}
    settings.STORAGES = {**settings.STORAGES, "fs": {**settings.STORAGES["fs"], "OPTIONS": {
        **settings.STORAGES["fs"]["OPTIONS"], "location": str(small_fs / "media")}}}
    response = alice_client.post("/_matrix/media/v3/upload", data=os.urandom(2 << 20),
                                 content_type="application/octet-stream")
    assert response.status_code == 507, response.content
    assert response.json()["code"] == "STORAGE_FULL"
    assert not Blob.objects.exists() and not Media.objects.exists()
    assert _files_under(small_fs) == []  # the partial temp file is gone too
    mxc = upload(alice_client, DATA)  # space is back: a small upload works
    assert body_of(alice_client.get(download_url(mxc))) == DATA


@pytest.mark.django_db
def test_full_media_filesystem_is_a_507_and_leaves_nothing(alice_client, small_fs, settings):
    """Temp files elsewhere, media on the full filesystem: the copy into place fails."""
    settings.MEDIASITE = {**settings.MEDIASITE, "STORAGE": "fs"}
    settings.STORAGES = {**settings.STORAGES, "fs": {**settings.STORAGES["fs"], "OPTIONS": {
        **settings.STORAGES["fs"]["OPTIONS"], "location": str(small_fs / "media")}}}
    before = temp_files(settings)
    response = alice_client.post("/_matrix/media/v3/upload", data=os.urandom(2 << 20),
                                 content_type="application/octet-stream")
    assert response.status_code == 507, response.content
    assert not Blob.objects.exists() and not Media.objects.exists()
    assert _files_under(small_fs) == [] and temp_files(settings) == before


@pytest.fixture
def media_inserts_fail(transactional_db):
    """PostgreSQL raising its real `disk_full` on media rows (a trigger: filling the server's
    disk would stop every other test); the returned function lifts it."""
    require_service("PostgreSQL", connection.vendor == "postgresql", "the fault is a PL/pgSQL trigger")
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION fault_media_disk_full() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER fault_media BEFORE INSERT ON media_app_media
                FOR EACH ROW EXECUTE FUNCTION fault_media_disk_full();
        """)

    def heal():
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS fault_media ON media_app_media")

    try:
        yield heal
    finally:
        heal()
        with connection.cursor() as cursor:
            cursor.execute("DROP FUNCTION IF EXISTS fault_media_disk_full()")


def test_a_full_postgresql_is_a_507_and_leaves_no_row_and_no_file(alice_client, media_inserts_fail, settings, tmp_path):
    """docs/OPERATIONS.md: PostgreSQL's disk_full answers 507 STORAGE_FULL, and the bytes stored
    for the row that could not be written are removed."""
    settings.MEDIASITE = {**settings.MEDIASITE, "STORAGE": "fs"}
    settings.STORAGES = {**settings.STORAGES, "fs": {**settings.STORAGES["fs"], "OPTIONS": {
        **settings.STORAGES["fs"]["OPTIONS"], "location": str(tmp_path / "media")}}}
    before = temp_files(settings)
    data = os.urandom(64 << 10)
    response = alice_client.post("/_matrix/media/v3/upload", data=data, content_type="application/octet-stream")
    assert response.status_code == 507, response.content
    assert response.json()["code"] == "STORAGE_FULL"
    assert not Blob.objects.exists() and not Media.objects.exists()
    assert not (tmp_path / "media").exists() or _files_under(tmp_path / "media") == []
    assert temp_files(settings) == before
    media_inserts_fail()  # room again: the same bytes are accepted
    mxc = upload(alice_client, data)
    assert body_of(alice_client.get(download_url(mxc))) == data
