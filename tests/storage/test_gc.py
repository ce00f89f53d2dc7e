"""Garbage collection: what goes, what stays, and uploads racing the collector."""
import hashlib
import os
import random
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from media_app import storage
from media_app.models import Blob, Media, Thumbnail
from media_app.services import gc
from media_app.services.blobs import blob_store_and_record, received_from_bytes
from media_app.services.upload import media_upload
from tests.conftest import body_of, download_url, upload
from tests.storage.conftest import use_backend

DATA = random.Random(9).randbytes(30_000)


def age(blob_or_qs, seconds=7 * 24 * 3600):
    qs = blob_or_qs if hasattr(blob_or_qs, "update") else Blob.objects.filter(pk=blob_or_qs.pk)
    qs.update(created_ts=timezone.now() - timedelta(seconds=seconds))


def age_file(alias: str, key: str) -> None:
    old = time.time() - 7 * 24 * 3600
    os.utime(storages[alias].path(key), (old, old))


def orphan(blob: Blob) -> None:
    """Make a blob unreferenced the way a purge would: its media rows are gone."""
    Media.objects.filter(blob=blob).delete()


@pytest.mark.django_db
def test_unreferenced_old_blob_goes_row_and_file(alice_client, backend, capsys):
    upload(alice_client, DATA)
    blob = Blob.objects.get()
    orphan(blob)
    age(blob)
    call_command("collect_garbage")
    assert not Blob.objects.exists()
    assert not storage.backend(backend).exists(blob.key)
    assert "removed 1 blobs" in capsys.readouterr().out


@pytest.mark.django_db
def test_referenced_young_and_quarantined_blobs_stay(alice_client, backend):
    kept = upload(alice_client, DATA)
    age(Blob.objects)
    upload(alice_client, DATA[::-1])
    young = Blob.objects.get(sha256=hashlib.sha256(DATA[::-1]).hexdigest())
    orphan(young)  # unreferenced but inside the grace period
    upload(alice_client, DATA[:1000])
    banned = Blob.objects.get(sha256=hashlib.sha256(DATA[:1000]).hexdigest())
    orphan(banned)
    Blob.objects.filter(pk=banned.pk).update(quarantined=True)  # the row is the ban: kept
    age(banned)
    call_command("collect_garbage")
    assert Blob.objects.count() == 3
    assert body_of(alice_client.get(download_url(kept))) == DATA
    assert storage.backend(backend).exists(young.key) and storage.backend(backend).exists(banned.key)


@pytest.mark.django_db
def test_blobs_held_only_by_thumbnails_stay(alice_client, backend):
    upload(alice_client, DATA)
    source = Blob.objects.get()
    received = received_from_bytes(b"thumbnail bytes")
    try:
        rendition = blob_store_and_record(
            received=received, thumbnail=True,
            record=lambda blob, created: Thumbnail.objects.create(
                source=source, width=32, height=32, method="crop", media_type="image/png",
                blob=blob, rendered_width=32, rendered_height=32).blob,
        )
    finally:
        received.discard()
    orphan(source)  # only Thumbnail.source refers to it now
    age(Blob.objects)
    call_command("collect_garbage")
    assert Blob.objects.count() == 2
    Thumbnail.objects.all().delete()
    call_command("collect_garbage")
    assert not Blob.objects.exists()
    assert not storage.backend(backend).exists(source.key) and not storage.backend(backend).exists(rendition.key)


@pytest.mark.django_db
def test_files_without_rows_after_grace(alice_client, settings):
    use_backend(settings, "fs")
    live = upload(alice_client, DATA)
    live_blob = Blob.objects.get()
    stray_sha = hashlib.sha256(b"stray").hexdigest()
    young_sha = hashlib.sha256(b"young").hexdigest()
    fs = storages["fs"]
    for sha, body in ((stray_sha, b"stray"), (young_sha, b"young")):
        path = Path(fs.path(storage.blob_key(sha)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    debris = Path(fs.path("ab/cd/whatever.123.part"))
    debris.parent.mkdir(parents=True, exist_ok=True)
    debris.write_bytes(b"half")
    temp = storage.temp_dir() / "upload-abandoned"
    temp.write_bytes(b"x")
    for key in (storage.blob_key(stray_sha), live_blob.key, "ab/cd/whatever.123.part"):
        age_file("fs", key)
    os.utime(temp, (time.time() - 7 * 24 * 3600,) * 2)

    report = gc.blobs_collect_garbage()

    assert not storage.backend("fs").exists(storage.blob_key(stray_sha))
    assert storage.backend("fs").exists(storage.blob_key(young_sha))  # inside the grace period
    assert not debris.exists() and not temp.exists()
    assert body_of(alice_client.get(download_url(live))) == DATA  # old but owned by a row
    assert report.orphan_files_removed == 2 and report.temp_files_removed == 1
    assert not Blob.objects.exclude(pk=live_blob.pk).exists()  # no placeholder left behind


@pytest.mark.django_db
def test_stray_copy_on_another_backend_goes(alice_client, s3, settings):
    use_backend(settings, "s3")
    mxc = upload(alice_client, DATA)
    blob = Blob.objects.get()
    storage.copy_blob(blob.key, source="s3", target="fs")  # e.g. left by an interrupted move
    age_file("fs", blob.key)
    gc.blobs_collect_garbage()
    assert not storage.backend("fs").exists(blob.key)
    assert body_of(alice_client.get(download_url(mxc))) == DATA


@pytest.mark.django_db
def test_upload_reuses_a_doomed_blob_and_restores_its_bytes(alice_client, backend):
    """The collector doomed the blob and (crash) deleted its file; an upload of the same bytes
    arrives before the collector finishes: the upload stores the bytes again and keeps the row."""
    upload(alice_client, DATA)
    blob = Blob.objects.get()
    orphan(blob)
    age(blob)
    assert gc._doom(blob.pk)
    storage.backend(backend).delete(blob.key)  # the collector got this far, then died

    mxc = upload(alice_client, DATA)

    blob.refresh_from_db()
    assert not blob.gc_pending
    assert gc._remove(blob.pk) is None  # reused: the collector lets go
    call_command("collect_garbage")
    assert body_of(alice_client.get(download_url(mxc))) == DATA


def _race_round(user, backend: str, data: bytes) -> tuple[bool, str]:
    """One round: an old unreferenced blob; an upload of the same bytes and a collection start
    together. Returns (upload happened, a problem description or "")."""
    errors = []
    barrier = threading.Barrier(2)
    result = {}

    def do_upload():
        try:
            barrier.wait()
            result["media"] = media_upload(uploader=user, stream=_Reader(data), declared_length=len(data),
                                           upload_name=None)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            connection.close()

    def do_collect():
        try:
            barrier.wait()
            gc.blobs_collect_garbage(grace_seconds=0)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=do_upload), threading.Thread(target=do_collect)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        return False, "; ".join(errors)
    media = Media.objects.select_related("blob").get(pk=result["media"].pk)
    blob = media.blob
    if blob is None:
        return True, "media without blob"
    if blob.gc_pending:
        return True, "referenced blob left doomed"
    if storage.backend(blob.storage).hash(blob.key) != (blob.sha256, blob.size):
        return True, "blob bytes lost"
    return True, ""


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


@pytest.mark.parametrize("backend_name", ["fs", "s3"])
def test_collector_racing_uploads_loses_no_blob(transactional_db, alice, settings, request, backend_name):
    if backend_name == "s3":
        request.getfixturevalue("s3")
    use_backend(settings, backend_name)
    problems = []
    for round_number in range(25):
        data = DATA + round_number.to_bytes(2, "big")
        # An old, unreferenced blob of the same content, which the collector will go after.
        media = media_upload(uploader=alice, stream=_Reader(data), declared_length=len(data), upload_name=None)
        Media.objects.filter(pk=media.pk).delete()
        age(Blob.objects.filter(sha256=hashlib.sha256(data).hexdigest()))
        _happened, problem = _race_round(alice, backend_name, data)
        if problem:
            problems.append((round_number, problem))
    assert problems == []
    # And whatever the interleavings, every surviving row has its bytes.
    for blob in Blob.objects.all():
        assert storage.backend(blob.storage).hash(blob.key) == (blob.sha256, blob.size)
