"""Thumbnails: chosen from the configured sizes, rendered once, cached by source content.

The cache is keyed by the source Blob, so deduplicated media share thumbnails. Identical
concurrent requests, in any process, take one named lock: the first renders, the others find
its row when they get the lock. Rendering itself is media_app.image_ops (pure, hardened).
"""
import contextlib
import logging

from django.db import IntegrityError, transaction

from .. import errors, events, image_ops, locks, storage
from ..conf import media_settings
from ..models import Blob, Media, Thumbnail
from ..selectors import thumbnail_cached
from .blobs import BlobQuarantined, blob_store_and_record, received_from_bytes

logger = logging.getLogger(__name__)

THUMBNAILABLE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
METHODS = ("crop", "scale")


def parse_request(width, height, method, animated) -> tuple[int, int, str, bool]:
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise errors.InvalidParam("width and height must be integers") from None
    if w < 1 or h < 1 or w > 100_000 or h > 100_000:
        raise errors.InvalidParam("width and height must be between 1 and 100000")
    method = method or "scale"
    if method not in METHODS:
        raise errors.InvalidParam("method must be crop or scale")
    animated_text = (animated or "false").lower()
    if animated_text not in ("true", "false"):
        raise errors.InvalidParam("animated must be true or false")
    return w, h, method, animated_text == "true"


def choose_size(width: int, height: int, method: str) -> tuple[int, int, str]:
    """The size to render for a request (Matrix spec: the smallest configured size at least as
    large as requested, else the largest; exact sizes, capped, when dynamic thumbnails are on)."""
    if media_settings.DYNAMIC_THUMBNAILS:
        cap = media_settings.MAX_DYNAMIC_THUMBNAIL_SIZE
        return min(width, cap), min(height, cap), method
    sizes = [tuple(s) for s in media_settings.THUMBNAIL_SIZES]
    candidates = [s for s in sizes if s[2] == method] or sizes
    big_enough = [s for s in candidates if s[0] >= width and s[1] >= height]
    if big_enough:
        return min(big_enough, key=lambda s: (s[0] * s[1], s))
    return max(candidates, key=lambda s: (s[0] * s[1], s))


def _cached(source_id: int, width: int, height: int, method: str, animated: bool) -> Thumbnail | None:
    return thumbnail_cached(source_id=source_id, width=width, height=height, method=method, animated=animated)


def _lock_name(source: Blob, width: int, height: int, method: str, animated: bool) -> str:
    # On-demand renders and pre-generation must take the same lock for the same rendition.
    return f"thumbnail:{source.sha256}:{width}x{height}:{method}:{int(animated)}"


def thumbnail_get_or_render(*, media: Media, width: int, height: int, method: str, animated: bool) -> Thumbnail:
    """The cached thumbnail of servable `media` for this request, rendering it if needed."""
    if media.media_type not in THUMBNAILABLE_TYPES:
        raise errors.MediaNotThumbnailable()
    width, height, method = choose_size(width, height, method)
    source = media.blob
    thumb = _cached(source.pk, width, height, method, animated)
    if thumb is not None:
        return thumb
    try:
        with locks.named_lock(_lock_name(source, width, height, method, animated), timeout=60):
            thumb = _cached(source.pk, width, height, method, animated)
            if thumb is None:
                thumb = _render_and_store(media, source, width, height, method, animated)
    except locks.LockTimeout:
        raise errors.StorageUnavailable("Thumbnail rendering is busy; please retry") from None
    return thumb


def _render_and_store(media: Media, source: Blob, width: int, height: int, method: str, animated: bool) -> Thumbnail:
    with storage.backend(source.storage).open(source.key) as fh, _image_errors():
        rendered = image_ops.render_thumbnail(
            fh, width=width, height=height, method=method, animated=animated,
            max_pixels=media_settings.MAX_IMAGE_PIXELS,
            max_total_frame_pixels=media_settings.MAX_THUMBNAIL_FRAME_PIXELS,
        )
    return _store(media, source, width, height, method, animated, rendered)


@contextlib.contextmanager
def _image_errors():
    """image_ops failures as the client errors they are."""
    try:
        yield
    except image_ops.ImageTooLarge as exc:
        raise errors.MediaTooManyPixels() from exc
    except image_ops.UnsupportedImage as exc:
        raise errors.MediaNotThumbnailable("This media is not an image that can be thumbnailed") from exc
    except image_ops.BrokenImage as exc:
        raise errors.MediaImageBroken() from exc


def _store(media: Media, source: Blob, width: int, height: int, method: str, animated: bool,
           rendered: image_ops.Rendered) -> Thumbnail:
    """Keep a rendition (its bytes as a Blob on the thumbnail backend) and emit its event."""
    received = received_from_bytes(rendered.data)

    def record(blob: Blob, created: bool) -> Thumbnail:
        try:
            with transaction.atomic():  # a savepoint: a racing renderer's row may already exist
                thumb = Thumbnail.objects.create(
                    source=source, width=width, height=height, method=method, animated=animated,
                    media_type=rendered.media_type, blob=blob,
                    rendered_width=rendered.width, rendered_height=rendered.height,
                )
        except IntegrityError:
            # Another renderer stored the same rendition first: theirs is as good as ours.
            existing = _cached(source.pk, width, height, method, animated)
            if existing is None:
                raise
            return existing
        events.emit(
            events.THUMBNAIL_GENERATED,
            {"media_id": media.media_id, "width": rendered.width, "height": rendered.height, "mode": method},
            server_name=media.server_name,
        )
        return thumb

    try:
        return blob_store_and_record(received=received, record=record, thumbnail=True)
    except BlobQuarantined as exc:
        raise errors.MediaQuarantined() from exc
    finally:
        received.discard()


def thumbnails_pregenerate(*, media: Media) -> int:
    """Render every configured size of an uploaded image (a background task) from a single
    decode; returns how many were stored. Sources that cannot be thumbnailed are skipped."""
    if media.media_type not in THUMBNAILABLE_TYPES or media.blob_id is None:
        return 0
    source = media.blob
    missing = [
        (w, h, m) for w, h, m in (tuple(size) for size in media_settings.THUMBNAIL_SIZES)
        if _cached(source.pk, w, h, m, False) is None
    ]
    if not missing:
        return 0
    try:
        with storage.backend(source.storage).open(source.key) as fh, _image_errors():
            renders = image_ops.render_still_thumbnails(
                fh, boxes=missing, max_pixels=media_settings.MAX_IMAGE_PIXELS
            )
    except (errors.MediaNotThumbnailable, errors.MediaImageBroken, errors.MediaTooManyPixels) as exc:
        logger.info("No thumbnails for %s: %s", media.media_id, exc.code)
        return 0
    stored = 0
    for (width, height, method), rendered in zip(missing, renders, strict=True):
        with locks.named_lock(_lock_name(source, width, height, method, False), timeout=60):
            if _cached(source.pk, width, height, method, False) is None:  # not served meanwhile
                _store(media, source, width, height, method, False, rendered)
                stored += 1
    return stored
