"""Background tasks on a database that fails: PostgreSQL raising its real `disk_full` error (a
trigger, since filling the server's disk would stop every other test) on thumbnail rows.

Pre-generation retries with backoff, and no attempt leaves a thumbnail file without its row.
"""
import os

import pytest
from django.db import OperationalError, connection

from media_app import storage
from media_app.storage import tempfiles
from media_app.conf import media_settings
from media_app.models import Blob, Media, Thumbnail
from media_app.tasks.thumbnails import RETRY, pregenerate_thumbnails
from tests.conftest import jpeg_bytes, require_service, upload


@pytest.fixture
def thumbnail_inserts_fail(db):
    require_service("PostgreSQL", connection.vendor == "postgresql", "the fault is a PL/pgSQL trigger")
    with connection.cursor() as cursor:
        # A sequence counts the attempts: nextval() is not undone by the rollback that follows.
        cursor.execute("""
            CREATE SEQUENCE fault_attempts;
            CREATE FUNCTION fault_disk_full() RETURNS trigger AS $$
            BEGIN
                PERFORM nextval('fault_attempts');
                RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER fault_thumbnail BEFORE INSERT ON media_app_thumbnail
                FOR EACH ROW EXECUTE FUNCTION fault_disk_full();
        """)

    def attempts() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT last_value, is_called FROM fault_attempts")
            value, called = cursor.fetchone()
            return value if called else 0

    def heal() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER fault_thumbnail ON media_app_thumbnail")

    yield attempts, heal


def test_pregeneration_retries_a_full_database_and_leaves_no_file_without_a_row(
        alice_client, thumbnail_inserts_fail, settings, monkeypatch, tmp_path):
    from mediasite.celery import app

    fs = settings.STORAGES["fs"]  # a media directory of this test's own, to list
    settings.STORAGES = {**settings.STORAGES, "fs": {**fs, "OPTIONS": {**fs["OPTIONS"], "location": str(tmp_path)}}}
    settings.MEDIASITE = {**settings.MEDIASITE, "STORAGE": "fs", "THUMBNAIL_STORAGE": "fs"}

    # Eager retries re-run inside apply() only when failures are not propagated at once.
    monkeypatch.setitem(app.conf, "task_eager_propagates", False)
    attempts, heal = thumbnail_inserts_fail
    mxc = upload(alice_client, jpeg_bytes(1200, 900))
    media = Media.objects.get(media_id=mxc.split("/")[1])
    source_key = media.blob.key

    # apply(): run here, retries included (eagerly, without the backoff's waits).
    result = pregenerate_thumbnails.apply(args=[media.pk], throw=False)

    assert result.state == "FAILURE" and isinstance(result.result, OperationalError)

    assert attempts() == RETRY["max_retries"] + 1  # the first try and every retry
    assert not Thumbnail.objects.exists()
    assert list(Blob.objects.values_list("key", flat=True)) == [source_key]  # only the upload
    stored = {f.key for f in storage.backend("fs").list_files()}
    assert stored == {source_key}, "a thumbnail file was left without its row"
    assert not any(tempfiles._owner_pid(p.name) == os.getpid() for p in storage.temp_dir().iterdir())

    heal()
    assert pregenerate_thumbnails.apply(args=[media.pk]).get() == len(media_settings.THUMBNAIL_SIZES)
    for thumb in Thumbnail.objects.select_related("blob"):
        assert storage.backend(thumb.blob.storage).exists(thumb.blob.key)


@pytest.mark.parametrize("task_name", ["scrub_blobs", "collect_garbage"])
def test_scrub_and_garbage_collection_retry_database_errors(db, monkeypatch, task_name):
    """docs/OPERATIONS.md: scrub and garbage collection retry database errors (a database
    restarting or locked), as they retry storage outages, instead of failing the run."""
    from media_app.tasks import maintenance
    from mediasite.celery import app

    monkeypatch.setitem(app.conf, "task_eager_propagates", False)
    service = {"scrub_blobs": "blobs_verify", "collect_garbage": "blobs_collect_garbage"}[task_name]
    real, calls = getattr(maintenance, service), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("the database system is starting up")
        return real(*args, **kwargs)

    monkeypatch.setattr(maintenance, service, flaky)
    result = getattr(maintenance, task_name).apply(throw=False)
    assert result.successful(), result.traceback
    assert len(calls) == 3
