"""Read-side queries for moderators and the admin API."""
from datetime import datetime, timezone as dt_timezone

from django.contrib.auth import get_user_model
from django.db.models import F

from .. import errors, events
from ..conf import media_settings
from ..models import Media, MediaEvent, MediaOrigin, MediaStatus
from ..selectors import unused_since
from .models import ModerationAction, ModerationRequest, RequestStatus

USER_MEDIA_ORDER = {
    "media_id": "media_id",
    "upload_name": "upload_name",
    "created_ts": "created_ts",
    "last_access_ts": "last_access_ts",
    "media_length": "media_length",
    "media_type": "media_type",
    "quarantined_by": "quarantined_by__username",
    "safe_from_quarantine": "protected",
}


def user_for_matrix_id(user_id: str):
    """A local user from a Matrix ID (`@alice:server`) or a bare username."""
    if user_id.startswith("@"):
        localpart, _, server_name = user_id[1:].partition(":")
        if server_name != media_settings.SERVER_NAME:
            raise errors.InvalidParam("Can only look up local users")
        user_id = localpart
    if "\x00" in user_id:
        # No username holds a NUL (PostgreSQL text cannot), so this is an unknown user, answered
        # without a query the database would refuse.
        raise errors.UserNotFound()
    user = get_user_model().objects.filter(username=user_id).first()
    if user is None:
        raise errors.UserNotFound()
    return user


def matrix_id(user) -> str | None:
    return None if user is None else f"@{user.get_username()}:{media_settings.SERVER_NAME}"


def media_of_user(*, user, order_by: str | None, direction: str | None):
    """Local media `user` uploaded, in Synapse's orders (default: newest first)."""
    if order_by is None and direction is None:
        order_by, direction = "created_ts", "b"
    field = USER_MEDIA_ORDER.get(order_by or "created_ts")
    if field is None:
        raise errors.InvalidParam("Unknown order_by")
    if direction not in (None, "f", "b"):
        raise errors.InvalidParam("dir must be f or b")
    expression = F(field).desc(nulls_last=True) if direction == "b" else F(field).asc(nulls_first=True)
    return (
        Media.objects.select_related("quarantined_by")
        .filter(uploader=user, origin=MediaOrigin.LOCAL)
        .exclude(status=MediaStatus.DELETED)
        .order_by(expression, "media_id")
    )


def local_media_unused_since(*, before_ts_ms: int, size_gt: int):
    """Local media last used (or, never used, created) before the timestamp; like Synapse's
    delete-by-date, quarantined and protected media are left out."""
    before = datetime.fromtimestamp(before_ts_ms / 1000, tz=dt_timezone.utc)
    return (
        Media.objects.filter(origin=MediaOrigin.LOCAL, status=MediaStatus.STORED, protected=False,
                             media_length__gt=size_gt)
        .filter(unused_since(before))
        .order_by("created_ts", "pk")
    )


def reported_uris(*, uris: set[str] | None = None, since: datetime | None = None) -> set[str]:
    """mxc URIs named by users' reports that no moderator has decided on yet: of `uris` (all by
    default), of the reports filed from `since` on (all by default). The targets are read in
    chunks: the queue can be long, and a JSON list is not searchable on every database."""
    pending = ModerationRequest.objects.filter(action=ModerationAction.REVIEW_REPORT, status=RequestStatus.PENDING)
    if since is not None:
        pending = pending.filter(created_ts__gte=since)
    found = set()
    for targets in pending.values_list("targets", flat=True).iterator(chunk_size=200):
        found.update(targets if uris is None else uris.intersection(targets))
    return found


def quarantine_note(*, server_name: str, media_id: str) -> str | None:
    """What the moderator typed when this media was last quarantined (decrypted); None when no
    quarantine of it was recorded."""
    event = (MediaEvent.objects.filter(event_type=events.QUARANTINED, server_name=server_name, media_id=media_id)
             .order_by("-created_ts", "-id").only("note").first())
    return None if event is None else event.note
