"""Quarantine (content-level, at once), protection, four-eyes sign-off, reclaiming bytes."""
import threading
from datetime import timedelta

import pytest
from django.db import connection

from media_app import errors, storage
from media_app.models import Blob, Media, MediaEvent, MediaStatus, Thumbnail
from media_app.moderation import services
from media_app.moderation.models import (
    BlockedServer, ModerationAction, ModerationRequest, QuarantinedContent, RequestStatus,
)
from tests.conftest import download_url, png_bytes, require_service, upload

IMAGE = png_bytes(64, 48, color=(10, 200, 30))


def media_of(mxc: str) -> Media:
    return Media.objects.select_related("blob").get(media_id=mxc.split("/")[1])


def thumb_url(mxc: str) -> str:
    return f"/_matrix/client/v1/media/thumbnail/{mxc}?width=32&height=32&method=crop"


def quarantine(mxc: str, moderator):
    server, media_id = mxc.split("/")
    return services.media_quarantine(server_name=server, media_id=media_id, moderator=moderator)


@pytest.mark.django_db
def test_quarantine_by_id_hides_the_twin_and_a_later_reupload(alice_client, client_for, make_user, mod1):
    bob_client = client_for(make_user("bob"))
    mine = upload(alice_client, IMAGE)
    twin = upload(bob_client, IMAGE)  # same bytes, another ID and uploader
    other = upload(alice_client, png_bytes(64, 48, color=(1, 2, 3)))
    assert alice_client.get(thumb_url(twin)).status_code == 200  # a cached thumbnail exists

    assert quarantine(mine, mod1) == 2

    for mxc in (mine, twin):
        assert alice_client.get(download_url(mxc)).json()["code"] == "MEDIA_QUARANTINED"
        assert alice_client.get(thumb_url(mxc)).json()["code"] == "MEDIA_QUARANTINED"
        assert media_of(mxc).status == MediaStatus.QUARANTINED
        assert media_of(mxc).quarantined_by == mod1
    assert alice_client.get(download_url(other)).status_code == 200
    blob = media_of(mine).blob
    # With its size: a first fetch of remote media of this length is then checked whole.
    assert blob.quarantined and QuarantinedContent.objects.filter(sha256=blob.sha256, size=blob.size).exists()
    assert storage.backend(blob.storage).exists(blob.key)  # bytes kept until a signed-off deletion

    later = upload(client_for(make_user("carol")), IMAGE)
    assert alice_client.get(download_url(later)).json()["code"] == "MEDIA_QUARANTINED"
    assert media_of(later).status == MediaStatus.QUARANTINED
    quarantined_ids = set(MediaEvent.objects.filter(event_type="media.quarantined").values_list("media_id", flat=True))
    assert quarantined_ids == {m.split("/")[1] for m in (mine, twin, later)}


@pytest.mark.django_db
def test_quarantine_is_idempotent_and_needs_a_moderator(alice_client, make_user, mod1):
    mxc = upload(alice_client, IMAGE)
    with pytest.raises(errors.Forbidden):
        quarantine(mxc, make_user("staff-only-not-moderator"))  # not in the group: no
    assert quarantine(mxc, mod1) == 1
    assert quarantine(mxc, mod1) == 0


@pytest.mark.django_db
def test_protected_media_refuses_quarantine(alice_client, client_for, make_user, mod1):
    mine = upload(alice_client, IMAGE)
    services.media_protect(media_id=mine.split("/")[1], moderator=mod1)
    with pytest.raises(errors.MediaProtected):
        quarantine(mine, mod1)
    # A twin of protected bytes cannot be quarantined either: it would hide the protected one.
    twin = upload(client_for(make_user("bob")), IMAGE)
    with pytest.raises(errors.MediaProtected):
        quarantine(twin, mod1)
    assert alice_client.get(download_url(mine)).status_code == 200
    assert not media_of(mine).blob.quarantined
    services.media_protect(media_id=mine.split("/")[1], moderator=mod1, protected=False)
    assert quarantine(twin, mod1) == 2
    kinds = list(MediaEvent.objects.values_list("event_type", flat=True))
    assert "media.protected" in kinds and "media.unprotected" in kinds


@pytest.mark.django_db
def test_quarantine_by_uploader_and_by_origin_server(alice_client, client_for, make_user, mod1):
    a1, a2 = upload(alice_client, b"alice one"), upload(alice_client, b"alice two")
    bob = upload(client_for(make_user("bob")), b"bob's")
    services.media_protect(media_id=a2.split("/")[1], moderator=mod1)
    assert services.user_media_quarantine(user=make_user("alice"), moderator=mod1) == 1
    assert media_of(a1).status == MediaStatus.QUARANTINED
    assert media_of(a2).status == MediaStatus.STORED  # protected: left alone
    assert media_of(bob).status == MediaStatus.STORED

    remote = Media.objects.create(server_name="remote.example", media_id="r1", status=MediaStatus.STORED,
                                  origin="remote", blob=Blob.objects.create(sha256="f" * 64, size=1, storage="fs",
                                                                             key="ff/ff/" + "f" * 64))
    assert services.server_media_quarantine(server_name="remote.example", moderator=mod1) == 1
    remote.refresh_from_db()
    assert remote.status == MediaStatus.QUARANTINED and remote.blob.quarantined


@pytest.mark.django_db
def test_requester_cannot_approve_their_own_request(alice_client, mod1, mod2):
    mxc = upload(alice_client, IMAGE)
    request = services.media_deletion_request(media=[media_of(mxc)], requested_by=mod1, reason="spam")
    assert request.status == RequestStatus.PENDING
    assert ModerationRequest.objects.get().reason == "spam"
    with pytest.raises(errors.ModerationSelfApproval):
        services.moderation_request_approve(request_id=request.pk, moderator=mod1)
    assert media_of(mxc).status == MediaStatus.STORED
    assert services.moderation_request_approve(request_id=request.pk, moderator=mod2).status == RequestStatus.EXECUTED
    request.refresh_from_db()
    assert request.decided_by == mod2 and request.executed_ts is not None
    with pytest.raises(errors.ModerationAlreadyDecided):
        services.moderation_request_approve(request_id=request.pk, moderator=mod2)


@pytest.mark.django_db
def test_signed_off_deletion_reclaims_the_bytes_and_the_ban_outlives_them(alice_client, mod1, mod2):
    mxc = upload(alice_client, IMAGE)
    assert alice_client.get(thumb_url(mxc)).status_code == 200
    blob = media_of(mxc).blob
    rendition = Thumbnail.objects.get().blob
    quarantine(mxc, mod1)
    request = services.media_deletion_request(media=[media_of(mxc)], requested_by=mod1, reason="abuse")
    assert storage.backend(blob.storage).exists(blob.key)  # nothing happens before the sign-off
    services.moderation_request_approve(request_id=request.pk, moderator=mod2)

    media = Media.objects.get(pk=media_of(mxc).pk)
    assert media.status == MediaStatus.DELETED and media.blob_id is None
    assert not Blob.objects.filter(pk__in=[blob.pk, rendition.pk]).exists()
    assert not storage.backend(blob.storage).exists(blob.key)
    assert not storage.backend(rendition.storage).exists(rendition.key)
    assert alice_client.get(download_url(mxc)).json()["code"] == "MEDIA_NOT_FOUND"
    events = list(MediaEvent.objects.values_list("event_type", flat=True))
    assert "media.purged" in events and "media.signed_off" in events and "moderation.requested" in events

    # The hash stays banned after its bytes are gone: a re-upload arrives quarantined.
    again = upload(alice_client, IMAGE)
    assert media_of(again).status == MediaStatus.QUARANTINED and media_of(again).blob.quarantined


@pytest.mark.django_db
def test_deleting_one_twin_keeps_the_shared_bytes(alice_client, mod1, mod2):
    first, second = upload(alice_client, IMAGE), upload(alice_client, IMAGE)
    blob = media_of(first).blob
    request = services.media_deletion_request(media=[media_of(first)], requested_by=mod1)
    services.moderation_request_approve(request_id=request.pk, moderator=mod2)
    assert storage.backend(blob.storage).exists(blob.key)
    assert alice_client.get(download_url(second)).status_code == 200


@pytest.mark.django_db
def test_system_requests_are_approved_by_any_moderator(alice_client, mod1):
    mxc = upload(alice_client, IMAGE)
    request = services.moderation_request_create(
        action=ModerationAction.DELETE_MEDIA, targets=[f"mxc://{mxc}"], requested_by=None, reason="expired")
    services.moderation_request_approve(request_id=request.pk, moderator=mod1)
    assert media_of(mxc).status == MediaStatus.DELETED


@pytest.mark.django_db
def test_release_needs_a_second_moderator_and_clears_the_content_ban(alice_client, mod1, mod2):
    mine, twin = upload(alice_client, IMAGE), upload(alice_client, IMAGE)
    quarantine(mine, mod1)
    request = services.media_release_request(media=[media_of(mine)], requested_by=mod1, reason="false positive")
    with pytest.raises(errors.ModerationSelfApproval):
        services.moderation_request_approve(request_id=request.pk, moderator=mod1)
    services.moderation_request_approve(request_id=request.pk, moderator=mod2)
    for mxc in (mine, twin):
        assert alice_client.get(download_url(mxc)).status_code == 200
        assert media_of(mxc).status == MediaStatus.STORED
    assert not media_of(mine).blob.quarantined and not QuarantinedContent.objects.exists()
    assert MediaEvent.objects.filter(event_type="media.released").count() == 2


@pytest.mark.django_db
def test_a_release_request_never_lifts_a_quarantine_made_after_it(alice_client, mod1, mod2, make_moderator):
    mine = upload(alice_client, IMAGE)
    quarantine(mine, mod1)
    first = services.media_release_request(media=[media_of(mine)], requested_by=mod2, reason="false positive")
    stale = services.media_release_request(media=[media_of(mine)], requested_by=mod2, reason="the same, again")
    services.moderation_request_approve(request_id=first.pk, moderator=mod1)
    assert media_of(mine).status == MediaStatus.STORED
    quarantine(mine, make_moderator("mod3"))  # new evidence, and nobody has reviewed this one
    # Written by a node whose clock is behind: the order of the events decides, not their times.
    MediaEvent.objects.filter(event_type="media.quarantined").update(created_ts=stale.created_ts - timedelta(minutes=1))

    decided = services.moderation_request_approve(request_id=stale.pk, moderator=mod1)

    assert decided.status == RequestStatus.EXECUTED
    assert media_of(mine).status == MediaStatus.QUARANTINED and media_of(mine).blob.quarantined
    assert QuarantinedContent.objects.filter(sha256=media_of(mine).blob.sha256).exists()
    signed_off = MediaEvent.objects.filter(event_type="media.signed_off").first()
    assert signed_off.payload["skipped"] == [f"mxc://{mine}"] and signed_off.payload["executed"] == []


@pytest.mark.django_db
def test_a_release_approved_after_the_media_was_deleted_keeps_the_ban(alice_client, mod1, mod2):
    mine = upload(alice_client, IMAGE)
    quarantine(mine, mod1)
    release = services.media_release_request(media=[media_of(mine)], requested_by=mod1)
    deletion = services.media_deletion_request(media=[media_of(mine)], requested_by=mod1)
    sha256 = media_of(mine).blob.sha256
    services.moderation_request_approve(request_id=deletion.pk, moderator=mod2)

    services.moderation_request_approve(request_id=release.pk, moderator=mod2)

    assert media_of(mine).status == MediaStatus.DELETED
    assert QuarantinedContent.objects.filter(sha256=sha256).exists()


@pytest.mark.django_db
def test_rejection_needs_a_reason_and_closes_the_request(alice_client, mod1, mod2):
    mxc = upload(alice_client, IMAGE)
    request = services.media_deletion_request(media=[media_of(mxc)], requested_by=mod1)
    with pytest.raises(errors.InvalidParam):
        services.moderation_request_reject(request_id=request.pk, moderator=mod2, reason="  ")
    services.moderation_request_reject(request_id=request.pk, moderator=mod2, reason="not abusive")
    request.refresh_from_db()
    assert request.status == RequestStatus.REJECTED and request.decision_reason == "not abusive"
    with pytest.raises(errors.ModerationAlreadyDecided):
        services.moderation_request_approve(request_id=request.pk, moderator=mod2)
    assert media_of(mxc).status == MediaStatus.STORED
    assert MediaEvent.objects.filter(event_type="moderation.rejected").count() == 1
    # A requester may withdraw (reject) their own request; only approval needs other eyes.
    mine = services.media_deletion_request(media=[media_of(mxc)], requested_by=mod1)
    services.moderation_request_reject(request_id=mine.pk, moderator=mod1, reason="withdrawn")
    assert ModerationRequest.objects.get(pk=mine.pk).status == RequestStatus.REJECTED


@pytest.mark.django_db
def test_block_server_is_effective_only_once_approved(mod1, mod2):
    request = services.server_block_request(server_name="evil.example", requested_by=mod1, reason="CSAM source")
    assert BlockedServer.objects.get().active is False
    assert not services.server_is_blocked(server_name="evil.example")
    services.moderation_request_approve(request_id=request.pk, moderator=mod2)
    assert services.server_is_blocked(server_name="evil.example")
    assert MediaEvent.objects.filter(event_type="server.blocked").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_two_moderators_approving_at_the_same_moment_execute_once(alice_client, make_moderator, round_):
    require_service("PostgreSQL", connection.vendor == "postgresql", "row locks under real concurrency")
    mod1, mod2, mod3 = make_moderator("m1"), make_moderator("m2"), make_moderator("m3")
    mxc = upload(alice_client, IMAGE)
    request = services.media_deletion_request(media=[media_of(mxc)], requested_by=mod1)
    barrier = threading.Barrier(2)
    outcomes = {}

    def approve(moderator):
        try:
            barrier.wait()
            services.moderation_request_approve(request_id=request.pk, moderator=moderator)
            outcomes[moderator.username] = "executed"
        except errors.ModerationAlreadyDecided:
            outcomes[moderator.username] = "already decided"
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(m,)) for m in (mod2, mod3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["already decided", "executed"]
    assert MediaEvent.objects.filter(event_type="media.signed_off").count() == 1
    assert MediaEvent.objects.filter(event_type="media.purged").count() == 1
    assert ModerationRequest.objects.get().status == RequestStatus.EXECUTED


@pytest.mark.django_db
def test_key_rotation_covers_moderation_reasons():
    from cryptography.fernet import Fernet
    from django.conf import settings
    from django.core.management import call_command
    from django.test import override_settings

    services.moderation_request_create(action="delete_media", targets=["mxc://test.local/x"], requested_by=None,
                                       reason="a report text")
    old_key = settings.MEDIASITE["ENCRYPTION_KEYS"][0]
    new_key = Fernet.generate_key().decode()
    with override_settings(MEDIASITE={**settings.MEDIASITE, "ENCRYPTION_KEYS": [new_key, old_key]}):
        call_command("rotate_encryption_keys")
    with override_settings(MEDIASITE={**settings.MEDIASITE, "ENCRYPTION_KEYS": [new_key]}):
        assert ModerationRequest.objects.get().reason == "a report text"


@pytest.mark.django_db
def test_no_cached_copy_outlives_a_quarantine(alice_client, mod1):
    mxc = upload(alice_client, IMAGE)
    first = alice_client.get(download_url(mxc))
    assert first["Cache-Control"] == "private, no-cache"  # caches must ask again before each use
    etag = first["ETag"]
    assert alice_client.get(download_url(mxc), HTTP_IF_NONE_MATCH=etag).status_code == 304
    thumb = alice_client.get(thumb_url(mxc))
    assert thumb["Cache-Control"] == "private, no-cache"
    quarantine(mxc, mod1)
    # The revalidation a cache makes is refused, so it cannot serve its stored copy as fresh.
    revalidated = alice_client.get(download_url(mxc), HTTP_IF_NONE_MATCH=etag)
    assert revalidated.status_code == 404 and revalidated.json()["code"] == "MEDIA_QUARANTINED"
    assert alice_client.get(thumb_url(mxc), HTTP_IF_NONE_MATCH=thumb["ETag"]).status_code == 404


def test_quarantined_content_of_unknown_size_learns_it_when_the_bytes_come_back(alice_client):
    import hashlib

    from tests.conftest import upload

    data = b"known bad bytes, reclaimed long ago"
    QuarantinedContent.objects.create(sha256=hashlib.sha256(data).hexdigest())  # recorded before sizes were
    upload(alice_client, data)
    assert QuarantinedContent.objects.get().size == len(data)
