"""Native uploads as multipart/form-data (`curl -F file=@x`): streamed through the same receiver
as a raw body, one media per `file` part, the envelope never stored."""
import os
import random
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from media_app.models import Blob, Media
from tests.conftest import body_of, jpeg_bytes, png_bytes

URL = "/api/v1/media"


def _limits(**overrides):
    return override_settings(MEDIASITE={**settings.MEDIASITE, **overrides})


def _temp_files():
    tmp = Path(settings.MEDIASITE["DATA_DIR"]) / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def _content(client, meta) -> bytes:
    response = client.get(f"/api/v1/media/{meta['server_name']}/{meta['media_id']}/content")
    assert response.status_code == 200
    return body_of(response)


@pytest.mark.django_db
def test_single_file_round_trips_byte_for_byte_with_its_name(alice_client):
    photo = jpeg_bytes(64, 48)
    response = alice_client.post(URL, data={"file": SimpleUploadedFile("holiday photo.jpg", photo, "image/jpeg"),
                                            "caption": "ignored"})
    assert response.status_code == 201, response.content
    meta = response.json()
    assert isinstance(meta, dict)  # one part: the same shape as a raw upload
    assert meta["upload_name"] == "holiday photo.jpg"
    assert meta["media_type"] == "image/jpeg"
    assert meta["media_length"] == len(photo)  # the file, not the envelope
    assert _content(alice_client, meta) == photo
    assert _temp_files() == []


@pytest.mark.django_db
def test_several_file_parts_make_several_media_in_order(alice_client):
    # Seeded: random bytes are sniffed as a program about once in 65,536 runs (they may begin "MZ").
    files = [("a.png", png_bytes(4, 4)), ("b.txt", b"hello\n" * 1000), ("c.bin", random.Random(7).randbytes(300_000))]
    response = alice_client.post(URL, data={"file": [SimpleUploadedFile(n, d) for n, d in files]})
    assert response.status_code == 201, response.content
    listing = response.json()
    assert [m["upload_name"] for m in listing] == [n for n, _ in files]
    assert [m["media_type"] for m in listing] == ["image/png", "text/plain", "application/octet-stream"]
    for meta, (_, data) in zip(listing, files):
        assert _content(alice_client, meta) == data
    assert Media.objects.count() == 3


@pytest.mark.django_db
def test_raw_upload_still_works_beside_multipart(alice_client):
    response = alice_client.post(URL + "?filename=raw.png", data=png_bytes(), content_type="image/png")
    assert response.status_code == 201
    assert response.json()["upload_name"] == "raw.png"
    assert _content(alice_client, response.json()) == png_bytes()


@pytest.mark.django_db
def test_a_file_part_over_the_limit_is_cut_off_and_nothing_is_stored(alice_client):
    with _limits(MAX_UPLOAD_SIZE_BYTES=1000):
        small = SimpleUploadedFile("small.txt", b"x" * 10)
        big = SimpleUploadedFile("big.bin", os.urandom(5000))
        response = alice_client.post(URL, data={"file": [small, big]})
    assert response.status_code == 413
    assert response.json()["code"] == "MEDIA_TOO_LARGE"
    assert Media.objects.count() == 0 and Blob.objects.count() == 0
    assert _temp_files() == []


@pytest.mark.django_db
def test_a_body_whose_declared_length_cannot_fit_is_refused_before_reading(alice_client):
    with _limits(MAX_UPLOAD_SIZE_BYTES=1000, MAX_UPLOAD_FILES_PER_REQUEST=1):
        response = alice_client.post(URL, data=b"--x\r\n" + b"y" * 200_000,
                                     content_type="multipart/form-data; boundary=x")
    assert response.status_code == 413 and response.json()["code"] == "MEDIA_TOO_LARGE"


@pytest.mark.django_db
def test_too_many_file_parts_are_refused(alice_client):
    with _limits(MAX_UPLOAD_FILES_PER_REQUEST=2):
        response = alice_client.post(URL, data={"file": [SimpleUploadedFile(f"{i}.txt", b"x") for i in range(3)]})
    assert response.status_code == 413 and response.json()["code"] == "UPLOAD_TOO_MANY_FILES"
    assert Media.objects.count() == 0 and _temp_files() == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type, body",
    [
        # The body's delimiter is not the declared boundary.
        ("multipart/form-data; boundary=declared", b'--other\r\nContent-Disposition: form-data; name="file"; '
                                                    b'filename="a"\r\n\r\nabc\r\n--other--\r\n'),
        # No boundary parameter at all.
        ("multipart/form-data", b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc\r\n--x--\r\n'),
        # Cut short: no closing delimiter.
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="file"; '
                                            b'filename="a"\r\n\r\nabc'),
    ],
    ids=["wrong-boundary", "no-boundary", "truncated"],
)
def test_a_broken_multipart_body_is_refused(alice_client, content_type, body):
    response = alice_client.post(URL, data=body, content_type=content_type)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "MALFORMED_MULTIPART"
    assert Media.objects.count() == 0 and _temp_files() == []


@pytest.mark.django_db
def test_a_form_without_a_file_part_names_the_missing_field(alice_client):
    response = alice_client.post(URL, data={"caption": "no file here"})
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_MISSING_PARAM" and "`file`" in response.json()["error"]


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/mixed; boundary=x"])
def test_a_body_that_is_neither_raw_nor_multipart_is_refused_naming_what_is_accepted(alice_client, content_type):
    response = alice_client.post(URL, data=b"file=abc", content_type=content_type)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "UNSUPPORTED_CONTENT_TYPE"
    assert "multipart/form-data" in body["error"] and "raw request body" in body["error"]
    # The raw body's rule names the types it refuses rather than claiming any type will do.
    assert "any Content-Type but application/x-www-form-urlencoded and multipart/*" in body["error"]
    assert Media.objects.count() == 0


# --- over real HTTP: a chunked multipart body (no Content-Length) against gunicorn ----------

LIVE_LIMIT = 200_000


@pytest.fixture
def small_limit_server(transactional_db, tmp_path):
    from tests.conftest import start_server, stop_server

    server = start_server(tmp_path, MEDIASITE_MAX_UPLOAD_SIZE=str(LIVE_LIMIT))
    yield server
    stop_server(server)


def _multipart_chunks(boundary: bytes, name: str, payload: bytes, piece: int = 16 * 1024):
    yield b"--" + boundary + f'\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
    yield b"Content-Type: application/octet-stream\r\n\r\n"
    for i in range(0, len(payload), piece):
        yield payload[i:i + piece]
    yield b"\r\n--" + boundary + b"--\r\n"


def _post_chunked(server, token, body_chunks, boundary: bytes):
    import http.client

    conn = http.client.HTTPConnection(*server.host_port, timeout=60)
    try:
        conn.request("POST", "/api/v1/media", body=body_chunks, encode_chunked=True, headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "multipart/form-data; boundary=" + boundary.decode(),
        })
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_chunked_multipart_streams_within_and_is_cut_off_past_the_limit(small_limit_server, alice_token):
    import json

    boundary = b"----mediasite-test-boundary"
    payload = os.urandom(LIVE_LIMIT)  # exactly the limit: accepted
    status, body = _post_chunked(small_limit_server, alice_token, _multipart_chunks(boundary, "fits.bin", payload),
                                 boundary)
    assert status == 201, body
    meta = json.loads(body)
    assert meta["media_length"] == LIVE_LIMIT and meta["upload_name"] == "fits.bin"
    assert Blob.objects.get().size == LIVE_LIMIT

    try:
        status, body = _post_chunked(small_limit_server, alice_token,
                                     _multipart_chunks(boundary, "big.bin", os.urandom(4 * LIVE_LIMIT)), boundary)
        assert status == 413 and json.loads(body)["code"] == "MEDIA_TOO_LARGE"
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before the client finished sending: also a refusal
    assert Media.objects.count() == 1
    assert _temp_files() == []
