"""The preview (purge_media --dry-run, the admin page) equals what the run then does, and the
bytes it announces are the bytes that leave the disk and the bucket."""
import pytest

from media_app.models import Blob, MediaStatus
from media_app.retention.services import Kind, retention_policy, retention_preview, retention_run
from media_app.services.blobs import blob_store_and_record, received_from_bytes
from media_app.state import Actor, create
from tests.retention.conftest import DAY, NOW, local_media, png, remote_media, stored_bytes, thumbnail

pytestmark = pytest.mark.django_db


def _mixed_dataset(alice):
    old, fresh = NOW - 200 * DAY, NOW - DAY
    for seed in range(3):  # plain expired remote media, with thumbnails
        media = remote_media(png(100 + seed, (300, 200)), created=old)
        thumbnail(media, 32, 32, "crop")
        thumbnail(media, 320, 240, "scale", last_access=fresh)
    shared = png(110, (120, 90))  # two expired remote copies of one content: one blob
    first = remote_media(shared, created=old)
    remote_media(shared, created=old, server="other.example")
    thumbnail(first)
    with_local = png(111)  # the same content uploaded here: freed nothing
    local_media(with_local, created=fresh)
    remote_media(with_local, created=old)
    still_used = png(112)  # an expired and a fresh remote copy: the blob stays
    remote_media(still_used, created=old)
    remote_media(still_used, created=fresh, server="third.example")
    remote_media(png(113), created=old, protected=True)
    remote_media(png(114), created=fresh)
    mine = local_media(png(115, (400, 400)), created=old, last_access=fresh)
    thumbnail(mine, 96, 96, "crop", created=old)  # never served: expires
    thumbnail(mine, 32, 32, "crop", created=old, last_access=fresh)
    local_media(png(116), created=old)  # proposed: the local lifetime is on
    create(to=MediaStatus.PENDING, actor=Actor.UPLOADER, server_name="test.local", media_id="gone",
           uploader=alice, unused_expires_at=NOW - DAY)
    # A blob a killed run doomed and did not remove.
    received = received_from_bytes(b"left behind by a kill")
    try:
        blob = blob_store_and_record(received=received, record=lambda blob, created: blob)
    finally:
        received.discard()
    Blob.objects.filter(pk=blob.pk).update(gc_pending=True)


def test_dry_run_equals_the_real_run_and_the_bytes_leave_the_backend(backend, lifetimes, alice):
    """Run on the filesystem and on S3 (moto): bytes measured in the directory and the bucket."""
    lifetimes(remote_media_lifetime=90, thumbnail_lifetime=30, local_media_lifetime=100)
    _mixed_dataset(alice)
    policy = retention_policy(now=NOW)
    preview = retention_preview(policy=policy)
    before = stored_bytes()

    report = retention_run(policy=policy)

    assert report.as_dict() == preview.as_dict()
    assert before - stored_bytes() == preview.freed_bytes
    # Everything was counted: 3 plain + 2 sharing + 1 with local + 1 still used.
    assert preview[Kind.REMOTE_MEDIA].count == 7
    assert preview[Kind.REMOTE_THUMBNAILS].count == 7
    assert preview[Kind.THUMBNAILS].count == 1
    assert preview[Kind.RESERVATIONS].count == 1
    assert preview[Kind.INTERRUPTED].count == 1
    assert preview[Kind.LOCAL_PROPOSALS].count == 2  # both old local uploads
    assert preview[Kind.REMOTE_MEDIA].bytes > 0 and preview[Kind.THUMBNAILS].bytes > 0

    after = retention_preview(policy=policy)
    assert all(after[kind].count == 0 for kind in Kind.ORDER), after.as_dict()
