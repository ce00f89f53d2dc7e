import hashlib
import io
import os

import pytest

from media_app import errors
from media_app.services.blobs import _PipelinedSha256, receive_body


@pytest.mark.parametrize("sizes", [[], [0], [5], [1 << 20], [1 << 20] * 9 + [17], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                                   [700_000, 700_000, 5], [65536] * 40])
def test_pipelined_hash_equals_hashlib(sizes):
    chunks = [os.urandom(n) for n in sizes]
    hasher = _PipelinedSha256()
    for chunk in chunks:
        hasher.update(chunk)
    assert hasher.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


class _Broken(io.RawIOBase):
    def __init__(self, good: int):
        self.left = good

    def read(self, size=-1):
        if self.left <= 0:
            raise ConnectionResetError("client went away")
        self.left -= 1
        return b"x" * (1 << 20)


@pytest.mark.django_db
def test_a_body_that_breaks_off_leaves_no_temp_file_and_no_thread(settings):
    import threading

    before = {t.name for t in threading.enumerate()}
    tmp_dir = os.path.join(settings.MEDIASITE["DATA_DIR"], "tmp")
    existing = set(os.listdir(tmp_dir)) if os.path.isdir(tmp_dir) else set()
    with pytest.raises(errors.UploadIncomplete):
        receive_body(stream=_Broken(good=6), declared_length=None)
    assert set(os.listdir(tmp_dir)) == existing
    assert "upload-sha256" not in {t.name for t in threading.enumerate()} - before


class _Pieces(io.RawIOBase):
    """A body that arrives a piece at a time: each read returns at most the next piece, as a
    socket gives one TLS record of a few KiB per read."""

    def __init__(self, pieces):
        self.pieces = list(pieces)

    def read(self, size=-1):
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if 0 <= size < len(piece):
            piece, rest = piece[:size], piece[size:]
            self.pieces.insert(0, rest)
        return piece


@pytest.mark.django_db
@pytest.mark.parametrize("sizes", [[4096] * 300, [4096] * 63 + [300_000, 7] + [4096] * 10, [1], [2 << 20, 5]])
def test_small_reads_are_gathered_before_they_are_written(monkeypatch, sizes):
    from media_app.services.blobs import BodyReceiver
    from media_app.storage.tempfiles import TempFile

    writes = []
    original = TempFile.write
    monkeypatch.setattr(TempFile, "write", lambda self, data: writes.append(len(data)) or original(self, data))
    pieces = [os.urandom(n) for n in sizes]
    data = b"".join(pieces)

    received = receive_body(stream=_Pieces(pieces), declared_length=None)
    try:
        with open(received.path, "rb") as fh:
            assert fh.read() == data
        assert received.sha256 == hashlib.sha256(data).hexdigest() and received.size == len(data)
    finally:
        received.discard()
    # One write per COALESCE_BYTES gathered (a piece as big passes straight through), and one
    # for what is left at the end: not one per small read.
    assert sum(writes) == len(data)
    assert len(writes) <= len(data) // BodyReceiver.COALESCE_BYTES + 2, writes
