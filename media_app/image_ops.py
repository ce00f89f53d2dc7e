"""Pure image handling for the media repository: header probing and thumbnails.

Uploaded images are attacker-controlled input handed to C decoders, so this
module is the single place where they are decoded.  It keeps Pillow on a short
leash (only the JPEG, PNG, GIF and WebP decoders may run, and pixel budgets are
enforced from the headers before any pixel is decoded) and it produces
thumbnails that follow the Matrix thumbnail semantics while never leaking the
source's metadata (EXIF/GPS, comments, XMP, text chunks, ICC profiles).

It deliberately knows nothing about Django, storage or HTTP: every function
takes a binary file object and plain numbers, which keeps it cheap to unit-test
and to benchmark in isolation.
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Union

from PIL import Image, UnidentifiedImageError

# Image.open(formats=...) only consults plugins that are already registered;
# importing these four up front stops it from calling Image.init(), which would
# import every other plugin in the process for nothing.
from PIL import GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without LittleCMS: profiles are dropped instead.
    ImageCms = None  # type: ignore[assignment]

__all__ = [
    "ALLOWED_FORMATS",
    "BrokenImage",
    "ImageError",
    "ImageInfo",
    "ImageTooLarge",
    "Rendered",
    "UnsupportedImage",
    "probe",
    "render_still_thumbnails",
    "render_thumbnail",
]

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")

# Per-frame work (decode, resize, encode) costs milliseconds however small the
# frame, so animations are capped by count as well as by total pixels.
DEFAULT_MAX_FRAMES = 1000

JPEG_QUALITY = 82
WEBP_QUALITY = 80
# WebP's "method" trades encoder CPU for size; 4 is libwebp's own default and
# still fast at thumbnail sizes.
WEBP_METHOD = 4

_RESAMPLE = Image.Resampling.LANCZOS
# With a gap of 3 Pillow's box pre-reduction is visually indistinguishable from
# a full Lanczos pass but far cheaper on big non-JPEG sources.
_REDUCING_GAP = 3.0
# libjpeg's DCT-domain scaling is a proper low-pass filter, so asking it for at
# least the output size (like libvips' shrink-on-load) keeps quality while
# decoding as few pixels as possible.
_JPEG_DRAFT_GAP = 1.0

_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})

_GIF_INTRODUCER = re.compile(rb"[!,;]")
# Pillow steps over stray bytes between GIF blocks one read() at a time
# (seconds for a few MB); real files have a handful, so more means hostile.
_MAX_GIF_STRAY_BYTES = 64 * 1024

_WEBP_WRITABLE = bool(getattr(WebPImagePlugin, "SUPPORTED", False))

FileInput = Union[IO[bytes], bytes, bytearray, memoryview]


class ImageError(Exception):
    """Base class for every image rejection raised by this module."""


class UnsupportedImage(ImageError):
    """Not JPEG/PNG/GIF/WebP, or not identifiable as an image at all."""


class BrokenImage(ImageError):
    """Identified as an allowed format but truncated, corrupt or undecodable."""


class ImageTooLarge(ImageError):
    """Declared dimensions (or dimensions times frames) exceed the budget."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    frames: int
    animated: bool


@dataclass(frozen=True)
class Rendered:
    data: bytes
    media_type: str
    width: int
    height: int


def probe(
    fp: FileInput,
    *,
    max_pixels: int,
    max_total_frame_pixels: int,
    max_frames: int | None = None,
) -> ImageInfo:
    """Identify an image from its headers without decoding any pixel data.

    ``width``/``height`` are the stored dimensions, before EXIF orientation.
    Multi-frame images must also satisfy
    ``frames * width * height <= max_total_frame_pixels`` and, if given,
    ``frames <= max_frames``.  GIF frames are counted by walking the file's
    blocks, stopping as soon as a budget is exceeded; with no effective
    budget the walk costs about 1.6 µs per frame.
    """
    with _opened(fp, max_pixels) as (im, fp):
        frames = _count_frames(im, fp, max_pixels, max_total_frame_pixels, max_frames)
        return ImageInfo(
            format=_format_of(im),
            width=im.width,
            height=im.height,
            frames=frames,
            animated=frames > 1,
        )


def render_thumbnail(
    fp: FileInput,
    *,
    width: int,
    height: int,
    method: str,
    animated: bool,
    max_pixels: int,
    max_total_frame_pixels: int,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Rendered:
    """Render a Matrix thumbnail of the image in ``fp``.

    ``scale`` fits the image inside ``width``x``height``; ``crop`` fills that
    box and centre-crops it.  Images are never upscaled: a source smaller than
    the box comes back at its own size (scale) or as the largest centred crop
    with the requested aspect ratio (crop).

    Output is JPEG for opaque stills, PNG for stills with real transparency and
    animated WebP when ``animated`` is set and the source has several frames.
    An animated rendering must fit ``frames * width * height <=
    max_total_frame_pixels`` and ``frames <= max_frames`` (else ImageTooLarge);
    a still rendering only ever decodes the first frame.
    """
    _check_request(width, height, method)
    with _opened(fp, max_pixels) as (im, fp):
        if animated and _WEBP_WRITABLE and _may_be_animated(im):
            frames = _count_frames(im, fp, max_pixels, max_total_frame_pixels, max_frames)
            if frames > 1:
                return _render_animated(im, frames, (width, height), method, max_pixels)
        return _render_still(im, (width, height), method)


def render_still_thumbnails(
    fp: FileInput,
    *,
    boxes: list[tuple[int, int, str]],
    max_pixels: int,
) -> list[Rendered]:
    """Still thumbnails for several (width, height, method) boxes from one decode.

    For pre-generating every configured size of an upload: the JPEG is decoded once, at the
    draft scale the largest box needs, and each box is resampled from that. Same rules as
    render_thumbnail (never upscaled, orientation applied, metadata stripped)."""
    for width, height, method in boxes:
        _check_request(width, height, method)
    with _opened(fp, max_pixels) as (im, _):
        return _render_stills(im, [((w, h), m) for w, h, m in boxes])


@contextmanager
def _opened(fp: FileInput, max_pixels: int) -> Iterator[tuple[Image.Image, IO[bytes]]]:
    """The image (and its seekable file), opened with only the allowed decoders, its declared
    size checked before any pixel is decoded, Pillow's failures mapped to ImageError."""
    fp = _seekable(fp)
    with _pillow_guard():
        im = _open(fp, max_pixels)
        with im:
            _check_pixels(im.size, max_pixels)
            yield im, fp


def _check_request(width: int, height: int, method: str) -> None:
    if width < 1 or height < 1:
        raise ValueError("thumbnail dimensions must be positive")
    if method not in ("scale", "crop"):
        raise ValueError(f"unknown thumbnail method {method!r}")


# --------------------------------------------------------------------------
# Opening and budgets


def _seekable(fp: FileInput) -> IO[bytes]:
    if isinstance(fp, (bytes, bytearray, memoryview)):
        return io.BytesIO(fp)
    try:
        seekable = fp.seekable()
    except AttributeError:
        seekable = False
    # The GIF frame scanner and Pillow both need random access.
    return fp if seekable else io.BytesIO(fp.read())


@contextmanager
def _pillow_guard() -> Iterator[None]:
    # Pillow reports "big but not absurd" images only with a warning, which
    # would let them be decoded; escalating it makes every bomb an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pillow parses EXIF with its TIFF code and warns on every corrupt
        # block; corrupt EXIF is routine here and already handled by falling
        # back to the stored orientation, so the warnings would only be noise.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
        try:
            yield
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(str(exc)) from exc
        except UnidentifiedImageError as exc:
            # Pillow's message embeds the repr of the file object; not useful.
            raise UnsupportedImage("not a JPEG, PNG, GIF or WebP image") from exc
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            raise BrokenImage(str(exc) or type(exc).__name__) from exc


def _open(fp: IO[bytes], max_pixels: int) -> Image.Image:
    head = fp.read(30)
    fp.seek(0)
    webp_canvas = _webp_canvas(head)
    if webp_canvas:
        # Pillow builds libwebp's animation decoder while opening, and that
        # reserves two full canvases; refuse oversized ones before it runs.
        _check_pixels(webp_canvas, max_pixels)
    if head.startswith((b"GIF87a", b"GIF89a")):
        # Opening a GIF makes Pillow crawl to the first frame; make sure the
        # way there is not megabytes of junk first.
        _scan_gif(fp, budget=None, max_frames=None, first_frame_only=True)
    im = Image.open(fp, formats=ALLOWED_FORMATS)
    if _format_of(im) not in ALLOWED_FORMATS:
        # Defence in depth should a plugin ever hand back a foreign subclass.
        raise UnsupportedImage(f"{im.format} images are not accepted")
    return im


def _webp_canvas(head: bytes) -> tuple[int, int] | None:
    """Canvas size from the first chunk of a WebP file (RIFF container spec)."""
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", head, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", head, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _format_of(im: Image.Image) -> str:
    # The JPEG plugin returns MPO (camera multi-picture files) when it sees the
    # MP extension; it is a JPEG whose first picture is the real image.
    return "JPEG" if im.format == "MPO" else str(im.format)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageTooLarge(f"{w}x{h} exceeds the {max_pixels} pixel budget")


def _may_be_animated(im: Image.Image) -> bool:
    # For GIF, Pillow's is_animated would walk into frame 1; our scanner
    # decides that instead, without touching Pillow's frame machinery.
    return im.format == "GIF" or getattr(im, "n_frames", 1) > 1


def _count_frames(
    im: Image.Image,
    fp: IO[bytes],
    max_pixels: int,
    max_total_frame_pixels: int,
    max_frames: int | None,
) -> int:
    if im.format == "GIF":
        frames, canvas = _scan_gif(fp, budget=max_total_frame_pixels, max_frames=max_frames)
        # A later frame may extend past the logical screen and Pillow would
        # grow its canvas to match, so budget the largest extent.
        _check_pixels(canvas, max_pixels)
        return max(frames, 1)
    if im.format == "MPO":
        return 1
    # PNG (APNG acTL) and WebP declare their frame count in the header.
    frames = int(getattr(im, "n_frames", 1))
    if frames > 1:
        _check_frame_budget(frames, im.size, max_total_frame_pixels, max_frames)
    return frames


def _check_frame_budget(
    frames: int, size: tuple[int, int], budget: int | None, max_frames: int | None
) -> None:
    if max_frames is not None and frames > max_frames:
        raise ImageTooLarge(f"more than {max_frames} frames")
    if budget is not None and frames * size[0] * size[1] > budget:
        raise ImageTooLarge(
            f"{frames} frames of {size[0]}x{size[1]} exceed the "
            f"{budget} total frame pixel budget"
        )


def _scan_gif(
    fp: IO[bytes],
    *,
    budget: int | None,
    max_frames: int | None,
    first_frame_only: bool = False,
) -> tuple[int, tuple[int, int]]:
    """Count GIF frames by walking the block structure, decoding nothing.

    Pillow's own ``n_frames`` has no upper bound; this stops at the first frame
    that takes ``frames * canvas`` over ``budget`` or the count over
    ``max_frames``, and refuses files padded with junk between blocks.
    """
    start = fp.tell()
    try:
        fp.seek(0)
        header = fp.read(13)
        if len(header) < 13:
            return 0, (0, 0)  # nothing to walk; Pillow will reject it
        canvas_w, canvas_h, flags = struct.unpack_from("<HHB", header, 6)
        if flags & 0x80:
            fp.seek(3 << ((flags & 7) + 1), io.SEEK_CUR)
        frames = 0
        stray = 0
        while True:
            introducer = fp.read(1)
            if introducer == b",":
                descriptor = fp.read(9)
                if len(descriptor) < 9:
                    break
                x, y, w, h, flags = struct.unpack("<HHHHB", descriptor)
                canvas_w = max(canvas_w, x + w)
                canvas_h = max(canvas_h, y + h)
                frames += 1
                if first_frame_only:
                    break
                if frames > 1:
                    _check_frame_budget(frames, (canvas_w, canvas_h), budget, max_frames)
                if flags & 0x80:
                    fp.seek(3 << ((flags & 7) + 1), io.SEEK_CUR)
                if not fp.read(1):  # LZW minimum code size
                    break
                _skip_sub_blocks(fp)
            elif introducer == b"!":
                if not fp.read(1):  # extension label
                    break
                _skip_sub_blocks(fp)
            elif introducer in (b";", b""):
                break
            else:
                # A few stray bytes between blocks are common in the wild and
                # Pillow steps over them, so the count has to as well.
                skipped, found = _skip_to_introducer(fp)
                stray += 1 + skipped
                if stray > _MAX_GIF_STRAY_BYTES:
                    raise BrokenImage("GIF has junk between its blocks")
                if not found:
                    break
        return frames, (canvas_w, canvas_h)
    finally:
        fp.seek(start)


def _skip_to_introducer(fp: IO[bytes]) -> tuple[int, bool]:
    """Skip to the next block introducer; return (bytes skipped, found)."""
    skipped = 0
    while skipped <= _MAX_GIF_STRAY_BYTES:
        position = fp.tell()
        chunk = fp.read(4096)
        if not chunk:
            return skipped, False
        found = _GIF_INTRODUCER.search(chunk)
        if found:
            fp.seek(position + found.start())
            return skipped + found.start(), True
        skipped += len(chunk)
    return skipped, False


def _skip_sub_blocks(fp: IO[bytes]) -> None:
    while True:
        length = fp.read(1)
        if not length or length[0] == 0:
            return
        fp.seek(length[0], io.SEEK_CUR)


# --------------------------------------------------------------------------
# Geometry


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        # EXIF is free-form attacker input and Pillow's parser can fail in many
        # ways on it; an unreadable orientation just means "as stored".
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _plan(
    src: tuple[int, int], box: tuple[int, int], method: str, orientation: int
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Return (output size, source region) in the stored orientation.

    Centred crops commute with the EXIF transposes, so the whole plan can be
    made in stored coordinates by swapping the requested box for 90 degree
    orientations; transposing the small result is then nearly free.
    """
    src_w, src_h = src
    box_w, box_h = (box[1], box[0]) if orientation in _SWAPS_AXES else box
    full = (0, 0, src_w, src_h)

    if method == "scale":
        if src_w <= box_w and src_h <= box_h:
            return src, full
        if src_w * box_h >= src_h * box_w:
            return (box_w, max(1, _round_div(src_h * box_w, src_w))), full
        return (max(1, _round_div(src_w * box_h, src_h)), box_h), full

    if src_w >= box_w and src_h >= box_h:
        out_w, out_h = box_w, box_h
    elif src_w * box_h <= src_h * box_w:
        out_w, out_h = src_w, max(1, min(src_h, _round_div(box_h * src_w, box_w)))
    else:
        out_w, out_h = max(1, min(src_w, _round_div(box_w * src_h, box_h))), src_h

    if src_w * out_h >= src_h * out_w:
        region_w, region_h = max(1, min(src_w, _round_div(src_h * out_w, out_h))), src_h
    else:
        region_w, region_h = src_w, max(1, min(src_h, _round_div(src_w * out_h, out_w)))
    left = (src_w - region_w) // 2
    top = (src_h - region_h) // 2
    return (out_w, out_h), (left, top, left + region_w, top + region_h)


def _round_div(a: int, b: int) -> int:
    return (2 * a + b) // (2 * b)


def _draft_jpeg(
    im: Image.Image, plans: list[tuple[tuple[int, int], tuple[int, int, int, int]]]
) -> float:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale, large enough for every
    (output size, source region) plan; return the scale used."""
    src_w, src_h = im.size
    wanted = (1, 1)
    for out, region in plans:
        region_w, region_h = region[2] - region[0], region[3] - region[1]
        wanted = (
            max(wanted[0], math.ceil(src_w * out[0] * _JPEG_DRAFT_GAP / region_w)),
            max(wanted[1], math.ceil(src_h * out[1] * _JPEG_DRAFT_GAP / region_h)),
        )
    # Mode None: only the DCT scale is wanted, colour conversion stays ours.
    result = im.draft(None, wanted)
    if result is None:
        return 1.0
    return src_w / result[1][2]


def _resize(
    im: Image.Image,
    out: tuple[int, int],
    region: tuple[int, int, int, int],
    scale: float,
) -> Image.Image:
    box = tuple(c / scale for c in region)
    if (box[2] - box[0], box[3] - box[1]) == out and scale == 1.0:
        # Pure crop (a source no larger than the thumbnail): no resampling blur.
        return im.crop(region)
    return im.resize(out, _RESAMPLE, box=box, reducing_gap=_REDUCING_GAP)


# --------------------------------------------------------------------------
# Pixel formats and colour


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _normalise_mode(im: Image.Image) -> Image.Image:
    """Bring a decoded frame into L, LA, RGB, RGBA or CMYK for resampling."""
    mode = im.mode
    if mode in ("L", "RGB", "RGBA", "LA", "CMYK") and "transparency" not in im.info:
        return im
    if mode == "1":
        return im.convert("L")
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit greyscale PNG; a plain convert would clip everything above 255
        # to white, so scale the range down instead.
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if mode in ("L", "LA", "La"):
        return im.convert("LA") if _has_alpha(im) else im.convert("L")
    return im.convert("RGBA") if _has_alpha(im) else im.convert("RGB")


def _colour_fixer(icc: bytes | None, mode: str) -> Callable[[Image.Image], Image.Image]:
    """Build the final colour step for frames of ``mode``.

    Pixels tagged with an ICC profile are converted to sRGB (thumbnails carry
    no profile, and browsers assume sRGB); an unusable profile is dropped.
    The LittleCMS transform is built once so animations pay for it once.
    """
    alpha = mode in ("RGBA", "LA")
    base_mode = {"RGBA": "RGB", "LA": "L"}.get(mode, mode)
    transform = _srgb_transform(icc, base_mode) if icc else None

    def fix(im: Image.Image) -> Image.Image:
        if transform is None:
            return im.convert("RGB") if im.mode == "CMYK" else im
        base = im.convert(base_mode) if alpha else im
        try:
            out = ImageCms.applyTransform(base, transform)
        except (ImageCms.PyCMSError, OSError, ValueError):
            return im.convert("RGB") if im.mode == "CMYK" else im
        if alpha:
            out.putalpha(im.getchannel("A"))
        return out

    return fix


def _srgb_transform(icc: bytes, mode: str) -> object | None:
    if ImageCms is None or mode not in ("L", "RGB", "CMYK"):
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        # Profiles are created per call: LittleCMS handles are not meant to be
        # shared between threads while transforms are being built.
        target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        return ImageCms.buildTransform(source, target, mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _strip(im: Image.Image) -> Image.Image:
    # Encoders fall back to im.info for comment, ICC profile and transparency;
    # emptying it is what keeps source metadata out of the output.
    im.info = {}
    return im


# --------------------------------------------------------------------------
# Rendering


def _render_still(im: Image.Image, box: tuple[int, int], method: str) -> Rendered:
    return _render_stills(im, [(box, method)])[0]


def _render_stills(im: Image.Image, requests: list[tuple[tuple[int, int], str]]) -> list[Rendered]:
    """Every requested still from one decode, at the scale the largest of them needs."""
    if im.format in ("JPEG", "MPO"):
        # JPEG EXIF lives in the header, so orientation is known before the
        # decoder runs and the draft scale can account for 90 degree turns.
        orientation = _orientation(im)
        plans = [_plan(im.size, box, method, orientation) for box, method in requests]
        scale = _draft_jpeg(im, plans)
        im.load()
    else:
        # PNG may keep eXIf after the pixel data, so read it after decoding.
        im.load()
        orientation = _orientation(im)
        plans = [_plan(im.size, box, method, orientation) for box, method in requests]
        scale = 1.0

    icc = im.info.get("icc_profile")
    frame = _normalise_mode(im)
    rendered = []
    for out, region in plans:
        thumb = _resize(frame, out, region, scale)
        if orientation in _TRANSPOSE:
            thumb = thumb.transpose(_TRANSPOSE[orientation])
        thumb = _colour_fixer(icc, thumb.mode)(thumb)
        rendered.append(_encode_still(thumb))
    return rendered


def _encode_still(im: Image.Image) -> Rendered:
    if im.mode in ("RGBA", "LA"):
        low, _ = im.getchannel("A").getextrema()
        if low == 255:
            # An alpha channel with nothing transparent in it (common for
            # screenshots and WebP photos) does not justify a PNG.
            im = im.convert("RGB" if im.mode == "RGBA" else "L")
    im = _strip(im)
    buf = io.BytesIO()
    if im.mode in ("RGBA", "LA"):
        im.save(buf, "PNG")
        media_type = "image/png"
    else:
        # Huffman optimisation costs well under a millisecond at thumbnail
        # sizes and shrinks every later download of the thumbnail.
        im.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
        media_type = "image/jpeg"
    return Rendered(buf.getvalue(), media_type, im.width, im.height)


def _render_animated(
    im: Image.Image,
    frames: int,
    box: tuple[int, int],
    method: str,
    max_pixels: int,
) -> Rendered:
    orientation = _orientation(im)
    canvas = im.size
    out, region = _plan(canvas, box, method, orientation)
    fix = _colour_fixer(im.info.get("icc_profile"), "RGBA")
    # A GIF without a NETSCAPE block plays once; WebP/APNG always declare it.
    loop = int(im.info.get("loop", 1 if im.format == "GIF" else 0))

    thumbs: list[Image.Image] = []
    durations: list[int] = []
    for index in range(frames):
        im.seek(index)
        if im.size != canvas:
            _check_pixels(im.size, max_pixels)
        frame = im.convert("RGBA")
        if frame.size != canvas:
            # Browsers clip GIF frames to the logical screen; so do we.
            frame = frame.crop((0, 0, *canvas))
        # WebP only knows a frame's duration once it has been decoded.
        durations.append(max(0, round(im.info.get("duration", 0) or 0)))
        thumb = _resize(frame, out, region, 1.0)
        if orientation in _TRANSPOSE:
            thumb = thumb.transpose(_TRANSPOSE[orientation])
        thumbs.append(_strip(fix(thumb)))

    buf = io.BytesIO()
    thumbs[0].save(
        buf,
        "WEBP",
        save_all=True,
        append_images=thumbs[1:],
        duration=durations,
        loop=loop,
        quality=WEBP_QUALITY,
        method=WEBP_METHOD,
        background=(0, 0, 0, 0),
    )
    return Rendered(buf.getvalue(), "image/webp", thumbs[0].width, thumbs[0].height)
