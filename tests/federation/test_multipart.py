"""The multipart/mixed reader: where the media part starts, whatever the reads bring."""
import io
import random

import pytest

from media_app.federation import multipart


class _Pieces(io.BytesIO):
    """A body whose reads bring between 1 and `most` bytes."""

    def __init__(self, data: bytes, most: int, seed: int):
        super().__init__(data)
        self.most, self.random = most, random.Random(seed)

    def read(self, size=-1):
        return super().read(min(size, self.random.randint(1, self.most)))


@pytest.mark.parametrize("preamble", [b"", b"\r\n", b"a preamble to be ignored\r\n"])
@pytest.mark.parametrize("most", [1, 7, 1 << 20])
def test_the_media_part_starts_at_its_offset_and_the_body_ends_with_its_closing(preamble, most):
    boundary = "b0undary"
    data = bytes(range(256)) * 40
    head, body, tail = multipart.media_response_chunks(
        boundary, metadata={"k": "v"}, part_headers={"Content-Type": "video/mp4"}, body_chunks=[data])
    whole = preamble + head + b"".join(body) + tail
    _metadata, part = multipart.read_media_response(_Pieces(whole, most, seed=len(preamble) + most),
                                                    f"multipart/mixed; boundary={boundary}")
    assert whole[part.offset:part.offset + len(data)] == data
    assert len(whole) - part.offset - len(part.closing) == len(data)
    got = bytearray()
    while chunk := part.stream.read(4096):
        got += chunk
    assert bytes(got) == data
