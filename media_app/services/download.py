"""Finding media to serve: validation, waiting for pending uploads, access decisions."""
import functools
import threading
import time

from django.utils import timezone

from .. import errors
from ..conf import media_settings
from ..models import Media, MediaStatus
from ..selectors import media_with_blob
from . import identifiers
from .access import access_batch


def parse_timeout_ms(raw: str | None) -> int:
    if raw is None or raw == "":
        # The operator's maximum bounds the default wait too, not only the asked one.
        return min(media_settings.DEFAULT_DOWNLOAD_TIMEOUT_MS, media_settings.MAX_DOWNLOAD_TIMEOUT_MS)
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidParam("timeout_ms must be an integer") from None
    if value < 0:
        raise errors.InvalidParam("timeout_ms must not be negative")
    return min(value, media_settings.MAX_DOWNLOAD_TIMEOUT_MS)


def _lookup(server_name: str, media_id: str) -> Media | None:
    return media_with_blob(server_name=server_name, media_id=media_id)


def media_get_servable(*, server_name: str, media_id: str, timeout_ms: int = 0, requester=None,
                       allow_remote: bool = True, defer_remote_store: bool = False):
    """The media row with its blob, ready to serve, or the error the client must see.

    With `defer_remote_store`, remote media that this very request had to fetch comes back as a
    `federation.remote.FetchedRemote` instead (checked, not stored yet): the caller answers from
    its temp file and must have it stored (`store()` or `store_soon()`).

    A pending reservation is polled until it is filled or `timeout_ms` runs out; polling the
    database works the same whichever process receives the upload. Another server's media that
    is not cached yet is fetched (media_app.federation.remote); local and cached media cost the
    one lookup only.
    """
    identifiers.validate(server_name, media_id)
    media = _lookup(server_name, media_id)
    if media is None and allow_remote and not identifiers.is_local(server_name):
        from ..federation.remote import remote_media_get

        media = remote_media_get(server_name=server_name, media_id=media_id, timeout_ms=timeout_ms,
                                 requester=requester, defer_store=defer_remote_store)
        if not isinstance(media, Media):
            return media
    if media is not None and media.status == MediaStatus.PENDING:
        media = _wait_for_upload(media, server_name, media_id, timeout_ms)
    if media is None or media.status == MediaStatus.DELETED or media.blob is None:
        raise errors.MediaNotFound()
    if media.status == MediaStatus.QUARANTINED or media.blob.quarantined:
        raise errors.MediaQuarantined()
    return media


@functools.lru_cache(maxsize=4)
def _waiters(limit: int) -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(limit)


def _wait_for_upload(media: Media, server_name: str, media_id: str, timeout_ms: int) -> Media | None:
    """Poll a reservation until it is filled, expires or `timeout_ms` runs out. Anyone may ask
    for anyone's reservation, so at most PENDING_WAITERS_PER_PROCESS requests of a process wait
    at once; the others are answered at once (504 M_NOT_YET_UPLOADED, try again): a crowd of
    long polls cannot take every thread of the server."""
    waiters = _waiters(max(1, media_settings.PENDING_WAITERS_PER_PROCESS))
    waiting = waiters.acquire(blocking=False)
    try:
        # No slot free: answered as if the wait had run out at once.
        deadline = time.monotonic() + (timeout_ms / 1000 if waiting else 0)
        delay = 0.05
        while media is not None and media.status == MediaStatus.PENDING:
            expired = media.unused_expires_at and media.unused_expires_at <= timezone.now()
            if expired or time.monotonic() >= deadline:
                if expired:
                    raise errors.MediaNotFound()
                raise errors.MediaNotYetUploaded()
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)
            media = _lookup(server_name, media_id)
        return media
    finally:
        if waiting:
            waiters.release()


def media_record_retrieval(*, media: Media, downloader, thumbnail_pk: int | None = None) -> None:
    access_batch.record(media=media, downloader=downloader, thumbnail_pk=thumbnail_pk)


def media_get_metadata(*, server_name: str, media_id: str, user) -> Media:
    """Metadata of a user's own media, in any status but deleted; staff see everyone's.

    Anyone else gets MediaNotFound, as for media that does not exist: who uploaded what, its
    name and its status are the uploader's business (the bytes stay fetchable by ID).
    """
    identifiers.validate(server_name, media_id)
    media = _lookup(server_name, media_id)
    if media is None or media.status == MediaStatus.DELETED:
        raise errors.MediaNotFound()
    if not (user.is_staff or (media.uploader_id is not None and media.uploader_id == user.pk)):
        raise errors.MediaNotFound()
    return media
