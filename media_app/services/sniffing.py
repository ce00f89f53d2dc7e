"""What the bytes are, decided from the bytes: the client's Content-Type is never trusted."""
import io
import sys

import magic

from ..errors import MediaTooManyPixels

OCTET_STREAM = "application/octet-stream"
# libmagic names for "nothing to go on"; all served as opaque bytes.
_OPAQUE = {"inode/x-empty", "application/x-empty", "inode/blockdevice", "inode/chardevice"}
# Types whose header we read to enforce MAX_IMAGE_PIXELS (the decoders Mediasite ever runs).
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
# Types libmagic names from a fixed signature at the start of the bytes (and the container
# header right after it), so the first few hundred KiB name them as the whole file would.
# Text and unknown bytes are not among them: whether bytes are text depends on all of them.
# Nor is GIF: every frame, anywhere in the file, is held to the pixel limit (image_ops.probe).
HEAD_DECIDED_TYPES = (IMAGE_TYPES - {"image/gif"}) | {
    "video/mp4", "video/webm", "video/quicktime", "video/x-matroska", "video/ogg",
    "audio/ogg", "audio/mpeg", "audio/flac", "audio/x-wav", "audio/mp4", "application/pdf",
}


def detect_media_type(path: str) -> str:
    detected = magic.from_file(path, mime=True) or OCTET_STREAM
    return OCTET_STREAM if detected in _OPAQUE else detected


def media_type_of_head(head: bytes) -> str | None:
    """The type of bytes that begin with `head`, when the head alone decides it; else None."""
    detected = magic.from_buffer(head, mime=True)
    return detected if detected in HEAD_DECIDED_TYPES else None


def pixels_of_head_allowed(head: bytes, media_type: str, *, max_pixels: int) -> bool:
    """Whether an image beginning with `head` is within `max_pixels`, read from its header:
    True when the header shows it is, MediaTooManyPixels when it shows it is not, False when
    the head does not hold the header (it is then decided on the whole file)."""
    if media_type not in IMAGE_TYPES:
        return True
    from .. import image_ops

    try:
        image_ops.probe(io.BytesIO(head), max_pixels=max_pixels, max_total_frame_pixels=sys.maxsize)
    except image_ops.ImageTooLarge as exc:
        raise MediaTooManyPixels() from exc
    except image_ops.ImageError:
        return False
    return True


def check_pixels(path: str, media_type: str, *, max_pixels: int) -> None:
    """Refuse images whose header declares too many pixels; never decodes pixel data."""
    if media_type not in IMAGE_TYPES:
        return
    from .. import image_ops  # Pillow is loaded only by the processes that handle images

    with open(path, "rb") as fh:
        try:
            # The upload limit is on the picture's size; frame budgets belong to thumbnailing.
            image_ops.probe(fh, max_pixels=max_pixels, max_total_frame_pixels=sys.maxsize)
        except image_ops.ImageTooLarge as exc:
            raise MediaTooManyPixels() from exc
        except image_ops.ImageError:
            # Bytes that look like an image but do not parse are stored as what they are;
            # they simply cannot be thumbnailed.
            pass
