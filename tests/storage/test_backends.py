"""The same upload / download / dedup / Range behaviour on the filesystem and on S3 (moto)."""
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.storage import storages

from media_app import storage
from media_app.models import Blob, Media
from tests.conftest import body_of, download_url, upload
from tests.storage.conftest import storages_with_s3, use_backend

DATA = random.Random(3).randbytes(300_000)
ROOT = Path(__file__).resolve().parents[2]


def stored_bytes(alias: str, key: str) -> bytes:
    """The bytes as the backend itself holds them, read without Mediasite's code."""
    if alias == "fs":
        return Path(storages["fs"].path(key)).read_bytes()
    backend = storages[alias]
    return backend.connection.meta.client.get_object(Bucket=backend.bucket_name, Key=key)["Body"].read()


@pytest.mark.django_db
def test_upload_lands_on_the_configured_backend(alice_client, backend):
    mxc = upload(alice_client, DATA, filename="data.bin")
    blob = Blob.objects.get()
    assert blob.storage == backend
    assert blob.key == storage.blob_key(hashlib.sha256(DATA).hexdigest())
    assert stored_bytes(backend, blob.key) == DATA
    assert Media.objects.get(media_id=mxc.split("/")[1]).blob == blob
    if backend == "s3":  # nothing of it on local disk
        assert not Path(storages["fs"].path(blob.key)).exists()


@pytest.mark.django_db
def test_download_whole_and_head(alice_client, backend):
    mxc = upload(alice_client, DATA, filename="data.bin")
    response = alice_client.get(download_url(mxc))
    assert response.status_code == 200
    assert body_of(response) == DATA
    assert response["Content-Length"] == str(len(DATA))
    head = alice_client.head(download_url(mxc))
    assert head.status_code == 200 and head["Content-Length"] == str(len(DATA))


@pytest.mark.django_db
@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-0", 0, 0),
    ("bytes=1000-1999", 1000, 1999),
    ("bytes=299990-", 299990, 299999),
    ("bytes=-25", 299975, 299999),
])
def test_ranges(alice_client, backend, header, start, end):
    mxc = upload(alice_client, DATA)
    response = alice_client.get(download_url(mxc), HTTP_RANGE=header)
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert body_of(response) == DATA[start:end + 1]


@pytest.mark.django_db
def test_unsatisfiable_range_and_etag(alice_client, backend):
    mxc = upload(alice_client, DATA)
    assert alice_client.get(download_url(mxc), HTTP_RANGE="bytes=400000-").status_code == 416
    etag = alice_client.head(download_url(mxc))["ETag"]
    assert alice_client.get(download_url(mxc), HTTP_IF_NONE_MATCH=etag).status_code == 304


@pytest.mark.django_db
def test_dedup_stores_once(alice_client, backend):
    first = upload(alice_client, DATA, filename="a.bin")
    second = upload(alice_client, DATA, filename="b.bin")
    assert first != second
    assert Blob.objects.count() == 1 and Media.objects.count() == 2
    assert body_of(alice_client.get(download_url(second))) == DATA
    assert [f.key for f in storage.backend(backend).list_files()] == [Blob.objects.get().key]


@pytest.mark.django_db
def test_empty_file(alice_client, backend):
    mxc = upload(alice_client, b"")
    response = alice_client.get(download_url(mxc))
    assert response.status_code == 200 and body_of(response) == b""


@pytest.mark.django_db
def test_both_backends_serve_at_once_and_dedup_across_them(alice_client, s3, settings):
    """Blobs record their backend: switching the backend for new blobs strands nothing."""
    use_backend(settings, "fs")
    on_fs = upload(alice_client, DATA)
    use_backend(settings, "s3")
    other = DATA[::-1]
    on_s3 = upload(alice_client, other)
    again = upload(alice_client, DATA)  # same content as the fs blob: reused, not re-stored
    assert sorted(Blob.objects.values_list("storage", flat=True)) == ["fs", "s3"]
    assert Blob.objects.count() == 2
    assert body_of(alice_client.get(download_url(on_fs))) == DATA
    assert body_of(alice_client.get(download_url(again))) == DATA
    assert body_of(alice_client.get(download_url(on_s3))) == other


def test_thumbnails_can_have_their_own_backend(settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "STORAGE": "fs", "THUMBNAIL_STORAGE": "s3"}
    assert storage.backend_for_new_blobs() == "fs"
    assert storage.backend_for_new_blobs(thumbnail=True) == "s3"


@pytest.mark.django_db
def test_s3_upload_is_multipart_and_download_is_a_ranged_get(alice_client, s3, settings):
    """What goes over the wire: parts of the configured size, and GetObject with a Range."""
    settings.STORAGES = storages_with_s3(s3.server.endpoint, s3.bucket, part_size=5 << 20, concurrency=2)
    use_backend(settings, "s3")
    events = storages["s3"].connection.meta.client.meta.events
    sent = []

    def record(request, **kwargs):
        sent.append((kwargs["event_name"].rsplit(".", 1)[-1], request.headers.get("Range")))

    events.register("before-send.s3", record)
    try:
        big = os.urandom(12 << 20)
        mxc = upload(alice_client, big)
        assert [name for name, _ in sent].count("UploadPart") == 3  # 5 + 5 + 2 MiB
        assert "PutObject" not in [name for name, _ in sent]
        sent.clear()
        response = alice_client.get(download_url(mxc), HTTP_RANGE="bytes=100-199")
        assert body_of(response) == big[100:200]
        assert ("GetObject", b"bytes=100-199") in sent or ("GetObject", "bytes=100-199") in sent
    finally:
        events.unregister("before-send.s3", record)


@pytest.mark.django_db
def test_s3_download_streams_without_reading_ahead(alice_client, s3, settings):
    use_backend(settings, "s3")
    upload(alice_client, DATA)
    stream = storage.backend("s3").open_range(Blob.objects.get().key, 0, len(DATA))
    assert stream.read(1000) == DATA[:1000]
    # The remote body is read as it arrives: after one read the rest is still on the wire.
    assert stream._body._amount_read == 1000
    stream.close()


@pytest.mark.django_db
def test_each_alias_gets_its_own_backend_class_once(s3):
    fs_backend, s3_backend = storage.backend("fs"), storage.backend("s3")
    assert type(fs_backend).__name__ == "FileSystemBackend" and fs_backend.alias == "fs"
    assert type(s3_backend).__name__ == "S3Backend" and s3_backend.alias == "s3"
    assert storage.backend("fs") is fs_backend and storage.backend("s3") is s3_backend


def test_a_process_on_local_disks_never_imports_boto3(tmp_path):
    """boto3 costs each web process a tenth of a second and megabytes of memory to import; a
    process that stores on the filesystem stores, reads and deletes a blob, and fails to read a
    missing one, without it."""
    script = """
import sys, django
django.setup()
from media_app import storage
store = storage.backend(storage.backend_for_new_blobs())
source = sys.argv[1]
open(source, "wb").write(b"bytes")
store.put("ab/cd/key", source)
assert store.open("ab/cd/key").read() == b"bytes"
store.delete("ab/cd/key")
from media_app import errors
try:
    store.open("ab/cd/key")  # a failure goes through the error translation, which knows boto's errors too
except errors.BlobMissing:
    pass
print(type(store).__name__, sorted(m for m in ("boto3", "botocore", "storages.backends.s3") if m in sys.modules))
"""
    # An operator who stores on local disks configures no bucket (CI's environment has one).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDIASITE_", "REDIS_"))}
    env = {**env, "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
           "MEDIASITE_DATA_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "MEDIASITE_STORAGE": "fs", "MEDIASITE_THUMBNAIL_STORAGE": "fs", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "source")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[-2] == "FileSystemBackend []"


@pytest.mark.django_db
def test_every_backend_offers_the_same_operations(backend, tmp_path):
    """put / exists / open_range / open / list / hash / delete behave alike on both backends."""
    store = storage.backend(backend)
    key = storage.blob_key(hashlib.sha256(DATA).hexdigest())
    source = tmp_path / "source"
    source.write_bytes(DATA)
    assert not store.exists(key)
    store.put(key, str(source), keep_source=True)
    assert source.exists() and store.exists(key)
    assert stored_bytes(backend, key) == DATA
    window = store.open_range(key, 10, 20)
    assert window.read() == DATA[10:30]
    window.close()
    with store.open(key) as fh:
        fh.seek(100)
        assert fh.read(5) == DATA[100:105]
    assert [(f.key, f.size) for f in store.list_files()] == [(key, len(DATA))]
    assert store.hash(key) == (hashlib.sha256(DATA).hexdigest(), len(DATA))
    store.delete(key)
    store.delete(key)  # already gone: not an error
    assert not store.exists(key) and list(store.list_files()) == []


def test_free_space_is_the_disk_for_files_and_unbounded_for_buckets(s3):
    import shutil

    free = storage.backend("fs").free_space()
    # The disk is shared with other work, so compare with its size rather than its free space.
    assert isinstance(free, int) and 0 < free <= shutil.disk_usage(storages["fs"].location).total
    assert storage.backend("s3").free_space() is None


@pytest.mark.django_db
def test_blob_on_an_unconfigured_backend_is_503_logged_once(alice_client, settings, caplog):
    """An operator dropped a backend's settings while blobs still live there."""
    from tests.conftest import png_bytes

    mxc = upload(alice_client, png_bytes(), content_type="image/png")
    Blob.objects.update(storage="retired")
    storage._unconfigured_reported.discard("retired")
    caplog.set_level("INFO")
    thumb_url = download_url(mxc).replace("/download/", "/thumbnail/") + "?width=32&height=32"
    for url in (download_url(mxc), download_url(mxc), thumb_url):
        response = alice_client.get(url)
        assert response.status_code == 503, response.content
        assert response.json()["code"] == "STORAGE_UNAVAILABLE"
        assert "retired" not in response.content.decode()
    # Django's request log notes every 5xx in one line; nothing carries a traceback.
    assert not any(r.exc_info for r in caplog.records)
    ours = [r for r in caplog.records if r.levelname == "ERROR" and r.name.startswith("media_app")]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert "'retired'" in ours[0].getMessage() and "STORAGES" in ours[0].getMessage()


@pytest.mark.django_db
def test_system_check_names_an_unconfigured_backend_that_holds_blobs(alice_client):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    upload(alice_client, DATA)
    call_command("check", databases=["default"])  # every blob on a configured backend: fine
    Blob.objects.update(storage="retired")
    with pytest.raises(SystemCheckError, match=r"mediasite.E001.*'retired'.*settings.STORAGES"):
        call_command("check", databases=["default"])
