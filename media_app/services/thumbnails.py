"""Thumbnails: chosen from the configured sizes, rendered once, cached by source content.

The cache is keyed by the source Blob, so deduplicated media share thumbnails. Identical
concurrent requests, in any process or on any machine, share one single flight
(media_app.singleflight) named by `thumbnail_flight_key`: the first renders, the others are woken
together when its row exists, or get its error. Pre-generation claims the same flights, so a
request for a size being pre-generated waits for it instead of rendering it again. Rendering
itself is media_app.image_ops (pure, hardened).
"""
import contextlib
import logging
import time

from django.db import IntegrityError, transaction

from .. import errors, events, image_ops, singleflight, storage
from ..conf import media_settings
from ..models import Blob, BlobIntegrity, Media, Thumbnail
from ..selectors import thumbnail_cached
from .blobs import BlobQuarantined, blob_store_and_record, received_from_bytes

logger = logging.getLogger(__name__)

THUMBNAILABLE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
METHODS = ("crop", "scale")


def parse_request(width, height, method, animated) -> tuple[int, int, str, bool]:
    if width in (None, "") or height in (None, ""):
        raise errors.InvalidParam("width and height are required")
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


# How long a request waits for a rendition another caller is rendering, and how long a
# renderer's claim outlives a crash of its process (Redis; other backends free it at once).
RENDER_WAIT_SECONDS = 60.0
RENDER_LEASE_SECONDS = 120.0
# A source that failed to render (broken, too many pixels) fails the same way next time: its
# error is answered without decoding again for this long.
RENDER_FAILURE_TTL_SECONDS = 30.0


def _render_failure_ttl(error: errors.MediasiteError) -> float:
    """A broken image stays broken, so its failure is cached; a full or unreachable storage may
    recover at any moment, so the next request tries again."""
    return RENDER_FAILURE_TTL_SECONDS if error.status < 500 else 0.0


def thumbnail_flight_key(source: Blob, width: int, height: int, method: str, animated: bool) -> str:
    """The single flight of one rendition: on-demand renders and pre-generation share it."""
    return f"thumbnail:{source.sha256}:{width}x{height}:{method}:{int(animated)}"


def thumbnail_get_or_render(*, media: Media, width: int, height: int, method: str, animated: bool) -> Thumbnail:
    """The cached thumbnail of servable `media` for this request, rendering it if needed."""
    if media.media_type not in THUMBNAILABLE_TYPES:
        raise errors.MediaNotThumbnailable()
    width, height, method = choose_size(width, height, method)
    source = media.blob

    def lookup() -> Thumbnail | None:
        return _cached(source.pk, width, height, method, animated)

    try:
        return singleflight.run_once(
            thumbnail_flight_key(source, width, height, method, animated),
            lookup=lookup,
            compute=lambda: _render_and_store(media, source, width, height, method, animated),
            timeout=RENDER_WAIT_SECONDS, lease=RENDER_LEASE_SECONDS, failure_ttl=_render_failure_ttl,
        )
    except errors.CoordinationUnavailable:
        # Redis is down: local media is served all the same, its thumbnails rendered without
        # the single flight (several processes may render the same one meanwhile; the first
        # row stored wins, see _store).
        return lookup() or _render_and_store(media, source, width, height, method, animated)


def thumbnail_render_again(*, media: Media, thumbnail: Thumbnail, width: int, height: int, method: str,
                           animated: bool) -> Thumbnail:
    """A cached rendition whose bytes are gone (a lost file, a bad restore): flag its blob
    missing (as the scrub would), forget the rendition and render it again from the original.
    The render yields the same bytes, whose store puts them back under the flagged blob."""
    logger.warning("The bytes of thumbnail blob %s are missing; rendering it again", thumbnail.blob.sha256[:16])
    Blob.objects.filter(pk=thumbnail.blob_id).update(integrity=BlobIntegrity.MISSING)
    Thumbnail.objects.filter(pk=thumbnail.pk).delete()
    return thumbnail_get_or_render(media=media, width=width, height=height, method=method, animated=animated)


def _render_and_store(media: Media, source: Blob, width: int, height: int, method: str, animated: bool) -> Thumbnail:
    with _logged_render(source, [(width, height, method)]), \
            storage.backend(source.storage).open(source.key) as fh, _image_errors():
        rendered = image_ops.render_thumbnail(
            fh, width=width, height=height, method=method, animated=animated,
            max_pixels=media_settings.MAX_IMAGE_PIXELS,
            max_total_frame_pixels=media_settings.MAX_THUMBNAIL_FRAME_PIXELS,
        )
    return _store(media, source, width, height, method, animated, rendered)


@contextlib.contextmanager
def _logged_render(source: Blob, boxes):
    """One log line per decode, rendered or failed: operators (and the render-once tests)
    count renders from it."""
    sizes = " ".join(f"{w}x{h}:{m}" for w, h, m in boxes)
    started = time.monotonic()
    try:
        yield
    except errors.MediasiteError as exc:
        logger.info("Thumbnail render %s of blob %s failed: %s", sizes, source.sha256[:16], exc.code)
        raise
    logger.info("Rendered thumbnail(s) %s of blob %s in %.0f ms", sizes, source.sha256[:16],
                (time.monotonic() - started) * 1000)


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
    decode; returns how many were stored. Sizes already stored, or being rendered by a request
    right now, are left out; sources that cannot be thumbnailed are skipped."""
    if media.media_type not in THUMBNAILABLE_TYPES or media.blob_id is None:
        return 0
    source = media.blob
    flights: dict[tuple[int, int, str], singleflight.Flight] = {}
    try:
        for width, height, method in (tuple(size) for size in media_settings.THUMBNAIL_SIZES):
            if (width, height, method) in flights or _cached(source.pk, width, height, method, False):
                continue
            flight = singleflight.claim(thumbnail_flight_key(source, width, height, method, False),
                                        lease=RENDER_LEASE_SECONDS)
            if flight is None:
                continue  # a request is rendering it
            if _cached(source.pk, width, height, method, False) is None:
                flights[(width, height, method)] = flight
            else:
                singleflight.publish_done(flight)  # stored between our look and our claim
        if not flights:
            return 0
        boxes = list(flights)
        with _logged_render(source, boxes), storage.backend(source.storage).open(source.key) as fh, _image_errors():
            renders = image_ops.render_still_thumbnails(fh, boxes=boxes, max_pixels=media_settings.MAX_IMAGE_PIXELS)
        for (width, height, method), rendered in zip(boxes, renders, strict=True):
            _store(media, source, width, height, method, False, rendered)
            singleflight.publish_done(flights.pop((width, height, method)))
        return len(boxes)
    except (errors.MediaNotThumbnailable, errors.MediaImageBroken, errors.MediaTooManyPixels) as exc:
        logger.info("No thumbnails for %s: %s", media.media_id, exc.code)
        _fail_all(flights, exc)
        return 0
    except errors.MediasiteError as exc:
        _fail_all(flights, exc)
        raise
    except BaseException:
        _fail_all(flights, errors.InternalError(), ttl=0.0)
        raise


def _fail_all(flights: dict, error: errors.MediasiteError, ttl: float | None = None) -> None:
    """Requests waiting on pre-generated sizes get the error the renderer met."""
    ttl = _render_failure_ttl(error) if ttl is None else ttl
    for flight in flights.values():
        singleflight.publish_failure(flight, error, ttl=ttl)
