"""Types decided from the first bytes alone, the ones a first remote fetch may be answered with
while it arrives (README, Federation): images with a signature, audio and video containers,
PDF; never GIF, text or unknown bytes, which only the whole file decides."""
import io
import os

import pytest
from PIL import Image

from media_app.services import sniffing

HEAD = 256 << 10


def _image(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, fmt)
    return out.getvalue()


def _ebml(doc_type: bytes) -> bytes:
    # An EBML header (ID 1A45DFA3) naming its DocType (ID 4282), as Matroska and WebM files begin.
    doc = b"\x42\x82" + bytes([0x80 | len(doc_type)]) + doc_type
    body = b"\x42\x86\x81\x01" + b"\x42\xf7\x81\x01" + doc
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(body)]) + body


def _head(start: bytes) -> bytes:
    return start + os.urandom(HEAD - len(start))


@pytest.mark.parametrize(("start", "expected"), [
    (_image("JPEG"), "image/jpeg"),
    (_image("PNG"), "image/png"),
    (_image("WEBP"), "image/webp"),
    (bytes.fromhex("00000018") + b"ftypisom" + bytes.fromhex("00000200") + b"isomiso2", "video/mp4"),
    (_ebml(b"webm"), "video/webm"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
], ids=["jpeg", "png", "webp", "mp4", "webm", "pdf"])
def test_the_head_decides_these_types(start, expected):
    assert sniffing.media_type_of_head(_head(start)) == expected


@pytest.mark.parametrize("head", [
    _head(_image("GIF")),  # every frame is held to the pixel limit, wherever it lies
    b"plain words, " * (HEAD // 13),  # text only if all of it is
    os.urandom(HEAD),
], ids=["gif", "text", "unknown"])
def test_the_head_does_not_decide_these(head):
    assert sniffing.media_type_of_head(head) is None
