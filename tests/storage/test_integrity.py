"""verify_media and the scrub task: re-hash, flag in the admin, exit non-zero on damage."""
import random

import pytest
from django.core.management import CommandError, call_command

from media_app import storage
from media_app.models import Blob, BlobIntegrity, Thumbnail
from media_app.services.blobs import blob_store_and_record, received_from_bytes
from media_app.tasks.maintenance import scrub_blobs
from tests.conftest import body_of, download_url, upload

rng = random.Random(21)
GOOD, ROTTEN, GONE = (rng.randbytes(40_000) for _ in range(3))


def overwrite(alias: str, key: str, data: bytes) -> None:
    """Damage the stored bytes behind Mediasite's back, on the backend itself."""
    from django.core.files.storage import storages

    backend = storages[alias]
    if alias == "fs":
        with open(backend.path(key), "wb") as fh:
            fh.write(data)
    else:
        backend.connection.meta.client.put_object(Bucket=backend.bucket_name, Key=key, Body=data)


def blob_of(data: bytes) -> Blob:
    import hashlib

    return Blob.objects.get(sha256=hashlib.sha256(data).hexdigest())


@pytest.fixture
def damaged(alice_client, backend):
    ids = {name: upload(alice_client, data) for name, data in (("good", GOOD), ("rotten", ROTTEN), ("gone", GONE))}
    overwrite(backend, blob_of(ROTTEN).key, ROTTEN[:-1] + b"\0")
    storage.backend(backend).delete(blob_of(GONE).key)
    return ids


@pytest.mark.django_db
def test_reports_and_flags_missing_and_corrupt(damaged, backend, capsys, admin_client):
    with pytest.raises(CommandError) as raised:
        call_command("verify_media")
    assert raised.value.returncode == 1
    out = capsys.readouterr()
    assert f"CORRUPT media blob {blob_of(ROTTEN).sha256} on {backend}" in out.out
    assert f"MISSING media blob {blob_of(GONE).sha256} on {backend}" in out.out
    assert "3/3 blobs" in out.err  # progress
    assert blob_of(GOOD).integrity == BlobIntegrity.OK and blob_of(GOOD).verified_ts is not None
    assert blob_of(ROTTEN).integrity == BlobIntegrity.CORRUPT
    assert blob_of(GONE).integrity == BlobIntegrity.MISSING
    # Moderators find them in the admin by filtering on the flag.
    page = admin_client.get("/admin/media_app/blob/?integrity__exact=corrupt").content.decode()
    assert blob_of(ROTTEN).sha256 in page and blob_of(GOOD).sha256 not in page


@pytest.mark.django_db
def test_clean_store_exits_zero(alice_client, backend, capsys):
    upload(alice_client, GOOD)
    call_command("verify_media")
    assert "0 missing or corrupt" in capsys.readouterr().out


@pytest.mark.django_db
def test_thumbnail_bytes_are_checked_too(alice_client, backend, capsys):
    upload(alice_client, GOOD)
    received = received_from_bytes(b"rendered thumbnail")
    try:
        rendition = blob_store_and_record(
            received=received, thumbnail=True,
            record=lambda blob, created: Thumbnail.objects.create(
                source=blob_of(GOOD), width=32, height=32, method="crop", media_type="image/png",
                blob=blob, rendered_width=32, rendered_height=32).blob,
        )
    finally:
        received.discard()
    overwrite(backend, rendition.key, b"rendered thumbnaiL")
    with pytest.raises(CommandError):
        call_command("verify_media")
    assert f"CORRUPT thumbnail blob {rendition.sha256}" in capsys.readouterr().out


@pytest.mark.django_db
def test_sample_checks_the_least_recently_verified_first(damaged, backend):
    call_command("verify_media", "--sample", "1")  # the oldest-never-verified: GOOD (first pk)
    assert Blob.objects.exclude(verified_ts=None).count() == 1
    with pytest.raises(CommandError):
        call_command("verify_media", "--sample", "2")  # now the two never verified
    assert Blob.objects.filter(verified_ts=None).count() == 0
    with pytest.raises(CommandError) as usage:
        call_command("verify_media", "--sample", "0")
    assert usage.value.returncode == 2  # nothing checked: not the "damage found" status


@pytest.mark.django_db
def test_scheduled_scrub_flags_without_raising(damaged, backend):
    assert scrub_blobs() == {"checked": 3, "bad": 2}
    assert blob_of(ROTTEN).integrity == BlobIntegrity.CORRUPT


@pytest.mark.django_db
def test_an_upload_of_the_same_bytes_heals_a_flagged_blob(damaged, alice_client, backend):
    scrub_blobs()
    mxc = upload(alice_client, GONE)
    assert body_of(alice_client.get(download_url(mxc))) == GONE
    assert storage.backend(backend).hash(blob_of(GONE).key)[0] == blob_of(GONE).sha256
    call_command("verify_media", "--sample", "1")  # GONE was just reset to unchecked
    assert blob_of(GONE).integrity == BlobIntegrity.OK
