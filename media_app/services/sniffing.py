"""What the bytes are, decided from the bytes: the client's Content-Type is never trusted."""
import sys

import magic

from ..errors import MediaTooManyPixels

OCTET_STREAM = "application/octet-stream"
# libmagic names for "nothing to go on"; all served as opaque bytes.
_OPAQUE = {"inode/x-empty", "application/x-empty", "inode/blockdevice", "inode/chardevice"}
# Types whose header we read to enforce MAX_IMAGE_PIXELS (the decoders Mediasite ever runs).
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


def detect_media_type(path: str) -> str:
    detected = magic.from_file(path, mime=True) or OCTET_STREAM
    return OCTET_STREAM if detected in _OPAQUE else detected


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
