"""`migrate_storage`: online fs → s3 moves, verified, resumable, under live downloads."""
import hashlib
import http.client
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command

from media_app import storage
from media_app.models import Blob, BlobIntegrity, Thumbnail
from media_app.services.blobs import blob_store_and_record, received_from_bytes
from tests.conftest import ROOT, _database_url, body_of, download_url, upload
from tests.storage.conftest import BUCKET, storages_with_s3, use_backend


def contents(n: int, size: int = 20_000, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(n)]


def fs_content_files() -> set[str]:
    return {f.key for f in storage.backend("fs").list_files() if storage.sha256_of_key(f.key)}


def add_thumbnail(source: Blob, data: bytes) -> Blob:
    """A rendition stored the way the thumbnail service stores one (its bytes are a Blob)."""
    received = received_from_bytes(data)
    try:
        return blob_store_and_record(
            received=received, thumbnail=True,
            record=lambda blob, created: Thumbnail.objects.create(
                source=source, width=32, height=32, method="crop", media_type="image/png",
                blob=blob, rendered_width=32, rendered_height=32,
            ).blob,
        )
    finally:
        received.discard()


def assert_all_on_s3_once(s3_keys: set[str]) -> None:
    """The end state: every row on s3, its object intact, no second copy anywhere."""
    blobs = list(Blob.objects.all())
    assert {b.storage for b in blobs} == {"s3"}
    assert all(b.previous_storage == "" for b in blobs)
    assert s3_keys == {b.key for b in blobs}
    # (Checked per key: a shared media directory may hold other tests' files.)
    assert not any(storage.backend("fs").exists(b.key) for b in blobs)
    for b in blobs:
        assert storage.backend("s3").hash(b.key) == (b.sha256, b.size)


@pytest.mark.django_db
def test_moves_every_blob_verified_with_progress(alice_client, s3, settings, capsys):
    use_backend(settings, "fs")
    datas = contents(5)
    ids = [upload(alice_client, d) for d in datas]
    thumb = add_thumbnail(Blob.objects.first(), b"rendered-thumbnail-bytes")
    assert thumb.storage == "fs" and len(fs_content_files()) == 6

    call_command("migrate_storage", "--to", "s3", "--from", "fs")

    assert_all_on_s3_once(s3.keys())
    for mxc, data in zip(ids, datas):
        assert body_of(alice_client.get(download_url(mxc))) == data
    out = capsys.readouterr()
    assert "6/6 blobs" in out.err and "MiB" in out.err  # the progress bar
    assert "moved 6 blobs" in out.out


@pytest.mark.django_db
def test_limit_moves_only_that_many(alice_client, s3, settings):
    use_backend(settings, "fs")
    for data in contents(4):
        upload(alice_client, data)
    call_command("migrate_storage", "--to", "s3", "--limit", "1")
    assert Blob.objects.filter(storage="s3").count() == 1
    call_command("migrate_storage", "--to", "s3", "--limit", "2")
    assert Blob.objects.filter(storage="s3").count() == 3
    assert len(s3.keys()) == 3 and len(fs_content_files()) == 1


@pytest.mark.django_db
def test_back_from_s3_to_fs(alice_client, s3, settings):
    use_backend(settings, "s3")
    data = contents(1)[0]
    mxc = upload(alice_client, data)
    call_command("migrate_storage", "--to", "fs")
    blob = Blob.objects.get()
    assert blob.storage == "fs" and s3.keys() == set()
    assert Path(storages["fs"].path(blob.key)).read_bytes() == data
    assert body_of(alice_client.get(download_url(mxc))) == data


@pytest.mark.django_db
def test_resumes_a_run_killed_between_switch_and_delete(alice_client, s3, settings):
    use_backend(settings, "fs")
    upload(alice_client, contents(1)[0])
    blob = Blob.objects.get()
    # The state a kill right after the switch commits leaves: both copies, row on s3.
    storage.copy_blob(blob.key, source="fs", target="s3")
    Blob.objects.update(storage="s3", previous_storage="fs")
    call_command("migrate_storage", "--to", "s3")
    assert_all_on_s3_once(s3.keys())


@pytest.mark.django_db
def test_resumes_a_run_killed_between_copy_and_switch(alice_client, s3, settings):
    use_backend(settings, "fs")
    upload(alice_client, contents(1)[0])
    blob = Blob.objects.get()
    storage.copy_blob(blob.key, source="fs", target="s3")  # copied, row not yet switched
    call_command("migrate_storage", "--to", "s3")
    assert_all_on_s3_once(s3.keys())


@pytest.mark.django_db
def test_a_corrupt_source_is_not_switched(alice_client, s3, settings):
    use_backend(settings, "fs")
    good, bad = contents(2)
    upload(alice_client, good)
    upload(alice_client, bad)
    bad_blob = Blob.objects.get(sha256=hashlib.sha256(bad).hexdigest())
    Path(storages["fs"].path(bad_blob.key)).write_bytes(b"bit rot" + bad[7:])
    with pytest.raises(CommandError, match="1 blobs could not be moved"):
        call_command("migrate_storage", "--to", "s3")
    bad_blob.refresh_from_db()
    assert bad_blob.storage == "fs"  # left where it is, for an operator to look at
    assert s3.keys() == {Blob.objects.get(sha256=hashlib.sha256(good).hexdigest()).key}


@pytest.mark.django_db
def test_unknown_backend_is_refused(s3):
    with pytest.raises(CommandError, match="not a configured"):
        call_command("migrate_storage", "--to", "nowhere")


def test_killed_mid_run_and_resumed(transactional_db, shared_media_dir, alice_client, s3, settings, tmp_path):
    """SIGKILL a real `manage.py migrate_storage` part-way, run it again: nothing lost, no
    blob left with two copies."""
    use_backend(settings, "fs")
    datas = contents(40, size=256 * 1024, seed=7)
    for data in datas:
        upload(alice_client, data)
    env = {
        **os.environ,
        **s3.server.env(),
        "AWS_STORAGE_BUCKET_NAME": s3.bucket,
        "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
        "DATABASE_URL": _database_url(),
        "MEDIASITE_DATA_DIR": settings.MEDIASITE["DATA_DIR"],
    }
    log = tmp_path / "migrate.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "manage.py", "migrate_storage", "--to", "s3"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while Blob.objects.filter(storage="s3").count() < 5:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert Blob.objects.filter(storage="fs").exists()  # it really was cut off part-way

    call_command("migrate_storage", "--to", "s3")

    assert_all_on_s3_once(s3.keys())
    assert sorted(b.sha256 for b in Blob.objects.all()) == sorted(hashlib.sha256(d).hexdigest() for d in datas)


def test_zero_failed_downloads_while_migrating(live_s3, transactional_db, alice_client, alice_token,
                                               moto_server, settings):
    """gunicorn serves every blob over and over while they move from fs to s3 under it."""
    settings.STORAGES = storages_with_s3(moto_server.endpoint, BUCKET)
    use_backend(settings, "fs")
    datas = contents(30, size=64 * 1024, seed=11)
    paths = [upload(alice_client, d) for d in datas]
    stop = threading.Event()
    failures, served = [], [0]
    lock = threading.Lock()

    def downloader(offset: int):
        conn = http.client.HTTPConnection(*live_s3.host_port, timeout=30)
        i = offset
        while not stop.is_set():
            index = i % len(paths)
            i += 1
            ranged = i % 3 == 0
            headers = {"Authorization": f"Bearer {alice_token}"}
            if ranged:
                headers["Range"] = "bytes=1000-1999"
            try:
                conn.request("GET", download_url(paths[index]), headers=headers)
                response = conn.getresponse()
                body = response.read()
                expected = datas[index][1000:2000] if ranged else datas[index]
                ok = response.status == (206 if ranged else 200) and body == expected
            except (OSError, http.client.HTTPException) as exc:
                ok, body = False, repr(exc).encode()
                conn.close()
                conn = http.client.HTTPConnection(*live_s3.host_port, timeout=30)
            with lock:
                served[0] += 1
                if not ok:
                    failures.append((index, body[:200]))
        conn.close()

    threads = [threading.Thread(target=downloader, args=(n * 7,)) for n in range(4)]
    for t in threads:
        t.start()
    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 60
        while served[0] < count and time.monotonic() < deadline:
            time.sleep(0.01)

    try:
        wait_for(20)  # downloads are flowing before the migration starts
        call_command("migrate_storage", "--to", "s3", "--from", "fs")
        during = served[0]
        wait_for(during + 20)  # and keep flowing, from s3, afterwards
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert served[0] >= during + 20 and during >= 20
    assert set(Blob.objects.values_list("storage", flat=True)) == {"s3"}
    call_command("verify_media")  # every blob verified where it now lives
    assert set(Blob.objects.values_list("integrity", flat=True)) == {BlobIntegrity.OK}


@pytest.mark.django_db
@pytest.mark.parametrize("source,target", [("fs", "s3"), ("s3", "fs")])
def test_a_request_that_read_the_row_before_the_move_is_still_served(alice_client, s3, settings, rf,
                                                                      source, target):
    """The window the live test above can only hit by luck, made certain: the row is read,
    the blob moves (old copy deleted), then the bytes are opened."""
    from media_app.api.serving import serve_media
    from media_app.services.download import media_get_servable

    use_backend(settings, source)
    data = contents(1)[0]
    server_name, media_id = upload(alice_client, data).split("/")
    stale = media_get_servable(server_name=server_name, media_id=media_id)
    call_command("migrate_storage", "--to", target)
    assert not storage.backend(source).exists(stale.blob.key)
    response = serve_media(rf.get("/"), stale)
    assert response.status_code == 200 and body_of(response) == data
