"""Retention and the moderators' decisions: reported media waits for its review, a proposal
keeps what was protected since, a run started by hand is signed off by someone else, and a
purge and a quarantine of the same content leave nothing uncollectable."""
import pytest

from media_app import errors
from media_app.models import Blob, Media, MediaStatus
from media_app.moderation import services as moderation
from media_app.moderation.models import ModerationRequest, QuarantinedContent, RequestStatus
from media_app.retention import services as retention
from media_app.retention.services import Kind, retention_policy, retention_preview, retention_run
from media_app.retention.tasks import run_retention
from media_app.services.gc import blob_collect
from tests.retention.conftest import DAY, NOW, local_media, png, remote_media

pytestmark = pytest.mark.django_db


@pytest.fixture
def mods(make_user):
    from media_app.moderation.services import moderator_create

    return [moderator_create(username=name, password=f"pw-{name}-Long-enough-1") for name in ("mod1", "mod2")]


def test_reported_remote_media_waits_for_its_review_and_is_then_quarantined(lifetimes, make_user, mods):
    lifetimes(remote_media_lifetime=30, thumbnail_lifetime=None)
    reported = remote_media(png(401), created=NOW - 60 * DAY)
    other = remote_media(png(402), created=NOW - 60 * DAY)
    report = moderation.media_report(server_name=reported.server_name, media_id=reported.media_id,
                                     reporter=make_user("reporter"), reason="abuse")

    preview = retention_preview(policy=retention_policy(now=NOW))
    done = retention_run(policy=retention_policy(now=NOW))

    assert preview[Kind.REMOTE_MEDIA].count == done[Kind.REMOTE_MEDIA].count == 1
    assert not Media.objects.filter(pk=other.pk).exists()
    assert Media.objects.get(pk=reported.pk).status == MediaStatus.STORED
    decided = moderation.moderation_request_approve(request_id=report.pk, moderator=mods[0])
    assert decided.status == RequestStatus.EXECUTED
    assert Media.objects.get(pk=reported.pk).status == MediaStatus.QUARANTINED
    assert QuarantinedContent.objects.filter(sha256=reported.blob.sha256).exists()

    # Decided: the report no longer holds the media, and quarantine keeps it from retention.
    retention_run(policy=retention_policy(now=NOW))
    assert Media.objects.get(pk=reported.pk).status == MediaStatus.QUARANTINED


def test_a_report_filed_while_the_purge_walks_is_seen_under_the_rows_lock(lifetimes, make_user, monkeypatch):
    lifetimes(remote_media_lifetime=30, thumbnail_lifetime=None)
    media = remote_media(png(403), created=NOW - 60 * DAY)
    walk = retention._batches

    def report_then_walk(queryset, size):
        for pks in walk(queryset, size):
            moderation.media_report(server_name=media.server_name, media_id=media.media_id,
                                    reporter=make_user("late"), reason="abuse")
            yield pks

    monkeypatch.setattr(retention, "_batches", report_then_walk)
    report = retention_run(policy=retention_policy(now=NOW), jobs=("remote",))

    assert report[Kind.REMOTE_MEDIA].count == 0
    assert Media.objects.get(pk=media.pk).status == MediaStatus.STORED


def test_reported_local_media_is_not_proposed_for_deletion(lifetimes, make_user):
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None, local_media_lifetime=30)
    reported = local_media(png(404), created=NOW - 60 * DAY)
    old = local_media(png(405), created=NOW - 60 * DAY)
    moderation.media_report(server_name=reported.server_name, media_id=reported.media_id,
                            reporter=make_user("reporter"), reason="abuse")

    retention_run(policy=retention_policy(now=NOW), jobs=("local",))

    proposal = ModerationRequest.objects.get(action="delete_media")
    assert proposal.targets == [old.content_uri] and proposal.retention


def test_a_proposal_approved_after_the_media_was_protected_keeps_it(lifetimes, mods):
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None, local_media_lifetime=30)
    kept = local_media(png(406), created=NOW - 60 * DAY)
    gone = local_media(png(407), created=NOW - 60 * DAY)
    retention_run(policy=retention_policy(now=NOW), jobs=("local",))
    proposal = ModerationRequest.objects.get(action="delete_media")

    moderation.media_protect(media_id=kept.media_id, moderator=mods[0])
    decided = moderation.moderation_request_approve(request_id=proposal.pk, moderator=mods[0])

    assert decided.status == RequestStatus.EXECUTED
    assert Media.objects.get(pk=kept.pk).status == MediaStatus.STORED
    assert Media.objects.get(pk=gone.pk).status == MediaStatus.DELETED


def test_a_proposal_approved_after_the_media_was_reported_keeps_it_for_the_report(lifetimes, make_user, mods):
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None, local_media_lifetime=30)
    media = local_media(png(410), created=NOW - 60 * DAY)
    retention_run(policy=retention_policy(now=NOW), jobs=("local",))
    proposal = ModerationRequest.objects.get(action="delete_media")
    report = moderation.media_report(server_name=media.server_name, media_id=media.media_id,
                                     reporter=make_user("reporter"), reason="abuse")

    moderation.moderation_request_approve(request_id=proposal.pk, moderator=mods[0])
    assert Media.objects.get(pk=media.pk).status == MediaStatus.STORED
    moderation.moderation_request_approve(request_id=report.pk, moderator=mods[1])
    assert Media.objects.get(pk=media.pk).status == MediaStatus.QUARANTINED
    assert QuarantinedContent.objects.filter(sha256=media.blob.sha256).exists()


def test_a_run_started_by_hand_is_signed_off_by_someone_else(lifetimes, make_user, mods):
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None)
    media = local_media(png(408), created=NOW - 2 * DAY)
    root = make_user("root")
    root.is_staff = root.is_superuser = True
    root.save()

    run_retention(local_before=NOW.isoformat(), requested_by_id=root.pk)

    proposal = ModerationRequest.objects.get(action="delete_media")
    assert proposal.requested_by == root and proposal.retention
    with pytest.raises(errors.ModerationSelfApproval):
        moderation.moderation_request_approve(request_id=proposal.pk, moderator=root)
    moderation.moderation_request_approve(request_id=proposal.pk, moderator=mods[0])
    assert Media.objects.get(pk=media.pk).status == MediaStatus.DELETED


def test_quarantining_content_a_purge_took_bans_the_hash_and_leaves_the_blob_collectable(mods):
    media = remote_media(png(409))
    blob = media.blob
    Media.objects.filter(pk=media.pk).delete()  # as a purge's committed batch leaves it, before removal

    assert moderation.media_quarantine_many(media=[media], moderator=mods[0]) == (0, 0)

    assert QuarantinedContent.objects.filter(sha256=blob.sha256).exists()
    assert not Blob.objects.get(pk=blob.pk).quarantined
    blob_collect(blob_id=blob.pk)
    assert not Blob.objects.filter(pk=blob.pk).exists()
