"""Retention jobs: lifetimes at their boundaries, what is never touched, events, idempotence."""
import pytest
from django.conf import settings

from media_app.models import Blob, Media, MediaEvent, MediaStatus, Thumbnail
from media_app.moderation.models import ModerationRequest
from media_app.retention.services import Kind, retention_policy, retention_preview, retention_run
from media_app.state import Actor, create, transition
from tests.retention.conftest import DAY, NOW, SECOND, local_media, png, remote_media, stored_bytes, thumbnail

pytestmark = pytest.mark.django_db


def run(**policy_kwargs):
    return retention_run(policy=retention_policy(now=NOW, **policy_kwargs))


def exists(media) -> bool:
    return Media.objects.filter(pk=media.pk, status=MediaStatus.STORED).exists()


def test_remote_media_is_purged_just_outside_its_lifetime_and_kept_just_inside(lifetimes):
    lifetimes(remote_media_lifetime=30, thumbnail_lifetime=None)
    cutoff = NOW - 30 * DAY
    outside = remote_media(png(1), created=cutoff - DAY, last_access=cutoff - SECOND)
    inside = remote_media(png(2), created=cutoff - DAY, last_access=cutoff + SECOND)
    never_accessed_old = remote_media(png(3), created=cutoff - SECOND)
    never_accessed_new = remote_media(png(4), created=cutoff + SECOND)
    outside_blob = outside.blob

    report = run()

    assert report[Kind.REMOTE_MEDIA].count == 2
    assert not Media.objects.filter(pk__in=[outside.pk, never_accessed_old.pk]).exists()
    assert exists(inside) and exists(never_accessed_new)
    assert not Blob.objects.filter(pk=outside_blob.pk).exists()
    assert report[Kind.REMOTE_MEDIA].bytes == outside_blob.size + never_accessed_old.blob.size
    purged = MediaEvent.objects.filter(event_type="media.purged")
    assert sorted((e.payload["media_id"], e.payload["reason"]) for e in purged) == sorted(
        [(outside.media_id, "remote_media_lifetime"), (never_accessed_old.media_id, "remote_media_lifetime")])


def test_purging_remote_media_takes_its_thumbnails_and_their_bytes(lifetimes):
    lifetimes(remote_media_lifetime=30, thumbnail_lifetime=None)
    old = remote_media(png(5, (400, 300)), created=NOW - 60 * DAY)
    thumbs = [thumbnail(old, 32, 32, "crop"), thumbnail(old, 320, 240, "scale")]
    rendition_blobs = [t.blob_id for t in thumbs]
    expected = sum(t.blob.size for t in thumbs) + old.blob.size
    before = stored_bytes()

    report = run()

    assert report[Kind.REMOTE_THUMBNAILS].count == 2
    assert not Thumbnail.objects.exists()
    assert not Blob.objects.filter(pk__in=rendition_blobs + [old.blob_id]).exists()
    assert before - stored_bytes() == report.freed_bytes == expected


def test_content_shared_with_local_media_keeps_its_blob_and_thumbnails(lifetimes):
    lifetimes(remote_media_lifetime=30, thumbnail_lifetime=None)
    data = png(6, (200, 100))
    mine = local_media(data, created=NOW - 90 * DAY)
    cached = remote_media(data, created=NOW - 90 * DAY)
    assert mine.blob_id == cached.blob_id  # deduplicated
    thumb = thumbnail(mine)

    preview = retention_preview(policy=retention_policy(now=NOW))
    report = run()

    assert not Media.objects.filter(pk=cached.pk).exists()
    assert exists(mine) and Blob.objects.filter(pk=mine.blob_id).exists()
    assert Thumbnail.objects.filter(pk=thumb.pk).exists()
    assert report.freed_bytes == preview.freed_bytes == 0


def test_thumbnails_are_purged_just_outside_their_lifetime(lifetimes):
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=10)
    cutoff = NOW - 10 * DAY
    media = local_media(png(7, (300, 300)), created=NOW - 100 * DAY)
    stale = thumbnail(media, 32, 32, "crop", created=cutoff - DAY, last_access=cutoff - SECOND)
    fresh = thumbnail(media, 96, 96, "crop", created=cutoff - DAY, last_access=cutoff + SECOND)
    never_served_old = thumbnail(media, 320, 240, "scale", created=cutoff - SECOND)
    never_served_new = thumbnail(media, 640, 480, "scale", created=cutoff + SECOND)
    expected = stale.blob.size + never_served_old.blob.size
    preview = retention_preview(policy=retention_policy(now=NOW))  # with the remote job off

    report = run()

    assert report.as_dict() == preview.as_dict()

    left = set(Thumbnail.objects.values_list("pk", flat=True))
    assert left == {fresh.pk, never_served_new.pk}
    assert report[Kind.THUMBNAILS].count == 2
    assert report[Kind.THUMBNAILS].bytes == expected
    assert exists(media)  # the original stays; only renditions go


def test_reservations_expire_at_unused_expires_at(alice):
    expired = create(to=MediaStatus.PENDING, actor=Actor.UPLOADER, server_name="test.local", media_id="expired",
                     uploader=alice, unused_expires_at=NOW)
    waiting = create(to=MediaStatus.PENDING, actor=Actor.UPLOADER, server_name="test.local", media_id="waiting",
                     uploader=alice, unused_expires_at=NOW + SECOND)

    report = run()

    expired.refresh_from_db()
    waiting.refresh_from_db()
    assert (expired.status, waiting.status) == (MediaStatus.DELETED, MediaStatus.PENDING)
    assert report[Kind.RESERVATIONS].count == 1
    event = MediaEvent.objects.get(event_type="media.purged")
    assert event.payload == {"media_id": "expired", "reason": "reservation_expired"}
    assert run()[Kind.RESERVATIONS].count == 0  # idempotent


def test_local_media_is_only_proposed_and_only_once(lifetimes):
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None, local_media_lifetime=365, local_media_idle=30)
    old = local_media(png(8), created=NOW - 365 * DAY - SECOND, last_access=NOW)
    young = local_media(png(9), created=NOW - 365 * DAY + SECOND, last_access=NOW)
    idle = local_media(png(10), created=NOW - 100 * DAY, last_access=NOW - 30 * DAY - SECOND)
    busy = local_media(png(11), created=NOW - 100 * DAY, last_access=NOW - 30 * DAY + SECOND)

    report = run()
    again = run()

    request = ModerationRequest.objects.get()
    assert request.action == "delete_media" and request.status == "pending" and request.requested_by is None
    assert sorted(request.targets) == sorted([old.content_uri, idle.content_uri])
    assert report[Kind.LOCAL_PROPOSALS].count == 2 and again[Kind.LOCAL_PROPOSALS].count == 0
    assert all(exists(m) for m in (old, young, idle, busy))  # nothing deleted without a sign-off
    assert report.freed_bytes == 0


def test_local_media_lifetimes_are_off_by_default(lifetimes):
    local_media(png(12), created=NOW - 10_000 * DAY)
    assert settings.MEDIASITE.get("LOCAL_MEDIA_LIFETIME_DAYS") is None
    assert settings.MEDIASITE.get("LOCAL_MEDIA_IDLE_DAYS") is None
    run()
    assert not ModerationRequest.objects.exists()


def test_quarantined_and_protected_media_are_never_purged(lifetimes, make_user):
    lifetimes(remote_media_lifetime=1, thumbnail_lifetime=1, local_media_lifetime=1, local_media_idle=1)
    ancient = NOW - 1000 * DAY
    protected_remote = remote_media(png(13, (100, 100)), created=ancient, protected=True)
    quarantined_remote = transition(remote_media(png(14, (100, 100)), created=ancient), MediaStatus.QUARANTINED,
                                    actor=Actor.MODERATOR)
    hash_quarantined = remote_media(png(15, (100, 100)), created=ancient)
    Blob.objects.filter(pk=hash_quarantined.blob_id).update(quarantined=True)
    protected_local = local_media(png(16, (100, 100)), created=ancient, protected=True)
    thumbs = [thumbnail(m, created=ancient) for m in (protected_remote, protected_local)]
    keep_files = stored_bytes()

    report = run()

    assert Media.objects.filter(pk__in=[protected_remote.pk, quarantined_remote.pk, hash_quarantined.pk,
                                        protected_local.pk]).count() == 4
    assert Media.objects.get(pk=quarantined_remote.pk).status == MediaStatus.QUARANTINED
    assert Thumbnail.objects.filter(pk__in=[t.pk for t in thumbs]).count() == 2
    assert not ModerationRequest.objects.exists()
    assert report.freed_bytes == 0 and stored_bytes() == keep_files


def test_a_served_thumbnail_is_kept_by_the_batched_access_flush(lifetimes, alice_client):
    from media_app.services.access import access_batch
    from tests.conftest import png_bytes, upload

    mxc = upload(alice_client, png_bytes(200, 200), content_type="image/png")
    response = alice_client.get(f"/_matrix/client/v1/media/thumbnail/{mxc}?width=32&height=32&method=crop")
    assert response.status_code == 200
    thumb = Thumbnail.objects.get()
    assert thumb.last_access_ts is None  # nothing written on the serving path
    access_batch.flush()
    thumb.refresh_from_db()
    assert thumb.last_access_ts is not None


_KILLED_PROPOSER = """
import os, signal, django
django.setup()
from media_app.retention import services
services.PROPOSE_LEASE_SECONDS = 1  # as the run would claim it, shortened for the test
services._propose_local = lambda **kwargs: os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run
services.local_media_propose(policy=services.retention_policy(local_before=services.timezone.now()),
                             totals=services.Totals(), progress=services.Progress())
"""


@pytest.mark.django_db(transaction=True)
def test_a_proposal_run_killed_mid_way_leaves_the_work_to_the_next_run(lifetimes):
    """RETENTION.md: a run killed at any point (kill -9) is continued by the next one. The run
    proposing local media holds a flight; killed, it must not keep the next runs out (on Redis,
    where a flight is a lease, until the lease it claimed with lapses)."""
    import subprocess
    import sys
    import time

    from media_app.retention import services
    from tests.conftest import ROOT

    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None, local_media_lifetime=365)
    old = local_media(png(13), created=NOW - 400 * DAY, last_access=NOW - 400 * DAY)
    died = subprocess.run([sys.executable, "-c", _KILLED_PROPOSER], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert died.returncode == -9, died.stderr[-2000:]
    time.sleep(1.5)  # the lease it claimed with (1 s here) lapses; nothing renews it any more
    assert services.PROPOSE_LEASE_SECONDS <= 60  # in production, within a minute
    report = run()
    assert ModerationRequest.objects.get().targets == [old.content_uri]
    assert report[Kind.LOCAL_PROPOSALS].count == 1
