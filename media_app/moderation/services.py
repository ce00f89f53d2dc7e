"""Moderation services: every change the admin, the admin API and the native API make to
moderation state goes through here.

Two kinds of step:

- Quarantine and protection act at once. Quarantine is content-level: it flags the Blob (which
  the serving path checks on every request), records the hash in QuarantinedContent (which
  outlives the Blob) and moves every Media sharing those bytes to `quarantined`.
- Irreversible steps (deleting local media, releasing from quarantine, blocking a server) and
  users' reports are ModerationRequests. One person (or the system) asks; a *different* staff
  member approves; execution happens once, in the approving transaction, guarded by a
  conditional `UPDATE … WHERE status = 'pending'`.

Content rows (Blob, QuarantinedContent) are locked with SELECT … FOR UPDATE before Media rows
sharing them change, so a quarantine, a protection and a deletion of twins never interleave.
"""
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import errors, events, ratelimit
from ..conf import media_settings
from ..models import Blob, Media, MediaEvent, MediaOrigin, MediaStatus, Thumbnail
from ..services import identifiers
from ..services.gc import blob_collect
from ..state import Actor, IllegalTransition, transition
from . import selectors
from .models import BlockedServer, ModerationAction, ModerationRequest, QuarantinedContent, RequestStatus

MODERATORS_GROUP = "moderators"
MODERATE_PERMISSION = "moderation.moderate"
MAX_REASON_CHARS = 2000


# --- requests ------------------------------------------------------------------------------

def moderation_request_create(*, action: str, targets: list[str], requested_by, reason: str = "",
                              retention: bool = False) -> ModerationRequest:
    """Queue an irreversible step for a second person's sign-off.

    `targets`: mxc URIs (`mxc://server/id`) for media actions, server names for BLOCK_SERVER.
    `requested_by`: the user asking, or None when the system proposes it (scheduled retention).
    `retention`: a deletion proposed by retention (see _execute_delete).
    """
    if action not in ModerationAction.values:
        raise ValueError(f"Unknown moderation action {action!r}")
    with transaction.atomic():
        request = ModerationRequest.objects.create(
            action=action, targets=list(targets), requested_by=requested_by, reason=reason or "",
            retention=retention,
        )
        if action == ModerationAction.BLOCK_SERVER:
            for name in targets:
                BlockedServer.objects.get_or_create(server_name=name, defaults={"request": request})
        events.emit(
            events.SIGNOFF_REQUESTED,
            {"request_id": request.pk, "action": action, "targets": list(targets)},
            actor=requested_by,
        )
    return request


def is_moderator(user) -> bool:
    return bool(user is not None and user.is_active and user.is_staff and user.has_perm(MODERATE_PERMISSION))


def require_moderator(user) -> None:
    """Raise Forbidden unless `user` is an active staff member with the moderate permission."""
    _require_moderator(user)


def _require_moderator(user) -> None:
    if not is_moderator(user):
        raise errors.Forbidden("Only moderators may do this")


def _clean_reason(reason) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise errors.InvalidParam("reason must be a string")
    reason = reason.strip()
    if len(reason) > MAX_REASON_CHARS:
        raise errors.InvalidParam(f"reason must be at most {MAX_REASON_CHARS} characters")
    return reason


def media_deletion_request(*, media: list[Media], requested_by, reason: str = "") -> ModerationRequest:
    """Ask for the deletion of media (stored or quarantined) for a second moderator to approve."""
    _require_moderator(requested_by)
    targets = [m.content_uri for m in media if m.status in (MediaStatus.STORED, MediaStatus.QUARANTINED)]
    if not targets:
        raise errors.MediaInvalidState("None of this media can be deleted")
    return moderation_request_create(
        action=ModerationAction.DELETE_MEDIA, targets=targets, requested_by=requested_by, reason=_clean_reason(reason)
    )


def media_release_request(*, media: list[Media], requested_by, reason: str = "") -> ModerationRequest:
    """Ask for quarantined media to be released, for a second moderator to approve."""
    _require_moderator(requested_by)
    targets = [m.content_uri for m in media if m.status == MediaStatus.QUARANTINED]
    if not targets:
        raise errors.MediaInvalidState("None of this media is quarantined")
    return moderation_request_create(
        action=ModerationAction.RELEASE_MEDIA, targets=targets, requested_by=requested_by, reason=_clean_reason(reason)
    )


def server_block_request(*, server_name: str, requested_by, reason: str = "") -> ModerationRequest:
    """Ask for a server to be added to the block list (effective once approved)."""
    _require_moderator(requested_by)
    server_name = (server_name or "").strip().lower()
    identifiers.validate(server_name, "x")
    if identifiers.is_local(server_name):
        raise errors.InvalidParam("This server cannot block itself")
    existing = BlockedServer.objects.filter(server_name=server_name).first()
    if existing is not None:
        raise errors.MediaInvalidState("This server is already blocked or waiting for a sign-off")
    return moderation_request_create(
        action=ModerationAction.BLOCK_SERVER, targets=[server_name], requested_by=requested_by,
        reason=_clean_reason(reason),
    )


def server_is_blocked(*, server_name: str) -> bool:
    """Whether media from `server_name` is refused: an approved block or the operator's list."""
    if server_name in media_settings.BLOCKED_SERVERS:
        return True
    return BlockedServer.objects.filter(server_name=server_name, active=True).exists()


def media_report(*, server_name: str, media_id: str, reporter, reason) -> ModerationRequest:
    """A user's report: the media enters the review queue; approving it quarantines it."""
    identifiers.validate(server_name, media_id)
    reason = _clean_reason(reason)
    media = Media.objects.filter(server_name=server_name, media_id=media_id).first()
    if media is None or media.status in (MediaStatus.PENDING, MediaStatus.DELETED):
        raise errors.MediaNotFound()
    ratelimit.hit(rule=media_settings.REPORT_RATE_LIMIT, scope="media-report", key=str(reporter.pk),
                  message="Too many reports; try again later")
    with transaction.atomic():
        # Under the row's lock, which a retention purge takes too: either the purge sees this
        # report and keeps the media for its review, or the report finds the media gone.
        media = Media.objects.select_for_update().filter(pk=media.pk).first()
        if media is None or media.status in (MediaStatus.PENDING, MediaStatus.DELETED):
            raise errors.MediaNotFound()
        request = moderation_request_create(
            action=ModerationAction.REVIEW_REPORT, targets=[media.content_uri], requested_by=reporter, reason=reason
        )
        events.emit(
            events.REPORTED, {"media_id": media.media_id, "request_id": request.pk},
            server_name=media.server_name, actor=reporter,
        )
    return request


# --- quarantine and protection (immediate) -------------------------------------------------

def media_for_moderation(*, server_name: str, media_id: str) -> Media:
    """Any media but deleted, quarantined included, for moderators."""
    return _media_for(server_name, media_id)


def _media_for(server_name: str, media_id: str) -> Media:
    identifiers.validate(server_name, media_id)
    media = Media.objects.select_related("blob").filter(server_name=server_name, media_id=media_id).first()
    if media is None or media.status == MediaStatus.DELETED:
        raise errors.MediaNotFound()
    return media


def _media_for_uri(uri: str) -> Media | None:
    server_name, media_id = identifiers.split_content_uri(uri)
    return Media.objects.filter(server_name=server_name, media_id=media_id).first()


# Why media was quarantined, as its media.quarantined event says: a moderator at once (what
# they typed is the event's encrypted note), a signed-off report (with its request_id), or
# content already under quarantine arriving again.
BY_MODERATOR, BY_REPORT, BY_CONTENT = "moderator", "report", "content is quarantined"


def _quarantine_content(media: Media, *, moderator, reason: str = "", request_id: int | None = None) -> int:
    """Quarantine the bytes of `media`: every Media sharing them, and the hash. Returns how many
    Media rows were newly quarantined. `reason`: what a moderator typed; `request_id`: the
    report that led here."""
    if media.protected:
        raise errors.MediaProtected()
    if media.blob_id is None:
        raise errors.MediaInvalidState("Media without content cannot be quarantined")
    actor = Actor.MODERATOR if moderator is not None else Actor.SYSTEM
    count = 0
    with transaction.atomic():
        blob = Blob.objects.select_for_update().filter(pk=media.blob_id).first()
        if blob is None:
            raise errors.MediaNotFound()
        twins = list(Media.objects.filter(blob=blob).exclude(status=MediaStatus.DELETED))
        if not twins:
            # Every media of these bytes went meanwhile (a retention purge, a deletion), and the
            # blob is on its way out: the hash is banned, the blob left to be collected (a
            # flagged blob would never be).
            QuarantinedContent.objects.get_or_create(
                sha256=blob.sha256, defaults={"quarantined_by": moderator, "size": blob.size})
            return 0
        if any(twin.protected for twin in twins):
            # The same bytes are protected under another ID: quarantining the content would
            # hide the protected media too.
            raise errors.MediaProtected("This content is shared with protected media")
        if not blob.quarantined:
            Blob.objects.filter(pk=blob.pk).update(quarantined=True)
        row, created = QuarantinedContent.objects.get_or_create(
            sha256=blob.sha256, defaults={"quarantined_by": moderator, "size": blob.size})
        if not created and row.size is None:
            _record_quarantined_size(blob)
        for twin in twins:
            if twin.status != MediaStatus.STORED:
                continue
            try:
                transition(twin, MediaStatus.QUARANTINED, actor=actor, quarantined_by=moderator)
            except IllegalTransition:
                continue  # deleted by a concurrent request: nothing left to hide
            count += 1
            events.emit(
                events.QUARANTINED,
                {"media_id": twin.media_id, "sha256": blob.sha256,
                 "reason": BY_MODERATOR if request_id is None else BY_REPORT, "request_id": request_id,
                 "by_content_of": None if twin.pk == media.pk else media.content_uri},
                server_name=twin.server_name, actor=moderator, note=reason,
            )
    media.refresh_from_db()
    return count


def media_quarantine(*, server_name: str, media_id: str, moderator, reason: str = "") -> int:
    """Quarantine one media ID and its content at once (downloads, thumbnails, re-uploads)."""
    _require_moderator(moderator)
    return _quarantine_content(_media_for(server_name, media_id), moderator=moderator, reason=_clean_reason(reason))


def media_quarantine_many(*, media: list[Media], moderator, reason: str = "") -> tuple[int, int]:
    """Quarantine each media's content; protected ones are skipped. (quarantined, skipped)."""
    _require_moderator(moderator)
    reason = _clean_reason(reason)
    done = skipped = 0
    for item in media:
        if item.status != MediaStatus.STORED:
            continue
        try:
            done += _quarantine_content(item, moderator=moderator, reason=reason)
        except (errors.MediaProtected, errors.MediaInvalidState, errors.MediaNotFound):
            skipped += 1
    return done, skipped


def user_media_quarantine(*, user, moderator, reason: str = "") -> int:
    """Quarantine all local media `user` uploaded (protected media is left alone)."""
    media = list(Media.objects.select_related("blob").filter(
        uploader=user, origin=MediaOrigin.LOCAL, status=MediaStatus.STORED).order_by("pk"))
    return media_quarantine_many(media=media, moderator=moderator, reason=reason)[0]


def server_media_quarantine(*, server_name: str, moderator, reason: str = "") -> int:
    """Quarantine all media whose origin is `server_name` (protected media is left alone)."""
    identifiers.validate(server_name, "x")
    media = list(Media.objects.select_related("blob").filter(
        server_name=server_name, status=MediaStatus.STORED).order_by("pk"))
    return media_quarantine_many(media=media, moderator=moderator, reason=reason)[0]


def media_quarantine_on_arrival(*, media: Media, blob: Blob) -> Media:
    """Called, inside the transaction that records new media, with its (locked or new) Blob:
    bytes under hash-level quarantine arrive quarantined, whichever path brought them."""
    quarantined = blob.quarantined or content_is_quarantined(sha256=blob.sha256)
    if not quarantined:
        return media
    if not blob.quarantined:
        Blob.objects.filter(pk=blob.pk).update(quarantined=True)
        blob.quarantined = True
    _record_quarantined_size(blob)
    if media.status == MediaStatus.STORED:
        transition(media, MediaStatus.QUARANTINED, actor=Actor.SYSTEM)
        events.emit(
            events.QUARANTINED,
            {"media_id": media.media_id, "sha256": blob.sha256, "reason": BY_CONTENT, "request_id": None,
             "by_content_of": None},
            server_name=media.server_name,
        )
    return media


def _record_quarantined_size(blob: Blob) -> None:
    # A row recorded before sizes were (its bytes gone by then) learns its size when the bytes
    # come back; until then it keeps every first fetch of remote media from being streamed.
    QuarantinedContent.objects.filter(sha256=blob.sha256, size__isnull=True).update(size=blob.size)


def content_is_quarantined(*, sha256: str) -> bool:
    return QuarantinedContent.objects.filter(sha256=sha256).exists()


def media_protect(*, media_id: str, moderator, protected: bool = True, server_name: str | None = None) -> Media:
    """Protect media from quarantine (stickers, emoji), or remove the protection. Quarantined
    media cannot be protected (release it first): protection means it cannot be quarantined."""
    _require_moderator(moderator)
    media = _media_for(server_name or media_settings.SERVER_NAME, media_id)
    with transaction.atomic():
        if media.blob_id is not None:
            Blob.objects.select_for_update().filter(pk=media.blob_id).first()
        if protected:
            # Read under the content's lock: a quarantine of the same content waits for it.
            current = Media.objects.select_related("blob").get(pk=media.pk)
            if current.is_quarantined:
                raise errors.MediaInvalidState("Quarantined media cannot be protected; release it first")
        Media.objects.filter(pk=media.pk).update(protected=protected)
        events.emit(
            events.PROTECTED if protected else events.UNPROTECTED,
            {"media_id": media.media_id}, server_name=media.server_name, actor=moderator,
        )
    media.protected = protected
    return media


# --- decisions -----------------------------------------------------------------------------

@dataclass
class _Outcome:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    blobs_to_reclaim: set[int] = field(default_factory=set)


def _execute_delete(request: ModerationRequest, moderator, outcome: _Outcome) -> None:
    targets = {uri: _media_for_uri(uri) for uri in request.targets}
    # Every target's content locked first, in key order, as the purge jobs lock theirs: two
    # transactions locking several blobs in different orders could deadlock.
    list(Blob.objects.select_for_update().filter(pk__in=[m.blob_id for m in targets.values() if m and m.blob_id])
         .order_by("pk").values_list("pk", flat=True))
    reported = set()
    if request.retention:
        # Under the rows' locks, which filing a report takes too (see media_report).
        list(Media.objects.select_for_update().filter(pk__in=[m.pk for m in targets.values() if m])
             .values_list("pk", flat=True))
        reported = selectors.reported_uris(uris=set(targets))
    for uri, media in targets.items():
        if media is None or media.status not in (MediaStatus.STORED, MediaStatus.QUARANTINED):
            outcome.skipped.append(uri)
            continue
        blob = Blob.objects.filter(pk=media.blob_id).first() if media.blob_id else None
        # Retention never proposes protected or reported media: media protected or reported
        # since the proposal stays (protection is an explicit keep, and a report's approval must
        # find the content to quarantine).
        if request.retention and (uri in reported or Media.objects.filter(pk=media.pk, protected=True).exists()):
            outcome.skipped.append(uri)
            continue
        try:
            transition(media, MediaStatus.DELETED, actor=Actor.MODERATOR, signed_off=True, blob=None)
        except IllegalTransition:
            outcome.skipped.append(uri)
            continue
        outcome.done.append(uri)
        events.emit(
            events.PURGED, {"media_id": media.media_id, "reason": "moderation", "request_id": request.pk},
            server_name=media.server_name, actor=moderator,
        )
        if blob is not None and not Media.objects.filter(blob=blob).exists():
            # The bytes are reclaimed below; the ban on the hash stays in QuarantinedContent.
            if blob.quarantined:
                Blob.objects.filter(pk=blob.pk).update(quarantined=False)
            outcome.blobs_to_reclaim.add(blob.pk)


def _execute_release(request: ModerationRequest, moderator, outcome: _Outcome) -> None:
    for uri in request.targets:
        media = _media_for_uri(uri)
        blob = None
        if media is not None and media.blob_id is not None:
            # The content's lock first, then the media's status: a deletion approved meanwhile
            # (which takes the same lock) is seen, and its ban on the hash is kept.
            blob = Blob.objects.select_for_update().filter(pk=media.blob_id).first()
            media.refresh_from_db(fields=["status", "blob"])
        if blob is None or media.status != MediaStatus.QUARANTINED or media.blob_id != blob.pk:
            outcome.skipped.append(uri)
            continue
        if _quarantined_since(media, request):
            # Released and quarantined again after this request was made: it was about another
            # quarantine, and this one has had nobody's review.
            outcome.skipped.append(uri)
            continue
        Blob.objects.filter(pk=blob.pk).update(quarantined=False)
        QuarantinedContent.objects.filter(sha256=blob.sha256).delete()
        for twin in Media.objects.filter(blob=blob, status=MediaStatus.QUARANTINED):
            try:
                transition(twin, MediaStatus.STORED, actor=Actor.MODERATOR, signed_off=True, quarantined_by=None)
            except IllegalTransition:
                continue
            events.emit(
                events.RELEASED, {"media_id": twin.media_id, "request_id": request.pk},
                server_name=twin.server_name, actor=moderator,
            )
        outcome.done.append(uri)


def _quarantined_since(media: Media, request: ModerationRequest) -> bool:
    # Events in the order they were written (their keys), not by their clocks, which on several
    # nodes need not agree.
    asked = (MediaEvent.objects.filter(event_type=events.SIGNOFF_REQUESTED, payload__request_id=request.pk)
             .values_list("pk", flat=True).first())
    later = Q(pk__gt=asked) if asked is not None else Q(created_ts__gt=request.created_ts)
    return MediaEvent.objects.filter(later, event_type=events.QUARANTINED, server_name=media.server_name,
                                     media_id=media.media_id).exists()


def _execute_block(request: ModerationRequest, moderator, outcome: _Outcome) -> None:
    for name in request.targets:
        BlockedServer.objects.update_or_create(server_name=name, defaults={"active": True, "request": request})
        events.emit(events.SERVER_BLOCKED, {"server_name": name, "request_id": request.pk}, actor=moderator)
        outcome.done.append(name)


def _execute_report(request: ModerationRequest, moderator, outcome: _Outcome) -> None:
    for uri in request.targets:
        media = _media_for_uri(uri)
        if media is None or media.status != MediaStatus.STORED:
            outcome.skipped.append(uri)
            continue
        # Protected media raises: the reviewer rejects the report instead.
        _quarantine_content(media, moderator=moderator, request_id=request.pk)
        outcome.done.append(uri)


_EXECUTORS = {
    ModerationAction.DELETE_MEDIA: _execute_delete,
    ModerationAction.RELEASE_MEDIA: _execute_release,
    ModerationAction.BLOCK_SERVER: _execute_block,
    ModerationAction.REVIEW_REPORT: _execute_report,
}


def _request_for(request_id) -> ModerationRequest:
    request = ModerationRequest.objects.filter(pk=request_id).first()
    if request is None:
        raise errors.ModerationRequestNotFound()
    return request


def moderation_request_approve(*, request_id: int, moderator, reason: str = "") -> ModerationRequest:
    """Approve and execute a pending request, exactly once; `reason`, optional, is kept as the
    decision's reason (encrypted, as the requester's is).

    The approver must be a moderator other than the requester (any moderator when the system
    asked). Of two moderators approving at the same moment, one UPDATE matches the pending row
    and executes; the other waits for that row and finds it decided.
    """
    _require_moderator(moderator)
    reason = _clean_reason(reason)
    request = _request_for(request_id)
    if request.requested_by_id is not None and request.requested_by_id == moderator.pk:
        raise errors.ModerationSelfApproval()
    outcome = _Outcome()
    with transaction.atomic():
        won = ModerationRequest.objects.filter(pk=request.pk, status=RequestStatus.PENDING).update(
            status=RequestStatus.APPROVED, decided_by=moderator, decided_ts=timezone.now(), decision_reason=reason
        )
        if not won:
            raise errors.ModerationAlreadyDecided()
        _EXECUTORS[request.action](request, moderator, outcome)
        ModerationRequest.objects.filter(pk=request.pk).update(status=RequestStatus.EXECUTED, executed_ts=timezone.now())
        events.emit(
            events.SIGNED_OFF,
            {"request_id": request.pk, "action": request.action, "targets": request.targets,
             "requested_by": request.requested_by.username if request.requested_by else None,
             "approved_by": moderator.username, "executed": outcome.done, "skipped": outcome.skipped},
            actor=moderator,
        )
    _reclaim(outcome.blobs_to_reclaim)
    request.refresh_from_db()
    return request


def moderation_request_reject(*, request_id: int, moderator, reason) -> ModerationRequest:
    """Reject a pending request with a reason. The requester may withdraw their own."""
    _require_moderator(moderator)
    reason = _clean_reason(reason)
    if not reason:
        raise errors.InvalidParam("A rejection needs a reason")
    request = _request_for(request_id)
    with transaction.atomic():
        won = ModerationRequest.objects.filter(pk=request.pk, status=RequestStatus.PENDING).update(
            status=RequestStatus.REJECTED, decided_by=moderator, decided_ts=timezone.now(), decision_reason=reason
        )
        if not won:
            raise errors.ModerationAlreadyDecided()
        if request.action == ModerationAction.BLOCK_SERVER:
            BlockedServer.objects.filter(request=request, active=False).delete()
        events.emit(
            events.SIGNOFF_REJECTED,
            {"request_id": request.pk, "action": request.action, "targets": request.targets,
             "rejected_by": moderator.username},
            actor=moderator,
        )
    request.refresh_from_db()
    return request


def _reclaim(blob_ids: set[int]) -> int:
    """Free the bytes of content no media refers to any more, now rather than at the next
    scheduled collection: its cached thumbnails go first, then the collector's own per-blob
    protocol (services.gc) removes files and rows, race-free against a re-upload."""
    freed = 0
    for blob_id in sorted(blob_ids):
        with transaction.atomic():
            blob = Blob.objects.select_for_update().filter(pk=blob_id).first()
            if blob is None or Media.objects.filter(blob_id=blob_id).exists():
                continue  # re-uploaded meanwhile: the content is in use again
            renditions = set(Thumbnail.objects.filter(source_id=blob_id).values_list("blob_id", flat=True))
            Thumbnail.objects.filter(source_id=blob_id).delete()
        for rendition_id in sorted(renditions):
            freed += blob_collect(blob_id=rendition_id) or 0
        freed += blob_collect(blob_id=blob_id) or 0
    return freed


# --- moderator accounts --------------------------------------------------------------------

# What the `moderators` group holds (created with these by migration 0003); repeated here for
# a database where the group is missing (a flushed test database, an operator who deleted it).
MODERATOR_PERMISSIONS = [
    ("media_app", "view_media"), ("media_app", "view_blob"), ("media_app", "view_mediaevent"),
    ("moderation", "view_moderationrequest"), ("moderation", "view_blockedserver"),
    ("moderation", "view_quarantinedcontent"), ("moderation", "moderate"), ("retention", "view_purge"),
]


def moderators_group() -> Group:
    group, created = Group.objects.get_or_create(name=MODERATORS_GROUP)
    if created:
        group.permissions.set([
            Permission.objects.get(content_type__app_label=app, codename=codename)
            for app, codename in MODERATOR_PERMISSIONS
        ])
    return group


def moderator_grant(*, user) -> None:
    """Make `user` a staff member of the `moderators` group (never a superuser)."""
    group = moderators_group()
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.groups.add(group)


def moderator_create(*, username: str, password: str | None):
    """Create or update a moderator who can sign in to the admin with `password`."""
    from django.contrib.auth.password_validation import validate_password

    User = get_user_model()
    with transaction.atomic():
        user, _ = User.objects.get_or_create(username=username)
        if password is not None:
            validate_password(password, user)
            user.set_password(password)
            user.save(update_fields=["password"])
        moderator_grant(user=user)
    return user


# --- what moderators see -------------------------------------------------------------------

def media_preview_thumbnail(*, media: Media, moderator):
    """A small thumbnail of any media, quarantined included, for the moderators' list. The
    admin blurs quarantined previews until clicked; nobody else reaches this."""
    from ..services import thumbnails

    if not (moderator is not None and moderator.is_active and moderator.is_staff
            and moderator.has_perm("media_app.view_media")):
        raise errors.Forbidden()
    if media.blob_id is None or media.status == MediaStatus.DELETED:
        raise errors.MediaNotFound()
    return thumbnails.thumbnail_get_or_render(media=media, width=96, height=96, method="crop", animated=False)
