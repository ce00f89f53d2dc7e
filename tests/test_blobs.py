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
