"""Uploads: receive the body, validate it from its bytes, store it once, record the media."""
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .. import errors, events
from ..conf import media_settings
from ..models import Blob, Media, MediaOrigin, MediaStatus
from ..state import Actor, create, transition
from . import identifiers, quotas, sniffing
from ..background import enqueue_on_commit
from .thumbnails import THUMBNAILABLE_TYPES
from ..moderation.services import media_quarantine_on_arrival
from .blobs import Received, blob_store_and_record, receive_body
from .multipart import receive_multipart


def _validate(received: Received) -> str:
    media_type = sniffing.detect_media_type(received.path)
    sniffing.check_pixels(received.path, media_type, max_pixels=media_settings.MAX_IMAGE_PIXELS)
    return media_type


def _record_upload_events(media: Media, blob: Blob, created: bool) -> None:
    earlier = None if created else blob.media.exclude(pk=media.pk).order_by("created_ts", "pk").first()
    if earlier is not None:
        events.emit(
            events.DEDUPLICATED,
            {"media_id": media.media_id, "existing_media_id": earlier.media_id},
            server_name=media.server_name,
            actor=media.uploader,
        )
    events.emit(
        events.UPLOADED,
        {
            "media_id": media.media_id,
            "server_name": media.server_name,
            "uploader_id": media.uploader.username if media.uploader else None,
            "media_type": media.media_type,
            "media_length": media.media_length,
        },
        server_name=media.server_name,
        actor=media.uploader,
    )


def _store_and_record(*, received: Received, record) -> Media:
    """Store the bytes (deduplicated) and create or fill the Media row with `record(blob)`."""

    def record_with_events(blob: Blob, created: bool) -> Media:
        media = record(blob)
        _record_upload_events(media, blob, created)
        # Bytes under hash-level quarantine are accepted and arrive quarantined: the upload
        # succeeds (the media then answers as removed), and moderators see the attempt.
        media_quarantine_on_arrival(media=media, blob=blob)
        if (media_settings.THUMBNAIL_PREGENERATE and media.media_type in THUMBNAILABLE_TYPES
                and media.status == MediaStatus.STORED):
            from ..tasks.thumbnails import pregenerate_thumbnails

            enqueue_on_commit(pregenerate_thumbnails, media.pk)
        return media

    return blob_store_and_record(received=received, record=record_with_events)


def _store_new_local(*, uploader, received: Received, media_type: str, upload_name: str | None) -> Media:
    """Store validated bytes under a new local media ID, within the uploader's quota."""
    quotas.quota_check(user=uploader, add_bytes=received.size, add_files=1)

    def record(blob: Blob) -> Media:
        # Checked again under the uploader's row lock: concurrent uploads cannot both fit.
        quotas.quota_check(user=uploader, add_bytes=received.size, add_files=1, lock=True)
        return create(
            to=MediaStatus.STORED,
            actor=Actor.UPLOADER,
            server_name=media_settings.SERVER_NAME,
            media_id=identifiers.new_media_id(),
            blob=blob,
            media_type=media_type,
            media_length=received.size,
            upload_name=identifiers.clean_upload_name(upload_name),
            uploader=uploader,
            origin=MediaOrigin.LOCAL,
        )

    return _store_and_record(received=received, record=record)


def media_upload(*, uploader, stream, declared_length: int | None, upload_name: str | None) -> Media:
    """A one-step upload of a raw body (`POST /_matrix/media/v3/upload`, `POST /api/v1/media`)."""
    quotas.quota_check(user=uploader, add_bytes=declared_length or 0, add_files=1)
    received = receive_body(stream=stream, declared_length=declared_length)
    try:
        media_type = _validate(received)
        return _store_new_local(uploader=uploader, received=received, media_type=media_type, upload_name=upload_name)
    finally:
        received.discard()


def media_upload_form(
    *, uploader, stream, declared_length: int | None, content_type: str, upload_name: str | None = None
) -> list[Media]:
    """A one-step upload of a multipart/form-data body (`curl -F file=@x`): one media per `file`
    part, each named by its part's file name (else `upload_name`).

    Every file is received and validated before any is stored, so a body with one file too
    large or with too many pixels stores none of them.
    """
    quotas.quota_check(user=uploader, add_bytes=declared_length or 0, add_files=1)
    files = receive_multipart(stream=stream, declared_length=declared_length, content_type=content_type)
    try:
        media_types = [_validate(item.received) for item in files]
        quotas.quota_check(user=uploader, add_bytes=sum(item.received.size for item in files), add_files=len(files))
        return [
            _store_new_local(
                uploader=uploader, received=item.received, media_type=media_type,
                upload_name=item.filename or upload_name,
            )
            for item, media_type in zip(files, media_types)
        ]
    finally:
        for item in files:
            item.received.discard()


def media_create_pending(*, uploader) -> Media:
    """Reserve a media ID to be filled later (`POST /_matrix/media/v1/create`)."""
    now = timezone.now()
    with transaction.atomic():
        # Counted under the user's lock: concurrent reservations cannot both take the last slot.
        quotas.user_lock(user=uploader)
        quotas.quota_check(user=uploader, add_files=1)
        pending = Media.objects.filter(
            uploader=uploader, status=MediaStatus.PENDING, unused_expires_at__gt=now
        ).count()
        if pending >= media_settings.MAX_PENDING_UPLOADS_PER_USER:
            oldest = (
                Media.objects.filter(uploader=uploader, status=MediaStatus.PENDING, unused_expires_at__gt=now)
                .order_by("unused_expires_at")
                .values_list("unused_expires_at", flat=True)
                .first()
            )
            wait_ms = int((oldest - now).total_seconds() * 1000) if oldest else 1000
            raise errors.TooManyPendingUploads(retry_after_ms=max(wait_ms, 1000))
        return create(
            to=MediaStatus.PENDING,
            actor=Actor.UPLOADER,
            server_name=media_settings.SERVER_NAME,
            media_id=identifiers.new_media_id(),
            uploader=uploader,
            origin=MediaOrigin.LOCAL,
            unused_expires_at=now + timedelta(seconds=media_settings.UNUSED_EXPIRES_SECONDS),
        )


def _pending_for(*, uploader, server_name: str, media_id: str) -> Media:
    identifiers.validate(server_name, media_id)
    if not identifiers.is_local(server_name):
        raise errors.MediaNotFound()
    media = Media.objects.filter(server_name=server_name, media_id=media_id).first()
    if media is None or media.status == MediaStatus.DELETED:
        raise errors.MediaNotFound()
    if media.uploader_id != uploader.pk:
        raise errors.Forbidden("Only the creator of the media ID can upload to it")
    if media.status != MediaStatus.PENDING:
        raise errors.MediaCannotOverwrite()
    if media.unused_expires_at and media.unused_expires_at <= timezone.now():
        raise errors.MediaNotFound("Media ID has expired")
    return media


def media_upload_pending(
    *, uploader, server_name: str, media_id: str, stream, declared_length: int | None, upload_name: str | None
) -> Media:
    """Fill a reserved ID (`PUT /_matrix/media/v3/upload/{server}/{id}`): once, by its creator,
    before it expires. Checked before reading the body and again, atomically, when recording."""
    media = _pending_for(uploader=uploader, server_name=server_name, media_id=media_id)
    # The reservation already counts as a file; only its bytes are new.
    quotas.quota_check(user=uploader, add_bytes=declared_length or 0)
    received = receive_body(stream=stream, declared_length=declared_length)
    try:
        media_type = _validate(received)
        quotas.quota_check(user=uploader, add_bytes=received.size)

        def record(blob: Blob) -> Media:
            quotas.quota_check(user=uploader, add_bytes=received.size, lock=True)
            try:
                return transition(
                    media,
                    MediaStatus.STORED,
                    actor=Actor.UPLOADER,
                    blob=blob,
                    media_type=media_type,
                    media_length=received.size,
                    upload_name=identifiers.clean_upload_name(upload_name),
                )
            except errors.MediaInvalidState as exc:  # a concurrent PUT filled it first
                raise errors.MediaCannotOverwrite() from exc

        return _store_and_record(received=received, record=record)
    finally:
        received.discard()
