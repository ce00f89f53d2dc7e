"""A first fetch of large remote media, answered to the request that fetches it while the bytes
arrive (federation.remote.StreamedRemote), and every case where it must not be."""
import concurrent.futures
import hashlib
import secrets
import threading

import pytest
from django.db import connections
from django.conf import settings as django_settings
from django.test import override_settings

from media_app import errors
from media_app.federation import remote as remote_media
from media_app.models import Media
from media_app.moderation.models import QuarantinedContent
from tests.conftest import body_of, noisy_png
from tests.federation.origin import Origin
from tests.federation.test_remote_fetch import _configured, get, new_id

# Small enough for the test limits (1 MiB uploads), large enough to span several reads.
STREAM_FROM = 100_000


@pytest.fixture(scope="module")
def origin():
    server = Origin("127.0.0.2")
    yield server
    server.stop()


@pytest.fixture
def streaming(origin, transactional_db, monkeypatch):
    monkeypatch.setattr(remote_media, "STREAM_FROM_BYTES", STREAM_FROM)
    with _configured(origin, in_worker=False):
        yield origin


def url(media_id: str) -> str:
    return f"/_matrix/client/v1/media/download/origin.test/{media_id}"


def gated(origin, data: bytes, *, declared: int | None = None, first: int = 300_000):
    """Media whose origin sends `first` bytes at once and the rest once the gate opens (or 10 s
    have passed); `sent` is set once it has sent everything."""
    gate, sent = threading.Event(), threading.Event()
    media_id = origin.on(new_id(), "gated", data, len(data) if declared is None else declared, first, gate, sent)
    return media_id, gate, sent


def test_a_large_first_fetch_is_answered_while_the_origin_is_still_sending(streaming, alice_client):
    data = noisy_png(400)
    assert len(data) > 400_000
    media_id, gate, sent = gated(streaming, data)
    response = alice_client.get(url(media_id))
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(data)) and response["Content-Type"] == "image/png"
    assert "ETag" not in response and "Accept-Ranges" not in response  # the hash is not known yet
    chunks = iter(response.streaming_content)
    first = next(chunks)
    assert not sent.is_set()  # bytes reached the client before the origin had sent them all
    assert first and data.startswith(first)
    gate.set()
    assert first + b"".join(chunks) == data
    response.close()
    media = Media.objects.get(server_name="origin.test", media_id=media_id)
    assert media.status == "stored" and media.media_type == "image/png" and media.media_length == len(data)
    assert media.blob.sha256 == hashlib.sha256(data).hexdigest()
    assert body_of(get(alice_client, "origin.test", media_id)) == data
    assert streaming.count(media_id) == 1


def test_a_multipart_part_with_its_length_is_streamed_and_one_longer_than_declared_is_cut_short(
        streaming, alice_client):
    data = noisy_png(300)
    whole = streaming.on(new_id(), "federation_bytes", data, len(data))
    response = alice_client.get(url(whole))
    assert response.status_code == 200 and "ETag" not in response
    assert body_of(response) == data
    assert Media.objects.filter(media_id=whole, status="stored").exists()

    longer = streaming.on(new_id(), "federation_bytes", data, len(data) - 1000)
    response = alice_client.get(url(longer))
    assert response.status_code == 200 and response["Content-Length"] == str(len(data) - 1000)
    with pytest.raises(errors.RemoteFetchFailed):
        b"".join(response.streaming_content)  # the last byte is never sent: the answer is cut short
    response.close()
    assert not Media.objects.filter(media_id=longer).exists()
    assert get(alice_client, "origin.test", longer).status_code == 502  # the failure is remembered
    assert streaming.count(longer) == 1


def test_a_part_without_its_length_is_streamed_at_the_length_its_framing_implies(streaming, alice_client):
    # As Synapse answers: the total declared, the part's own length not; the body ends with the
    # closing delimiter alone.
    data = noisy_png(300)
    media_id = streaming.on(new_id(), "federation_bytes", data)
    response = alice_client.get(url(media_id))
    assert response.status_code == 200 and "ETag" not in response
    assert response["Content-Length"] == str(len(data))
    assert body_of(response) == data
    assert Media.objects.get(media_id=media_id).blob.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("after, guessed", [(b"x" * 100, +100), (2, -2)])
def test_a_part_not_of_the_length_its_framing_implied_cuts_the_answer_short_but_is_stored(
        streaming, alice_client, after, guessed):
    # An epilogue after the closing delimiter (the part ends before the guess), or a closing
    # delimiter without its last CRLF (the part goes on past it).
    data = noisy_png(300)
    media_id = streaming.on(new_id(), "federation_bytes", data, None, after)
    response = alice_client.get(url(media_id))
    assert response.status_code == 200 and response["Content-Length"] == str(len(data) + guessed)
    with pytest.raises(errors.RemoteFetchFailed):
        b"".join(response.streaming_content)
    response.close()
    # Nothing was wrong with the media itself: stored, and served whole from then on.
    assert body_of(get(alice_client, "origin.test", media_id)) == data
    assert streaming.count(media_id) == 1


@pytest.mark.parametrize("off", [+1000, -1000])
def test_near_an_inferred_length_no_quarantined_content_may_lie_either(streaming, alice_client, off):
    data = noisy_png(300)
    QuarantinedContent.objects.create(sha256=secrets.token_hex(32), size=len(data) + off)
    response = alice_client.get(url(streaming.on(new_id(), "federation_bytes", data)))
    assert response.status_code == 200 and "ETag" in response  # checked whole
    assert body_of(response) == data


def test_quarantined_content_far_short_of_an_inferred_length_never_reaches_the_client_whole(
        streaming, alice_client):
    # An epilogue larger than the window around the guess: the length check cannot see this
    # content, so the answer stays that far behind what has arrived until the hash is checked.
    data = noisy_png(300)
    QuarantinedContent.objects.create(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    media_id = streaming.on(new_id(), "federation_bytes", data, None, b"x" * 100_000)
    response = alice_client.get(url(media_id))
    assert response.status_code == 200 and "ETag" not in response  # streamed at the wrong guess
    got = bytearray()
    with pytest.raises(errors.RemoteFetchFailed):
        for chunk in response.streaming_content:
            got += chunk
    response.close()
    assert len(got) <= len(data) - remote_media.MULTIPART_OVERHEAD_BYTES and data.startswith(bytes(got))
    assert Media.objects.get(media_id=media_id).status == "quarantined"


def test_an_origin_ending_early_cuts_the_answer_short_and_fails_the_waiters(streaming, alice_client):
    data = noisy_png(400)
    media_id, gate, _sent = gated(streaming, data, declared=len(data) + 5000)
    response = alice_client.get(url(media_id))
    assert response.status_code == 200
    gate.set()
    with pytest.raises(errors.RemoteFetchFailed):
        b"".join(response.streaming_content)
    response.close()
    assert not Media.objects.filter(media_id=media_id).exists()
    later = get(alice_client, "origin.test", media_id)
    assert later.status_code == 502 and later.json()["code"] == "REMOTE_FETCH_FAILED"
    assert streaming.count(media_id) == 1


def test_content_of_a_quarantined_size_is_checked_whole_before_a_byte_is_answered(streaming, alice_client):
    data = noisy_png(300)
    QuarantinedContent.objects.create(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    media_id = streaming.on(new_id(), "bytes", data, "image/png")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 404 and response.json()["code"] == "MEDIA_QUARANTINED"
    assert Media.objects.get(media_id=media_id).status == "quarantined"


@pytest.mark.parametrize("size, streamed", [("other", True), ("same", False), ("unknown", False)])
def test_only_a_length_no_quarantined_content_has_is_streamed(streaming, alice_client, size, streamed):
    data = noisy_png(300)
    # Other bytes under quarantine: of another length, of this one, or of a length not recorded.
    QuarantinedContent.objects.create(sha256=secrets.token_hex(32),
                                      size={"other": len(data) + 1, "same": len(data), "unknown": None}[size])
    response = alice_client.get(url(streaming.on(new_id(), "bytes", data, "image/png")))
    assert response.status_code == 200
    assert ("ETag" not in response) is streamed  # a checked whole answers with its hash
    assert body_of(response) == data


def test_a_quarantined_blob_of_that_length_stops_streaming_too(streaming, alice_client):
    from tests.conftest import upload

    data = noisy_png(300)
    other = bytearray(data)
    other[-20] ^= 1  # same length, other content
    upload(alice_client, bytes(other))
    from media_app.models import Blob

    Blob.objects.update(quarantined=True)
    response = alice_client.get(url(streaming.on(new_id(), "bytes", data, "image/png")))
    assert response.status_code == 200 and "ETag" in response
    assert body_of(response) == data


def test_bytes_whose_type_the_head_does_not_decide_are_checked_whole(streaming, alice_client):
    data = b"plain words, " * 20_000
    response = alice_client.get(url(streaming.on(new_id(), "bytes", data, "image/png")))
    assert response.status_code == 200
    assert "ETag" in response and response["Content-Type"].startswith("text/plain")
    assert body_of(response) == data


def test_an_image_over_the_pixel_limit_is_refused_before_a_byte_is_answered(streaming, alice_client):
    data = noisy_png(400)
    media_id, gate, sent = gated(streaming, data)
    conf = {**django_settings.MEDIASITE, "MAX_IMAGE_PIXELS": 100 * 100}
    try:
        with override_settings(MEDIASITE={**conf}):
            response = alice_client.get(url(media_id))
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "MEDIA_TOO_MANY_PIXELS"
        assert not sent.is_set()  # refused on the head
    finally:
        gate.set()
    assert not Media.objects.filter(media_id=media_id).exists()


def test_a_slow_first_client_does_not_hold_up_the_fetch_or_the_waiters(streaming, alice_client):
    data = noisy_png(400)
    media_id = streaming.on(new_id(), "bytes", data, "image/png")
    first = alice_client.get(url(media_id))
    assert first.status_code == 200 and "ETag" not in first  # streamed; its client reads nothing yet

    def another_client():
        try:
            return get(alice_client, "origin.test", media_id, timeout_ms=5000)
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        second = pool.submit(another_client).result()
    assert second.status_code == 200 and body_of(second) == data
    assert b"".join(first.streaming_content) == data  # read from the temp file after it was stored
    first.close()
    assert streaming.count(media_id) == 1


def test_a_client_gone_before_reading_still_leaves_the_media_stored(streaming, alice_client):
    data = noisy_png(300)
    media_id = streaming.on(new_id(), "bytes", data, "image/png")
    response = alice_client.get(url(media_id))
    assert response.status_code == 200 and "ETag" not in response
    response.close()
    assert Media.objects.filter(media_id=media_id, status="stored").exists()

    head_id = streaming.on(new_id(), "bytes", data, "image/png")
    response = alice_client.head(url(head_id))
    assert response.status_code == 200 and response["Content-Length"] == str(len(data))
    media = Media.objects.get(media_id=head_id, status="stored")
    assert response["ETag"] == f'"{media.blob.sha256}"'  # answered as the stored media
    assert streaming.count(head_id) == 1


def _gif_with_a_huge_frame_far_in() -> bytes:
    """A 100x100 GIF whose first frame is 1x1 and whose second, after 600 KB of comment, is
    20000x20000: its first 256 KiB are within the pixel limit, the whole is not
    (image_ops.probe holds every frame to it)."""
    def frame(side: int) -> bytes:
        return (b"\x2c" + (0).to_bytes(2, "little") * 2 + side.to_bytes(2, "little") * 2 + b"\x00"
                + b"\x02\x02\x44\x01\x00")

    comment = b"\x21\xfe" + b"".join(b"\xff" + b"c" * 255 for _ in range(600_000 // 256)) + b"\x00"
    return (b"GIF89a" + (100).to_bytes(2, "little") * 2 + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
            + frame(1) + comment + frame(20000) + b"\x3b")


def test_a_gif_is_checked_whole_so_a_frame_over_the_pixel_limit_far_in_is_refused(streaming, alice_client):
    data = _gif_with_a_huge_frame_far_in()
    assert STREAM_FROM < len(data) < (1 << 20)
    response = get(alice_client, "origin.test", streaming.on(new_id(), "bytes", data, "image/gif"))
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "MEDIA_TOO_MANY_PIXELS"


def test_content_quarantined_while_it_streams_is_cut_short_and_recorded_quarantined(streaming, alice_client):
    data = noisy_png(400)
    media_id, gate, _sent = gated(streaming, data)
    response = alice_client.get(url(media_id))
    assert response.status_code == 200 and "ETag" not in response
    chunks = iter(response.streaming_content)
    assert data.startswith(next(chunks))
    QuarantinedContent.objects.create(sha256=hashlib.sha256(data).hexdigest(), size=len(data))  # meanwhile
    gate.set()
    with pytest.raises(errors.RemoteFetchFailed):
        b"".join(chunks)  # everything but the last byte: the answer is cut short
    response.close()
    assert Media.objects.get(media_id=media_id).status == "quarantined"
    assert get(alice_client, "origin.test", media_id).json()["code"] == "MEDIA_QUARANTINED"


def test_a_head_is_answered_once_the_fetch_has_ended_so_a_failed_one_is_an_error(streaming, alice_client):
    data = noisy_png(300)
    media_id, gate, _sent = gated(streaming, data, declared=len(data) + 5000)
    gate.set()
    response = alice_client.head(url(media_id))
    assert response.status_code == 502
    assert not Media.objects.filter(media_id=media_id).exists()


def test_pixels_are_checked_on_the_whole_before_the_last_byte_goes_out(streaming, alice_client, monkeypatch):
    from media_app.services import sniffing

    # Were a head ever to pass an image that the whole breaks the limit with (as a GIF's would,
    # were GIFs streamed), the answer is cut short rather than completed.
    monkeypatch.setattr(sniffing, "HEAD_DECIDED_TYPES", sniffing.HEAD_DECIDED_TYPES | {"image/gif"})
    media_id = streaming.on(new_id(), "bytes", _gif_with_a_huge_frame_far_in(), "image/gif")
    response = alice_client.get(url(media_id))
    assert response.status_code == 200 and "ETag" not in response
    with pytest.raises(errors.RemoteFetchFailed):
        b"".join(response.streaming_content)
    response.close()
    assert not Media.objects.filter(media_id=media_id).exists()


@pytest.mark.parametrize("streamed", [True, False])
def test_the_first_fetch_is_answered_whole_whatever_range_was_asked(streaming, alice_client, streamed):
    data = noisy_png(300) if streamed else b"plain words, " * 20_000
    response = alice_client.get(url(streaming.on(new_id(), "bytes", data, "image/png")), HTTP_RANGE="bytes=0-9")
    assert response.status_code == 200 and "Accept-Ranges" not in response
    assert ("ETag" not in response) is streamed
    assert body_of(response) == data
