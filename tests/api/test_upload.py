import hashlib
import os
from pathlib import Path

import pytest
from django.test import override_settings
from django.conf import settings

from media_app.models import Blob, Media, MediaEvent, MediaStatus
from tests.conftest import body_of, download_url, jpeg_bytes, png_bytes, upload


def _limits(**overrides):
    return override_settings(MEDIASITE={**settings.MEDIASITE, **overrides})


def _temp_files():
    tmp = Path(settings.MEDIASITE["DATA_DIR"]) / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


@pytest.mark.django_db
@pytest.mark.parametrize("size", [0, 1, 1 << 20])
def test_round_trip_is_byte_for_byte(alice_client, size):
    data = os.urandom(size)
    mxc = upload(alice_client, data, filename="blob.bin")
    response = alice_client.get(download_url(mxc))
    assert response.status_code == 200
    assert body_of(response) == data
    assert response["Content-Length"] == str(size)
    media = Media.objects.get(media_id=mxc.split("/")[1])
    assert media.status == MediaStatus.STORED
    assert media.media_length == size
    assert media.blob.sha256 == hashlib.sha256(data).hexdigest()
    assert media.upload_name == "blob.bin"


@pytest.mark.django_db
def test_content_uri_names_this_server(alice_client):
    mxc = upload(alice_client, b"hello")
    server, media_id = mxc.split("/")
    assert server == "test.local"
    assert len(media_id) == 24 and media_id.isalnum()


@pytest.mark.django_db
def test_upload_needs_a_token(client):
    response = client.post("/_matrix/media/v3/upload", data=b"x", content_type="text/plain")
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_MISSING_TOKEN"
    assert not Media.objects.exists()


@pytest.mark.django_db
def test_the_readmes_curl_upload_is_accepted(alice_client):
    """`curl --data-binary @photo.jpg` sends Content-Type application/x-www-form-urlencoded: the
    Matrix upload takes the body as the media all the same (the type comes from the bytes)."""
    response = alice_client.post("/_matrix/media/v3/upload?filename=photo.png", data=png_bytes(),
                                 content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content
    media = Media.objects.get(media_id=response.json()["content_uri"].split("/")[-1])
    assert media.media_type == "image/png" and media.upload_name == "photo.png"
    assert body_of(alice_client.get(download_url(response.json()["content_uri"].removeprefix("mxc://")))) == png_bytes()


@pytest.mark.django_db
def test_media_type_comes_from_the_bytes_not_the_client(alice_client):
    mxc = upload(alice_client, png_bytes(), content_type="text/html")
    assert Media.objects.get(media_id=mxc.split("/")[1]).media_type == "image/png"
    mxc = upload(alice_client, b"<html><script>alert(1)</script></html>", content_type="image/png")
    media = Media.objects.get(media_id=mxc.split("/")[1])
    assert media.media_type == "text/html"
    response = alice_client.get(download_url(mxc))
    assert response["Content-Type"] == "text/html"
    assert response["Content-Disposition"].startswith("attachment")


@pytest.mark.django_db
def test_over_the_limit_by_content_length_is_refused_before_storing(alice_client):
    with _limits(MAX_UPLOAD_SIZE_BYTES=1000):
        response = alice_client.post("/_matrix/media/v3/upload", data=b"x" * 1001, content_type="application/octet-stream")
        assert response.status_code == 413
        assert response.json() == {
            "errcode": "M_TOO_LARGE", "error": "File exceeds the maximum allowed upload size", "code": "MEDIA_TOO_LARGE",
        }
        assert upload(alice_client, b"x" * 1000)  # exactly the limit is fine
    assert Blob.objects.count() == 1
    assert _temp_files() == []


@pytest.mark.django_db
def test_image_with_too_many_pixels_is_refused_from_its_header(alice_client):
    with _limits(MAX_IMAGE_PIXELS=100 * 100):
        response = alice_client.post("/_matrix/media/v3/upload", data=png_bytes(101, 100), content_type="image/png")
        assert response.status_code == 400
        assert response.json()["code"] == "MEDIA_TOO_MANY_PIXELS"
        assert response.json()["errcode"] == "M_TOO_LARGE"
        assert upload(alice_client, png_bytes(100, 100))
        jpeg = alice_client.post("/_matrix/media/v3/upload", data=jpeg_bytes(200, 60), content_type="image/jpeg")
        assert jpeg.status_code == 400
    assert Blob.objects.count() == 1
    assert _temp_files() == []


@pytest.mark.django_db
def test_huge_declared_png_dimensions_are_refused_without_decoding(alice_client):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    response = alice_client.post("/_matrix/media/v3/upload", data=bomb, content_type="image/png")
    assert response.status_code == 400
    assert response.json()["code"] == "MEDIA_TOO_MANY_PIXELS"


@pytest.mark.django_db
def test_identical_uploads_share_one_blob(alice_client, make_user, client_for):
    data = os.urandom(5000)
    first = upload(alice_client, data, filename="a.bin")
    bob_client = client_for(make_user("bob"))
    second = upload(bob_client, data, filename="b.bin")
    assert first != second
    assert Blob.objects.count() == 1
    a, b = (Media.objects.get(media_id=m.split("/")[1]) for m in (first, second))
    assert a.blob_id == b.blob_id
    assert (a.upload_name, b.upload_name) == ("a.bin", "b.bin")
    assert (a.uploader.username, b.uploader.username) == ("alice", "bob")
    stored = list(Path(settings.MEDIASITE["DATA_DIR"], "media").rglob(a.blob.sha256))
    assert len(stored) == 1
    event = MediaEvent.objects.get(event_type="media.deduplicated")
    assert event.payload == {"media_id": b.media_id, "existing_media_id": a.media_id}
    assert body_of(bob_client.get(download_url(first))) == data


@pytest.mark.django_db
def test_uploaded_event_payload(alice_client):
    mxc = upload(alice_client, png_bytes())
    event = MediaEvent.objects.get(event_type="media.uploaded")
    assert event.payload == {
        "media_id": mxc.split("/")[1], "server_name": "test.local", "uploader_id": "alice",
        "media_type": "image/png", "media_length": len(png_bytes()),
    }
    assert event.actor.username == "alice"


@pytest.mark.django_db
def test_upload_name_is_encrypted_at_rest(alice_client):
    from django.db import connection

    mxc = upload(alice_client, b"secret", filename="salary-2026.pdf")
    with connection.cursor() as cursor:
        cursor.execute("SELECT upload_name FROM media_app_media WHERE media_id = %s", [mxc.split("/")[1]])
        (raw,) = cursor.fetchone()
    assert "salary" not in raw
    assert Media.objects.get(media_id=mxc.split("/")[1]).upload_name == "salary-2026.pdf"


@pytest.mark.django_db
def test_control_characters_are_removed_from_upload_names(alice_client):
    mxc = upload(alice_client, b"x", filename="evil%0d%0aname%00.txt")
    assert Media.objects.get(media_id=mxc.split("/")[1]).upload_name == "evilname.txt"


@pytest.mark.django_db
def test_upload_stores_the_file_content_addressed(alice_client):
    data = b"content addressed"
    upload(alice_client, data)
    digest = hashlib.sha256(data).hexdigest()
    blob = Blob.objects.get()
    assert blob.key == f"{digest[:2]}/{digest[2:4]}/{digest}"
    assert (Path(settings.MEDIASITE["DATA_DIR"]) / "media" / blob.key).read_bytes() == data
    assert _temp_files() == []
