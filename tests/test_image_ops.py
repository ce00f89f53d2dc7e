"""Unit tests for media_app.image_ops; every input image is built in memory."""

import io
import struct
import time
import warnings
import zlib

import pytest
from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageFile, ImageOps, ImageStat
from PIL import JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from media_app import image_ops
from media_app.image_ops import (
    BrokenImage,
    ImageInfo,
    ImageTooLarge,
    UnsupportedImage,
    probe,
    render_thumbnail,
)

LIMITS = {"max_pixels": 50_000_000, "max_total_frame_pixels": 200_000_000}
RED, WHITE = (255, 0, 0), (255, 255, 255)

# Markers planted in source metadata; none may survive into a thumbnail.
GPS_MARKER = "GPS-MARKER-7f3a"
COMMENT_MARKER = b"COMMENT-MARKER-19c2"
XMP_MARKER = "XMP-MARKER-a81d"
TEXT_MARKER = "PNGTEXT-MARKER-55e0"
METADATA_CHUNKS = (
    b"Exif", b"EXIF", b"eXIf", b"ICC_PROFILE", b"iCCP", b"ICCP", b"tEXt", b"zTXt", b"iTXt", b"XMP "
)


# --------------------------------------------------------------------------
# Helpers


def encode(im, fmt, **params):
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def render(data, width=64, height=64, method="scale", animated=False, **limits):
    return render_thumbnail(
        io.BytesIO(data),
        width=width,
        height=height,
        method=method,
        animated=animated,
        **{**LIMITS, **limits},
    )


def opened(rendered):
    """Decode a rendering and check it is what its media type claims."""
    im = Image.open(io.BytesIO(rendered.data))
    expected = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}[rendered.media_type]
    assert im.format == expected
    assert im.size == (rendered.width, rendered.height)
    im.load()
    return im


def close_to(pixel, expected, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


def marked(size=(400, 300), corner=(100, 75)):
    """White image with a red block in the top-left corner: asymmetric under every flip."""
    im = Image.new("RGB", size, WHITE)
    ImageDraw.Draw(im).rectangle((0, 0, corner[0] - 1, corner[1] - 1), fill=RED)
    return im


def assert_red_corner_top_left(im):
    rgb = im.convert("RGB")
    w, h = rgb.size
    assert close_to(rgb.getpixel((3, 3)), RED), rgb.getpixel((3, 3))
    for xy in ((w - 4, 3), (3, h - 4), (w - 4, h - 4)):
        assert close_to(rgb.getpixel(xy), WHITE), (xy, rgb.getpixel(xy))


def gps_exif(orientation=None):
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x010E] = "holiday snap"  # ImageDescription
    gps = exif.get_ifd(0x8825)
    gps[0x0001] = "N"
    gps[0x0012] = GPS_MARKER  # GPSMapDatum, plain ASCII so it is greppable
    return exif


def srgb_icc():
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width, height):
    """A PNG declaring huge dimensions backed by a few bytes of real IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def gif_with_frames(count, size=64, duration_cs=4, descriptors=None, padding=b""):
    """Build a GIF of ``count`` frames by repeating one Pillow-encoded frame.

    Encoding thousands of frames through Pillow would take seconds, and it
    would merge identical frames anyway.
    """
    palette_image = Image.new("P", (size, size), 1)
    palette_image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    one = encode(palette_image, "GIF")
    descriptor = b"," + struct.pack("<HHHH", 0, 0, size, size)
    start = one.index(descriptor)
    head, frame = one[:start], one[start:-1]  # drop the trailer
    gce = b"!\xf9\x04\x00" + struct.pack("<H", duration_cs) + b"\x00\x00"
    body = []
    for index in range(count):
        block = frame
        if descriptors and index in descriptors:
            block = b"," + struct.pack("<HHHH", *descriptors[index]) + frame[9:]
        body.append(gce + block + padding)
    return head + b"".join(body) + b";"


def frame_durations(im):
    durations = []
    for index in range(im.n_frames):
        im.seek(index)
        im.load()
        durations.append(im.info["duration"])
    return durations


class CountingReader(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.bytes_read = 0
        self.reads = 0

    def read(self, size=-1):
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        self.reads += 1
        return chunk


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel data is decoded."""

    def forbidden(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", forbidden)


# --------------------------------------------------------------------------
# EXIF orientation

# What each orientation asks a viewer to do to the stored pixels, per the
# EXIF spec; the test stores the inverse so that a correct viewer sees the
# image upright.  PIL rotates counter-clockwise.
STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # viewer rotates 90 clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # viewer rotates 90 counter-clockwise
}


def stored_for(orientation, upright):
    method = STORE_FOR_ORIENTATION[orientation]
    return upright if method is None else upright.transpose(method)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation):
    upright = marked()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored_for(orientation, upright), "JPEG", quality=95, exif=exif)
    # The fixture itself must be right: Pillow's reference transpose agrees.
    assert_red_corner_top_left(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))

    out = render(data, 200, 200)

    assert (out.width, out.height) == (200, 150)
    assert_red_corner_top_left(opened(out))


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_quarter_turn_crop_gets_requested_box_in_display_orientation(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored_for(orientation, marked()), "JPEG", quality=95, exif=exif)

    out = render(data, 160, 90, method="crop")

    assert (out.width, out.height) == (160, 90)
    assert_red_corner_top_left(opened(out))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orientation_from_png_exif_chunk(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored_for(orientation, marked()), "PNG", exif=exif)

    out = render(data, 200, 200)

    assert (out.width, out.height) == (200, 150)
    assert_red_corner_top_left(opened(out))


@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00garbage, not TIFF at all",
        b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # IFD offset far beyond the block
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01",  # cut mid-entry
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 10,  # 65535 entries claimed
    ],
)
def test_broken_exif_falls_back_to_no_rotation(exif):
    data = encode(marked(), "JPEG", quality=95, exif=exif)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = render(data, 200, 200)

    assert [str(w.message) for w in caught] == []

    assert (out.width, out.height) == (200, 150)
    assert_red_corner_top_left(opened(out))


def test_exif_parser_exception_falls_back_to_no_rotation():
    # ImageMagick-style hex EXIF in a PNG text chunk; invalid hex makes
    # Pillow's getexif() raise rather than warn.
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", "\nexif\n      12\nzz-not-hex")
    data = encode(marked(), "PNG", pnginfo=info)
    with pytest.raises(ValueError):
        Image.open(io.BytesIO(data)).getexif()

    out = render(data, 200, 200)

    assert (out.width, out.height) == (200, 150)
    assert_red_corner_top_left(opened(out))


@pytest.mark.parametrize("value", [0, 9, 255, 65535])
def test_out_of_range_orientation_is_ignored(value):
    exif = Image.Exif()
    exif[0x0112] = value
    data = encode(marked(), "JPEG", quality=95, exif=exif)

    assert_red_corner_top_left(opened(render(data, 200, 200)))


# --------------------------------------------------------------------------
# Metadata stripping


def _jpeg_with_everything():
    return encode(
        marked(),
        "JPEG",
        exif=gps_exif(),
        comment=COMMENT_MARKER,
        xmp=f"<x:xmpmeta>{XMP_MARKER}</x:xmpmeta>".encode(),
        icc_profile=srgb_icc(),
    )


def _png_with_everything(mode):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", TEXT_MARKER)  # tEXt
    info.add_text("Description", TEXT_MARKER, zip=True)  # zTXt
    info.add_itxt("Title", TEXT_MARKER, lang="en", tkey="Title")  # iTXt
    info.add_itxt("XML:com.adobe.xmp", f"<x:xmpmeta>{XMP_MARKER}</x:xmpmeta>")
    im = marked().convert(mode)
    if mode == "RGBA":
        im.putpixel((399, 299), (0, 0, 0, 0))
    return encode(im, "PNG", pnginfo=info, exif=gps_exif(), icc_profile=srgb_icc())


def _webp_with_everything():
    return encode(
        marked(),
        "WEBP",
        exif=gps_exif(),
        xmp=f"<x:xmpmeta>{XMP_MARKER}</x:xmpmeta>".encode(),
        icc_profile=srgb_icc(),
    )


def _gif_with_comment():
    frames = [Image.new("RGB", (60, 40), colour) for colour in (RED, (0, 0, 255))]
    return encode(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, comment=COMMENT_MARKER
    )


@pytest.mark.parametrize(
    ("source", "animated", "media_type"),
    [
        pytest.param(_jpeg_with_everything, False, "image/jpeg", id="jpeg"),
        pytest.param(lambda: _png_with_everything("RGB"), False, "image/jpeg", id="png-rgb"),
        pytest.param(lambda: _png_with_everything("RGBA"), False, "image/png", id="png-rgba"),
        pytest.param(_webp_with_everything, False, "image/jpeg", id="webp"),
        pytest.param(_gif_with_comment, False, "image/jpeg", id="gif-still"),
        pytest.param(_gif_with_comment, True, "image/webp", id="gif-animated"),
    ],
)
def test_no_metadata_survives(source, animated, media_type):
    data = source()
    planted = [GPS_MARKER.encode(), COMMENT_MARKER, XMP_MARKER.encode(), TEXT_MARKER.encode()]
    assert any(marker in data for marker in planted)  # the fixture carries metadata

    out = render(data, 100, 100, animated=animated)

    assert out.media_type == media_type
    for needle in planted + list(METADATA_CHUNKS):
        assert needle not in out.data, needle
    im = opened(out)
    assert not im.getexif()
    for key in ("exif", "comment", "xmp", "XML:com.adobe.xmp", "icc_profile", "transparency"):
        assert key not in im.info, key
    if im.format == "PNG":
        assert not im.text


def red_blue_swapped_icc():
    """A valid RGB profile whose red and blue primaries trade places.

    Converting through it to sRGB visibly swaps red and blue, which proves the
    profile was honoured rather than ignored.
    """
    icc = bytearray(srgb_icc())
    (count,) = struct.unpack_from(">I", icc, 128)
    entries = {}
    for index in range(count):
        signature, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * index)
        entries[signature] = (index, offset, size)
    red_index, red_offset, red_size = entries[b"rXYZ"]
    blue_index, blue_offset, blue_size = entries[b"bXYZ"]
    struct.pack_into(">4sII", icc, 132 + 12 * red_index, b"rXYZ", blue_offset, blue_size)
    struct.pack_into(">4sII", icc, 132 + 12 * blue_index, b"bXYZ", red_offset, red_size)
    return bytes(icc)


@pytest.mark.parametrize(
    ("build", "animated"),
    [
        pytest.param(
            lambda icc: encode(Image.new("RGB", (120, 80), (200, 30, 60)), "JPEG", quality=95, icc_profile=icc),
            False,
            id="jpeg",
        ),
        pytest.param(
            lambda icc: encode(Image.new("RGB", (120, 80), (200, 30, 60)), "PNG", icc_profile=icc),
            False,
            id="png",
        ),
        pytest.param(
            lambda icc: encode(Image.new("RGBA", (120, 80), (200, 30, 60, 128)), "PNG", icc_profile=icc),
            False,
            id="png-alpha",
        ),
        pytest.param(
            lambda icc: encode(
                Image.new("RGB", (120, 80), (200, 30, 60)),
                "WEBP",
                save_all=True,
                append_images=[Image.new("RGB", (120, 80), (190, 40, 50))],
                duration=[100, 100],
                lossless=True,
                icc_profile=icc,
            ),
            True,
            id="webp-animated",
        ),
    ],
)
def test_icc_profile_is_applied(build, animated):
    out = render(build(red_blue_swapped_icc()), 60, 60, animated=animated)

    im = opened(out)
    assert "icc_profile" not in im.info
    r, g, b, *alpha = im.convert("RGBA" if im.mode == "RGBA" else "RGB").getpixel((30, 20))
    assert b > 150 and r < 100, (r, g, b)
    if alpha:
        assert abs(alpha[0] - 128) <= 2


def test_icc_profile_is_converted_not_carried():
    data = encode(Image.new("RGB", (120, 80), (200, 30, 60)), "JPEG", quality=95, icc_profile=srgb_icc())

    im = opened(render(data, 60, 60))

    assert "icc_profile" not in im.info
    assert close_to(im.getpixel((30, 20)), (200, 30, 60), tolerance=8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_unusable_icc_profile_is_dropped(fmt):
    data = encode(Image.new("RGB", (120, 80), (20, 200, 60)), fmt, icc_profile=b"not an icc profile" * 8)

    im = opened(render(data, 60, 60))

    assert "icc_profile" not in im.info
    assert close_to(im.getpixel((30, 20)), (20, 200, 60), tolerance=8)


# --------------------------------------------------------------------------
# Pixel formats and transparency


def test_transparent_png_keeps_alpha_without_darkening():
    im = Image.new("RGBA", (200, 200), (255, 0, 0, 255))
    ImageDraw.Draw(im).rectangle((0, 0, 99, 99), fill=(0, 0, 0, 0))

    out = opened(render(encode(im, "PNG"), 100, 100))

    assert out.mode == "RGBA"
    assert out.getpixel((2, 2))[3] == 0
    assert out.getpixel((90, 90)) == (255, 0, 0, 255)
    # Resampling across the alpha edge must not drag black into the colour.
    edge = out.getpixel((50, 75))
    assert edge[3] > 0 and edge[0] >= 250 and edge[1:3] == (0, 0)


def test_palette_gif_transparency_is_kept():
    im = Image.new("P", (80, 80), 1)
    im.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    ImageDraw.Draw(im).rectangle((0, 0, 39, 39), fill=0)

    out = render(encode(im, "GIF", transparency=0), 40, 40)

    assert out.media_type == "image/png"
    rgba = opened(out).convert("RGBA")
    assert rgba.getpixel((2, 2))[3] == 0
    assert close_to(rgba.getpixel((35, 35)), (0, 200, 0, 255), tolerance=2)


@pytest.mark.parametrize(
    ("build", "media_type"),
    [
        pytest.param(
            lambda: encode(Image.new("RGB", (60, 60), RED), "PNG", transparency=RED), "image/png", id="rgb-trns"
        ),
        pytest.param(
            lambda: encode(Image.new("L", (60, 60), 90), "PNG", transparency=90), "image/png", id="l-trns"
        ),
        pytest.param(lambda: encode(Image.new("LA", (60, 60), (90, 0)), "PNG"), "image/png", id="la"),
        pytest.param(
            lambda: encode(Image.new("RGBA", (60, 60), (9, 9, 9, 0)), "WEBP", lossless=True),
            "image/png",
            id="webp-rgba",
        ),
    ],
)
def test_fully_transparent_sources_stay_transparent(build, media_type):
    out = render(build(), 30, 30)

    assert out.media_type == media_type
    assert opened(out).convert("RGBA").getpixel((15, 15))[3] == 0


def test_opaque_alpha_channel_is_encoded_as_jpeg():
    out = render(encode(Image.new("RGBA", (60, 60), (10, 20, 200, 255)), "PNG"), 30, 30)

    assert out.media_type == "image/jpeg"
    assert close_to(opened(out).getpixel((15, 15)), (10, 20, 200), tolerance=8)


def test_cmyk_jpeg_becomes_rgb():
    cyan = Image.new("CMYK", (120, 80), (255, 0, 0, 0))

    im = opened(render(encode(cyan, "JPEG", quality=95), 60, 60))

    assert im.mode == "RGB"
    assert close_to(im.getpixel((30, 20)), (0, 255, 255), tolerance=12)


@pytest.mark.parametrize(
    ("build", "expected_grey"),
    [
        pytest.param(lambda: Image.new("1", (64, 64), 1), 255, id="1-bit"),
        pytest.param(lambda: Image.new("L", (64, 64), 77), 77, id="L"),
        pytest.param(lambda: Image.new("I;16", (64, 64), 32768), 128, id="I;16"),
        pytest.param(lambda: Image.new("I;16", (64, 64), 65535), 255, id="I;16-white"),
        pytest.param(lambda: Image.new("P", (64, 64), 3), 3, id="palette"),
    ],
)
def test_unusual_png_modes_render_sensibly(build, expected_grey):
    data = encode(build(), "PNG")

    im = opened(render(data, 32, 32))

    assert im.format == "JPEG"
    grey = im.convert("L").getpixel((16, 16))
    assert abs(grey - expected_grey) <= 3


def test_greyscale_jpeg_stays_greyscale():
    im = opened(render(encode(Image.new("L", (300, 200), 150), "JPEG"), 90, 90))

    assert im.mode == "L"
    assert abs(im.getpixel((40, 30)) - 150) <= 3


# --------------------------------------------------------------------------
# Animation


ANIMATION_COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250)]
ANIMATION_DURATIONS = [100, 200, 300, 400, 500]


def _animation_frames(mode="RGB"):
    frames = []
    for colour in ANIMATION_COLOURS:
        frame = Image.new(mode, (120, 80), colour + ((255,) if mode == "RGBA" else ()))
        if mode == "RGBA":
            ImageDraw.Draw(frame).rectangle((0, 0, 19, 19), fill=(0, 0, 0, 0))
        frames.append(frame)
    return frames


def _animated(fmt, mode="RGB", loop=0):
    frames = _animation_frames(mode)
    params = {
        "save_all": True,
        "append_images": frames[1:],
        "duration": ANIMATION_DURATIONS,
        "loop": loop,
    }
    if fmt == "GIF" and mode == "RGBA":
        frames = [frame.convert("P", palette=Image.Palette.ADAPTIVE) for frame in frames]
        for frame in frames:
            frame.info["transparency"] = frame.getpixel((0, 0))
        params["append_images"] = frames[1:]
        params["disposal"] = 2
    if fmt == "WEBP":
        params["lossless"] = True
    return encode(frames[0], fmt, **params)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_becomes_animated_webp_with_same_timing(fmt):
    out = render(_animated(fmt, loop=3), 60, 60, animated=True)

    assert out.media_type == "image/webp"
    assert (out.width, out.height) == (60, 40)
    im = opened(out)
    assert im.n_frames == len(ANIMATION_COLOURS)
    assert im.info["loop"] == 3
    assert frame_durations(im) == ANIMATION_DURATIONS
    for index, colour in enumerate(ANIMATION_COLOURS):
        im.seek(index)
        assert close_to(im.convert("RGB").getpixel((30, 20)), colour, tolerance=12), index


def test_animated_gif_transparency_survives():
    out = render(_animated("GIF", mode="RGBA"), 60, 60, animated=True)

    im = opened(out)
    assert im.n_frames == len(ANIMATION_COLOURS)
    for index in range(im.n_frames):
        im.seek(index)
        rgba = im.convert("RGBA")
        assert rgba.getpixel((1, 1))[3] == 0, index
        assert rgba.getpixel((40, 30))[3] == 255, index


def test_gif_without_loop_extension_plays_once():
    frames = _animation_frames()
    data = encode(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=ANIMATION_DURATIONS
    )
    assert b"NETSCAPE" not in data

    im = opened(render(data, 60, 60, animated=True))

    assert im.info["loop"] == 1


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_not_requested_gives_first_frame_still(fmt):
    out = render(_animated(fmt), 60, 60, animated=False)

    assert out.media_type == "image/jpeg"
    im = opened(out)
    assert getattr(im, "n_frames", 1) == 1
    assert close_to(im.getpixel((30, 20)), ANIMATION_COLOURS[0], tolerance=12)


def test_single_frame_gif_with_animated_flag_is_a_still():
    out = render(encode(Image.new("RGB", (50, 50), RED), "GIF"), 20, 20, animated=True)

    assert out.media_type == "image/jpeg"


def test_mpo_is_treated_as_its_primary_jpeg():
    primary, second = Image.new("RGB", (80, 60), RED), Image.new("RGB", (80, 60), (0, 0, 255))
    data = encode(primary, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"

    assert probe(io.BytesIO(data), **LIMITS) == ImageInfo("JPEG", 80, 60, 1, False)
    out = render(data, 40, 40, animated=True)
    assert out.media_type == "image/jpeg"
    assert close_to(opened(out).getpixel((20, 15)), RED, tolerance=8)


def test_probe_reports_animation():
    assert probe(io.BytesIO(_animated("GIF")), **LIMITS) == ImageInfo("GIF", 120, 80, 5, True)
    assert probe(io.BytesIO(_animated("WEBP")), **LIMITS) == ImageInfo("WEBP", 120, 80, 5, True)
    assert probe(io.BytesIO(_animated("PNG")), **LIMITS) == ImageInfo("PNG", 120, 80, 5, True)
    still = encode(Image.new("RGB", (30, 20)), "JPEG")
    assert probe(io.BytesIO(still), **LIMITS) == ImageInfo("JPEG", 30, 20, 1, False)


# --------------------------------------------------------------------------
# Geometry


SOURCE_SIZES = [
    (50, 40), (40, 50), (320, 240), (1000, 333), (333, 1000), (700, 700), (1000, 1), (1, 700)
]
BOXES = [(320, 240), (96, 96), (800, 600), (32, 32)]


@pytest.mark.parametrize("source", SOURCE_SIZES)
@pytest.mark.parametrize("box", BOXES)
def test_scale_fits_keeps_aspect_and_never_upscales(source, box):
    out = render(encode(Image.new("RGB", source, (90, 120, 150)), "PNG"), *box)

    sw, sh = source
    bw, bh = box
    assert 1 <= out.width <= min(sw, bw)
    assert 1 <= out.height <= min(sh, bh)
    if sw <= bw and sh <= bh:
        assert (out.width, out.height) == source
    elif sw * bh >= sh * bw:
        # Width binds; the height follows the source aspect to within a pixel.
        assert out.width == bw
        assert abs(out.height - max(1.0, bw * sh / sw)) <= 1
    else:
        assert out.height == bh
        assert abs(out.width - max(1.0, bh * sw / sh)) <= 1


@pytest.mark.parametrize("source", SOURCE_SIZES)
@pytest.mark.parametrize("box", BOXES)
def test_crop_fills_exactly_or_shrinks_the_box_never_upscales(source, box):
    out = render(encode(Image.new("RGB", source, (90, 120, 150)), "PNG"), *box, method="crop")

    sw, sh = source
    bw, bh = box
    assert 1 <= out.width <= min(sw, bw)
    assert 1 <= out.height <= min(sh, bh)
    if sw >= bw and sh >= bh:
        assert (out.width, out.height) == box
    elif sw * bh <= sh * bw:
        # The requested aspect at source scale: the source width binds and the
        # height follows the requested aspect to within a pixel.
        assert out.width == sw
        assert abs(out.height - max(1.0, sw * bh / bw)) <= 1
    else:
        assert out.height == sh
        assert abs(out.width - max(1.0, sh * bw / bh)) <= 1


def test_crop_is_centred():
    im = Image.new("RGB", (400, 100), (0, 200, 0))
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 0, 99, 99), fill=RED)
    draw.rectangle((300, 0, 399, 99), fill=(0, 0, 255))

    out = opened(render(encode(im, "PNG"), 50, 50, method="crop"))

    assert (out.width, out.height) == (50, 50)
    for xy in ((1, 1), (48, 1), (1, 48), (48, 48)):
        assert close_to(out.getpixel(xy), (0, 200, 0), tolerance=10), xy


def test_small_source_crop_is_a_pixel_exact_centre_cut():
    im = Image.new("RGB", (100, 50), WHITE)
    ImageDraw.Draw(im).rectangle((25, 0, 74, 49), fill=RED)

    out = opened(render(encode(im, "PNG"), 80, 80, method="crop"))

    assert (out.width, out.height) == (50, 50)
    assert ImageStat.Stat(out).extrema[1] == (0, 0)  # pure red, no resampling blur


def _structured(size):
    """Bars and a disc on a gradient: edges expose any misplaced resampling box."""
    w, h = size
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(im)
    for index, x in enumerate(range(0, w, w // 10)):
        draw.rectangle((x, 0, x + w // 20, h // 2), fill=(200, 40, 40) if index % 2 else (40, 40, 200))
    draw.ellipse((w // 4, h // 3, 3 * w // 4, h - 10), fill=(30, 160, 60))
    return im


@pytest.mark.parametrize(
    ("method", "box"),
    [
        ("scale", (320, 240)),
        ("scale", (100, 400)),
        ("crop", (200, 300)),
        ("crop", (300, 100)),
        ("crop", (320, 320)),
    ],
)
def test_jpeg_draft_path_matches_a_full_decode(method, box, monkeypatch):
    data = encode(_structured((1600, 1200)), "JPEG", quality=95)
    scales = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(self, mode, size):
        result = original_draft(self, mode, size)
        scales.append(1600 / result[1][2])
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)

    out = opened(render(data, *box, method=method))

    assert scales and scales[0] > 1  # the decoder really worked at reduced scale
    full = Image.open(io.BytesIO(data)).convert("RGB")
    size = (out.width, out.height)
    if method == "scale":
        reference = full.resize(size, Image.Resampling.LANCZOS)
    else:
        reference = ImageOps.fit(full, size, Image.Resampling.LANCZOS)
    # Luma only: chroma subsampling of the small JPEG output would otherwise
    # drown a one-pixel misplacement, which costs well over 1.5 levels here.
    difference = ImageStat.Stat(ImageChops.difference(out.convert("L"), reference.convert("L"))).mean[0]
    assert difference < 1.5, difference


# --------------------------------------------------------------------------
# Hostile and unsupported input


def _psd_bytes():
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 2, 2, 8, 3)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + b"\x80" * 12


SVG = (
    b'<?xml version="1.0"?>'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
)

UNSUPPORTED = {
    "TIFF": lambda: encode(Image.new("RGB", (16, 16), RED), "TIFF"),
    "EPS": lambda: encode(Image.new("RGB", (16, 16), RED), "EPS"),
    "BMP": lambda: encode(Image.new("RGB", (16, 16), RED), "BMP"),
    "ICO": lambda: encode(Image.new("RGB", (16, 16), RED), "ICO"),
    "PSD": _psd_bytes,
    "SVG": lambda: SVG,
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_foreign_formats_are_refused_without_running_their_decoders(name, monkeypatch):
    data = UNSUPPORTED[name]()
    if name != "SVG":  # Pillow has no SVG reader; the others it would happily open
        assert Image.open(io.BytesIO(data)).format == name

    Image.init()
    touched = []
    for fmt, (factory, accept) in list(Image.OPEN.items()):
        if fmt in image_ops.ALLOWED_FORMATS:
            continue

        def spy_factory(*args, _fmt=fmt, **kwargs):
            touched.append(_fmt)
            raise AssertionError(f"{_fmt} plugin was invoked")

        def spy_accept(prefix, _fmt=fmt):
            touched.append(_fmt)
            return False

        monkeypatch.setitem(Image.OPEN, fmt, (spy_factory, spy_accept))

    with pytest.raises(UnsupportedImage):
        probe(io.BytesIO(data), **LIMITS)
    with pytest.raises(UnsupportedImage):
        render(data)
    assert touched == []


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 64, b"definitely not an image", b"GIF89a"],
    ids=["empty", "zeros", "text", "gif-magic-only"],
)
def test_unidentifiable_bytes_are_unsupported(data):
    with pytest.raises(UnsupportedImage):
        probe(io.BytesIO(data), **LIMITS)
    with pytest.raises(UnsupportedImage):
        render(data)


def test_huge_png_is_refused_from_the_header(no_decoding):
    data = png_header_only(100_000, 100_000)
    assert len(data) < 4096

    with pytest.raises(ImageTooLarge):
        probe(io.BytesIO(data), **LIMITS)
    with pytest.raises(ImageTooLarge):
        render(data)


def test_own_pixel_budget_applies_below_pillows_limit(no_decoding):
    data = png_header_only(9_000, 9_000)  # 81 MP: Pillow itself would not object

    with pytest.raises(ImageTooLarge):
        probe(io.BytesIO(data), **LIMITS)
    with pytest.raises(ImageTooLarge):
        render(data)
    assert probe(io.BytesIO(data), max_pixels=81_000_000, max_total_frame_pixels=1).width == 9_000


def test_pillow_bomb_warning_counts_as_too_large(no_decoding):
    data = png_header_only(10_000, 10_000)  # in Pillow's warn-only band
    filters_before = list(warnings.filters)

    with pytest.raises(ImageTooLarge):
        probe(io.BytesIO(data), max_pixels=10**12, max_total_frame_pixels=10**12)

    assert warnings.filters == filters_before


def test_jpeg_declaring_65535_square_is_refused(no_decoding):
    data = encode(Image.new("RGB", (16, 16), RED), "JPEG")
    sof = data.index(b"\xff\xc0")
    data = data[: sof + 5] + struct.pack(">HH", 65535, 65535) + data[sof + 9 :]

    with pytest.raises(ImageTooLarge):
        probe(io.BytesIO(data), **LIMITS)
    with pytest.raises(ImageTooLarge):
        render(data)


def test_jpeg_over_own_budget_is_refused_before_decoding(no_decoding):
    data = encode(Image.new("RGB", (16, 16), RED), "JPEG")
    sof = data.index(b"\xff\xc0")
    data = data[: sof + 5] + struct.pack(">HH", 8000, 8000) + data[sof + 9 :]
    assert Image.open(io.BytesIO(data)).size == (8000, 8000)  # Pillow alone would decode it

    with pytest.raises(ImageTooLarge):
        probe(io.BytesIO(data), **LIMITS)
    with pytest.raises(ImageTooLarge):
        render(data)


def test_gif_with_thousands_of_frames_fails_fast(no_decoding):
    data = gif_with_frames(3000)
    reader = CountingReader(data)

    started = time.perf_counter()
    with pytest.raises(ImageTooLarge):
        probe(reader, max_pixels=LIMITS["max_pixels"], max_total_frame_pixels=1_000_000)
    with pytest.raises(ImageTooLarge):
        render(data, animated=True, max_total_frame_pixels=1_000_000)
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0
    # Counting stopped at the budget (about 245 frames) instead of walking all 3000.
    assert reader.bytes_read < len(data) // 4


def test_gif_frame_count_matches_pillow():
    data = gif_with_frames(3000)

    info = probe(io.BytesIO(data), **LIMITS)

    assert info == ImageInfo("GIF", 64, 64, 3000, True)
    assert Image.open(io.BytesIO(data)).n_frames == 3000


def test_stray_bytes_between_gif_blocks_do_not_hide_frames():
    data = gif_with_frames(40, size=16, padding=b"\x00\x00junk" + b"\x00" * 1000)

    assert probe(io.BytesIO(data), **LIMITS).frames == Image.open(io.BytesIO(data)).n_frames == 40
    # All 40 frames are identical, so libwebp may legitimately merge them.
    assert render(data, 8, 8, animated=True).media_type == "image/webp"


@pytest.mark.parametrize("where", ["before-first-frame", "between-frames"])
def test_gif_padded_with_junk_is_refused_quickly(where, no_decoding):
    junk = b"\x00" * 20_000_000
    if where == "between-frames":
        data = gif_with_frames(2, size=16, padding=junk)
    else:
        one = gif_with_frames(1, size=16)
        first_block = one.index(b"!\xf9")
        data = one[:first_block] + junk + one[first_block:]

    started = time.perf_counter()
    with pytest.raises(BrokenImage):
        probe(io.BytesIO(data), **LIMITS)
    with pytest.raises(BrokenImage):
        render(data, animated=True)
    # Pillow alone spends seconds stepping through this junk byte by byte.
    assert time.perf_counter() - started < 0.5


def test_animation_frame_count_is_capped():
    data = gif_with_frames(1001, size=8)

    assert probe(io.BytesIO(data), **LIMITS).frames == 1001
    with pytest.raises(ImageTooLarge):
        probe(io.BytesIO(data), **LIMITS, max_frames=1000)
    with pytest.raises(ImageTooLarge):
        render(data, animated=True)  # image_ops.DEFAULT_MAX_FRAMES
    assert render(data, animated=True, max_frames=2000).media_type == "image/webp"
    assert render(data, animated=False).media_type == "image/jpeg"


def test_many_frame_gif_still_renders_its_first_frame_without_a_frame_budget():
    data = gif_with_frames(3000)
    reader = CountingReader(data)

    out = render_thumbnail(
        reader, width=32, height=32, method="scale", animated=False, max_pixels=10**6, max_total_frame_pixels=1
    )

    assert (out.width, out.height) == (32, 32)
    # Walking all 3000 frames would take over 10000 small reads; Pillow's
    # decoder reads the first frame in a few large ones.
    assert reader.reads < 300


def test_gif_frame_outgrowing_the_screen_is_budgeted(no_decoding):
    data = gif_with_frames(2, size=16, descriptors={1: (0, 0, 8000, 8000)})
    assert Image.open(io.BytesIO(data)).size == (16, 16)  # Pillow sees only the screen

    with pytest.raises(ImageTooLarge):
        probe(io.BytesIO(data), max_pixels=1_000_000, max_total_frame_pixels=10**12)
    with pytest.raises(ImageTooLarge):
        render(data, animated=True, max_pixels=1_000_000, max_total_frame_pixels=10**12)


def test_oversized_webp_canvas_is_refused_before_libwebp_sees_it(monkeypatch):
    small = encode(Image.new("RGBA", (8, 8), (1, 2, 3, 0)), "WEBP", lossless=True, exif=gps_exif())
    assert small[12:16] == b"VP8X"
    declared = (9000 - 1).to_bytes(3, "little")
    data = small[:24] + declared + declared + small[30:]

    def forbidden(*args, **kwargs):
        raise AssertionError("libwebp decoder was created")

    monkeypatch.setattr(WebPImagePlugin._webp, "WebPAnimDecoder", forbidden)
    for call in (lambda: probe(io.BytesIO(data), **LIMITS), lambda: render(data)):
        with pytest.raises(ImageTooLarge):
            call()


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: encode(Image.new("RGB", (300, 200)), "WEBP"), id="lossy-vp8"),
        pytest.param(
            lambda: encode(Image.new("RGB", (300, 200)), "WEBP", lossless=True), id="lossless-vp8l"
        ),
        pytest.param(
            lambda: encode(Image.new("RGBA", (300, 200)), "WEBP", exif=b"Exif\x00\x00"), id="extended-vp8x"
        ),
    ],
)
def test_webp_header_sizes_agree_with_pillow(build):
    data = build()

    assert image_ops._webp_canvas(data[:30]) == Image.open(io.BytesIO(data)).size == (300, 200)


def test_animated_webp_over_frame_budget(no_decoding):
    with pytest.raises(ImageTooLarge):
        probe(io.BytesIO(_animated("WEBP")), max_pixels=10**6, max_total_frame_pixels=120 * 80 * 4)
    with pytest.raises(ImageTooLarge):
        render(_animated("PNG"), animated=True, max_frames=4)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_truncated_pixel_data_is_broken(fmt):
    noise = Image.effect_noise((300, 200), 60).convert("RGB")
    data = encode(noise, fmt)
    cut = data[: len(data) // 2]

    with pytest.raises(BrokenImage):
        render(cut)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_truncated_file_still_probes_from_its_intact_header(fmt):
    data = encode(Image.effect_noise((300, 200), 60).convert("RGB"), fmt)

    info = probe(io.BytesIO(data[: len(data) // 2]), **LIMITS)

    assert (info.format, info.width, info.height) == (fmt, 300, 200)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
@pytest.mark.parametrize("keep", [8, 24, 40, 80])
def test_truncated_headers_raise_image_errors_only(fmt, keep):
    data = encode(Image.new("RGB", (40, 30), RED), fmt, **({"exif": gps_exif()} if fmt != "GIF" else {}))
    assert keep < len(data)
    truncated = data[:keep]

    # Rendering needs the pixels, which are cut off: always one of the two image errors.
    with pytest.raises((UnsupportedImage, BrokenImage)):
        render(truncated)
    # Probing needs the header only: either the true size or one of the two image errors.
    try:
        info = probe(io.BytesIO(truncated), **LIMITS)
    except (UnsupportedImage, BrokenImage):
        return
    assert (info.format, info.width, info.height) == (fmt, 40, 30)


# --------------------------------------------------------------------------
# API surface


def test_accepts_bytes_and_unseekable_streams():
    data = encode(marked(), "JPEG")

    class Unseekable(io.RawIOBase):
        def __init__(self, payload):
            self._inner = io.BytesIO(payload)

        def readable(self):
            return True

        def seekable(self):
            return False

        def readinto(self, buffer):
            chunk = self._inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    box = {"width": 40, "height": 40, "method": "scale", "animated": False}
    from_bytes = render_thumbnail(data, **box, **LIMITS)
    from_stream = render_thumbnail(Unseekable(data), **box, **LIMITS)

    assert from_bytes == from_stream
    assert probe(Unseekable(data), **LIMITS).width == 400


def test_caller_file_is_left_open():
    fp = io.BytesIO(encode(marked(), "PNG"))

    render_thumbnail(fp, width=40, height=40, method="crop", animated=False, **LIMITS)
    probe(fp, **LIMITS)

    assert not fp.closed


@pytest.mark.parametrize(
    ("width", "height", "method"), [(0, 10, "scale"), (10, -1, "crop"), (10, 10, "stretch")]
)
def test_bad_arguments_are_programming_errors(width, height, method):
    with pytest.raises(ValueError):
        render_thumbnail(b"", width=width, height=height, method=method, animated=False, **LIMITS)


def test_every_failure_a_caller_must_map_is_an_image_error():
    """Callers (services.thumbnails) catch ImageError: each kind of bad input must reach them
    as one, with its own type, never as a Pillow or OS exception."""
    bmp = encode(Image.new("RGB", (4, 4), RED), "BMP")
    broken = encode(Image.new("RGB", (40, 30), RED), "JPEG")[:200]
    huge = png_header_only(20_000, 20_000)
    cases = [(bmp, UnsupportedImage), (broken, BrokenImage), (huge, ImageTooLarge)]
    for data, expected in cases:
        with pytest.raises(image_ops.ImageError) as caught:
            render(data, max_pixels=10_000_000)
        assert type(caught.value) is expected, (expected, caught.value)


@pytest.mark.parametrize("fmt", image_ops.ALLOWED_FORMATS)
def test_every_allowed_format_renders(fmt):
    rendered = render(encode(marked(), fmt), width=40, height=40)
    assert (rendered.width, rendered.height) == (40, 30)


def test_module_does_not_import_django():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(image_ops))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert "django" not in imported


def test_several_stills_from_one_decode_match_single_renders():
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((2000, 1500)).convert("RGB").save(buf, "JPEG", quality=90)
    boxes = [(32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"), (640, 480, "scale"), (800, 600, "scale")]
    renders = image_ops.render_still_thumbnails(io.BytesIO(buf.getvalue()), boxes=boxes, max_pixels=10**8)
    assert [(r.width, r.height) for r in renders] == [(32, 32), (96, 96), (320, 240), (640, 480), (800, 600)]
    assert {r.media_type for r in renders} == {"image/jpeg"}
    single = image_ops.render_thumbnail(
        io.BytesIO(buf.getvalue()), width=320, height=240, method="scale", animated=False,
        max_pixels=10**8, max_total_frame_pixels=10**9,
    )
    assert (single.width, single.height) == (renders[2].width, renders[2].height)
    with pytest.raises(image_ops.ImageTooLarge):
        image_ops.render_still_thumbnails(io.BytesIO(buf.getvalue()), boxes=boxes, max_pixels=1000)
