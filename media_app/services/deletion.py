"""A user's request to delete their own media: queued for a moderator's sign-off, never a
silent hard delete (deleting local media needs a human decision)."""
from django.db import connection, transaction

from .. import errors
from ..models import Media, MediaStatus
from ..moderation.models import ModerationAction, ModerationRequest, RequestStatus
from ..moderation.services import moderation_request_create
from . import identifiers

OWNER_REASON = "Deletion requested by the owner"


def media_request_deletion(*, server_name: str, media_id: str, user) -> tuple[ModerationRequest, bool]:
    """(the pending deletion request for this media, whether it was created now).

    The owner (or a staff member) may ask; anyone else gets MediaNotFound, as for media that
    does not exist. Asking again while a request is pending returns that request.
    """
    identifiers.validate(server_name, media_id)
    with transaction.atomic():
        # The row lock makes two concurrent requests for the same media queue one request.
        media = (
            Media.objects.select_for_update()
            .filter(server_name=server_name, media_id=media_id)
            .exclude(status=MediaStatus.DELETED)
            .first()
        )
        if media is None or not (user.is_staff or (media.uploader_id is not None and media.uploader_id == user.pk)):
            raise errors.MediaNotFound()
        if media.status == MediaStatus.PENDING:
            raise errors.MediaInvalidState("This media ID has no content yet; an unused reservation expires by itself")
        mxc = media.content_uri
        pending = ModerationRequest.objects.filter(
            action=ModerationAction.DELETE_MEDIA, status=RequestStatus.PENDING
        ).order_by("created_ts", "pk")
        if connection.features.supports_json_field_contains:
            # Anyone's pending request for this media (a moderator's, the retention job's).
            existing = pending.filter(targets__contains=[mxc]).first()
        else:
            # SQLite has no JSON containment: scan this user's pending requests, which are few.
            existing = next((r for r in pending.filter(requested_by=user) if mxc in r.targets), None)
        if existing is not None:
            return existing, False
        request = moderation_request_create(
            action=ModerationAction.DELETE_MEDIA, targets=[mxc], requested_by=user, reason=OWNER_REASON
        )
        return request, True
