"""Uploads: stream to a temp file while hashing, validate, deduplicate, store, record.

Order of durability (DESIGN §2): the bytes are fsync'd and renamed into place before the rows
that point at them commit, so a crash leaves at worst an orphan file for the garbage collector,
never a row without a file.
"""
import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import errors, events, storage
from ..conf import media_settings
from ..models import Blob, Media, MediaOrigin, MediaStatus
from ..state import Actor, create, transition
from . import identifiers, sniffing


class MediaContentBlocked(errors.MediasiteError):
    code, status, errcode, message = "MEDIA_CONTENT_BLOCKED", 403, "M_FORBIDDEN", "This content has been removed and may not be uploaded again"


class TooManyPendingUploads(errors.RateLimited):
    code = "MEDIA_TOO_MANY_PENDING"
    message = "Too many media IDs reserved and not yet uploaded"


@dataclass
class Received:
    path: str
    sha256: str
    size: int

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def receive_body(*, stream, declared_length: int | None) -> Received:
    """Copy a request body to a temp file, hashing as it goes; memory stays at one chunk.

    A declared Content-Length over the limit is refused before a byte is read; a body without
    one (chunked) is cut off as soon as it passes the limit.
    """
    limit = media_settings.MAX_UPLOAD_SIZE_BYTES
    if declared_length is not None and declared_length > limit:
        raise errors.MediaTooLarge()
    chunk_size = media_settings.UPLOAD_CHUNK_BYTES
    digest = hashlib.sha256()
    size = 0
    tmp = storage.new_temp_file()
    try:
        remaining = declared_length
        while remaining is None or remaining > 0:
            want = chunk_size if remaining is None else min(chunk_size, remaining)
            try:
                data = stream.read(want)
            except Exception as exc:  # the client went away mid-body (server-specific errors)
                raise errors.UploadIncomplete() from exc
            if not data:
                break
            size += len(data)
            if size > limit:
                raise errors.MediaTooLarge()
            digest.update(data)
            tmp.write(data)
            if remaining is not None:
                remaining -= len(data)
        if declared_length is not None and size < declared_length:
            raise errors.UploadIncomplete()
        tmp.flush()
        os.fsync(tmp.fileno())
        tmp.close()
    except BaseException:
        tmp.close()
        os.unlink(tmp.name)
        raise
    return Received(path=tmp.name, sha256=digest.hexdigest(), size=size)


def _validate(received: Received) -> str:
    media_type = sniffing.detect_media_type(received.path)
    sniffing.check_pixels(received.path, media_type, max_pixels=media_settings.MAX_IMAGE_PIXELS)
    return media_type


def _store_and_record(*, received: Received, media_type: str, record) -> Media:
    """Find or create the Blob for these bytes and call `record(blob)` in the same transaction.

    Deduplication is race-free: the Blob row is locked (so a garbage collector cannot delete it
    under us) or created under the UNIQUE sha256 constraint; a racer that loses the insert
    retries and reuses the winner's row. The file is written before the Blob row commits; a lost
    race leaves the same bytes at the same key, so nothing needs undoing.
    """
    stored_in = None
    for _attempt in range(5):
        existing = Blob.objects.filter(sha256=received.sha256).only("pk", "quarantined").first()
        if existing and existing.quarantined:
            raise MediaContentBlocked()
        if existing is None and stored_in is None:
            stored_in = storage.backend_for_new_blobs()
            storage.put_file(stored_in, storage.blob_key(received.sha256), received.path)
        try:
            with transaction.atomic():
                if existing is not None:
                    blob = Blob.objects.select_for_update().filter(pk=existing.pk).first()
                    if blob is None:  # collected between the two reads: store afresh
                        continue
                    created = False
                else:
                    blob = Blob.objects.create(
                        sha256=received.sha256,
                        size=received.size,
                        storage=stored_in,
                        key=storage.blob_key(received.sha256),
                    )
                    created = True
                earlier = None if created else blob.media.order_by("created_ts", "pk").first()
                media = record(blob)
                if earlier is not None and earlier.pk != media.pk:
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
                return media
        except IntegrityError:
            continue  # another upload of the same bytes created the Blob first
    raise errors.StorageUnavailable("Could not record the upload; please retry")


def media_upload(*, uploader, stream, declared_length: int | None, upload_name: str | None) -> Media:
    """A one-step upload (`POST /_matrix/media/v3/upload`, `POST /api/v1/media`)."""
    received = receive_body(stream=stream, declared_length=declared_length)
    try:
        media_type = _validate(received)

        def record(blob: Blob) -> Media:
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

        return _store_and_record(received=received, media_type=media_type, record=record)
    finally:
        received.discard()


def media_create_pending(*, uploader) -> Media:
    """Reserve a media ID to be filled later (`POST /_matrix/media/v1/create`)."""
    now = timezone.now()
    with transaction.atomic():
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
            raise TooManyPendingUploads(retry_after_ms=max(wait_ms, 1000))
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
    received = receive_body(stream=stream, declared_length=declared_length)
    try:
        media_type = _validate(received)

        def record(blob: Blob) -> Media:
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

        return _store_and_record(received=received, media_type=media_type, record=record)
    finally:
        received.discard()
