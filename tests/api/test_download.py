import os
import random

import pytest
from django.conf import settings
from django.test import override_settings

from media_app.models import Blob, Media, MediaStatus
from tests.conftest import body_of, download_url, png_bytes, upload

DATA = random.Random(1234).randbytes(10240)  # the same opaque bytes every run

SAFETY_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; object-src 'self';",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Referrer-Policy": "no-referrer",
}


@pytest.fixture
def stored(alice_client):
    return upload(alice_client, DATA, filename="data.bin")


@pytest.mark.django_db
def test_every_serving_header(alice_client, stored):
    response = alice_client.get(download_url(stored))
    assert response.status_code == 200
    for name, value in SAFETY_HEADERS.items():
        assert response[name] == value
    sha = Blob.objects.get().sha256
    assert response["ETag"] == f'"{sha}"'
    assert response["Accept-Ranges"] == "bytes"
    # Revalidated on every use, so a quarantine reaches cached copies too.
    assert response["Cache-Control"] == "private, no-cache"
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == "attachment; filename=data.bin"
    assert response["Content-Length"] == str(len(DATA))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name,expected",
    [
        ("plain.txt", "filename=plain.txt"),
        ("with space.txt", "filename*=utf-8''with%20space.txt"),
        ("naïve.png", "filename*=utf-8''na%C3%AFve.png"),
        ('quo"te;x.png', "filename*=utf-8''quo%22te%3Bx.png"),
    ],
)
def test_filename_is_a_token_or_rfc6266_encoded(alice_client, stored, name, expected):
    response = alice_client.get(download_url(stored, name))
    assert response["Content-Disposition"] == f"attachment; {expected}"


@pytest.mark.django_db
def test_inline_only_for_the_allowlist(alice_client):
    png = upload(alice_client, png_bytes(), filename="red.png")
    assert alice_client.get(download_url(png))["Content-Disposition"] == "inline; filename=red.png"
    svg = upload(alice_client, b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    response = alice_client.get(download_url(svg))
    assert response["Content-Type"] == "image/svg+xml"
    assert response["Content-Disposition"] == "attachment"
    for name, value in SAFETY_HEADERS.items():
        assert response[name] == value


@pytest.mark.django_db
def test_media_without_name_has_bare_disposition(alice_client):
    mxc = upload(alice_client, b"no name")
    assert alice_client.get(download_url(mxc))["Content-Disposition"] == "inline"  # text/plain


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header,status,start,end",
    [
        ("bytes=0-0", 206, 0, 0),
        ("bytes=0-99", 206, 0, 99),
        ("bytes=100-", 206, 100, len(DATA) - 1),
        ("bytes=-10", 206, len(DATA) - 10, len(DATA) - 1),
        ("bytes=-999999", 206, 0, len(DATA) - 1),
        ("bytes=10000-999999", 206, 10000, len(DATA) - 1),
        (f"bytes={len(DATA) - 1}-", 206, len(DATA) - 1, len(DATA) - 1),
        ("bytes=0-1,5-6", 200, 0, len(DATA) - 1),  # multiple ranges: whole file
        ("bytes=5-1", 200, 0, len(DATA) - 1),  # malformed: ignored
        ("items=0-5", 200, 0, len(DATA) - 1),
        ("bytes=abc", 200, 0, len(DATA) - 1),
    ],
)
def test_ranges(alice_client, stored, header, status, start, end):
    response = alice_client.get(download_url(stored), HTTP_RANGE=header)
    assert response.status_code == status
    assert body_of(response) == DATA[start : end + 1]
    assert response["Content-Length"] == str(end - start + 1)
    if status == 206:
        assert response["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    else:
        assert "Content-Range" not in response


def native_content_url(mxc_path: str) -> str:
    return f"/api/v1/media/{mxc_path}/content"


@pytest.mark.django_db
@pytest.mark.parametrize("url", [download_url, native_content_url], ids=["matrix", "native"])
@pytest.mark.parametrize("header", [f"bytes={len(DATA)}-", "bytes=999999-", "bytes=-0"])
def test_unsatisfiable_range_is_a_json_416_with_the_size(alice_client, stored, header, url):
    """README: every error is JSON, a 416 too; Content-Range still gives the size (RFC 9110)."""
    response = alice_client.get(url(stored), HTTP_RANGE=header)
    assert response.status_code == 416
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"errcode": "M_UNKNOWN", "code": "RANGE_NOT_SATISFIABLE",
                               "error": "The requested range lies outside the content"}
    assert response["Content-Range"] == f"bytes */{len(DATA)}"


@pytest.mark.django_db
def test_range_on_empty_file(alice_client):
    mxc = upload(alice_client, b"")
    response = alice_client.get(download_url(mxc), HTTP_RANGE="bytes=0-")
    assert response.status_code == 416 and response["Content-Range"] == "bytes */0"
    response = alice_client.get(download_url(mxc))
    assert response.status_code == 200 and body_of(response) == b""


@pytest.mark.django_db
def test_if_range_with_another_etag_gets_the_whole_file(alice_client, stored):
    response = alice_client.get(download_url(stored), HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"other"')
    assert response.status_code == 200 and body_of(response) == DATA
    etag = response["ETag"]
    response = alice_client.get(download_url(stored), HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=etag)
    assert response.status_code == 206 and body_of(response) == DATA[:10]


@pytest.mark.django_db
def test_etag_if_none_match_gives_304(alice_client, stored):
    etag = alice_client.get(download_url(stored))["ETag"]
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        response = alice_client.get(download_url(stored), HTTP_IF_NONE_MATCH=header)
        assert response.status_code == 304, header
        assert response.content == b""
        assert response["ETag"] == etag
    assert alice_client.get(download_url(stored), HTTP_IF_NONE_MATCH='"nope"').status_code == 200


@pytest.mark.django_db
def test_head_has_headers_and_no_body(alice_client, stored):
    response = alice_client.head(download_url(stored))
    assert response.status_code == 200
    assert response.content == b""
    assert response["Content-Length"] == str(len(DATA))
    assert response["ETag"]
    partial = alice_client.head(download_url(stored), HTTP_RANGE="bytes=0-9")
    assert partial.status_code == 206 and partial["Content-Length"] == "10"


@pytest.mark.django_db
def test_unknown_media_is_404(alice_client):
    response = alice_client.get(download_url("test.local/doesnotexist"))
    assert response.status_code == 404
    assert response.json() == {"errcode": "M_NOT_FOUND", "error": "Media not found", "code": "MEDIA_NOT_FOUND"}
    # Another server's media is fetched unless the client says allow_remote=false
    # (tests/federation cover fetching).
    assert alice_client.get(download_url("elsewhere.example/abc") + "?allow_remote=false").status_code == 404


@pytest.mark.django_db
def test_quarantined_media_is_404_media_quarantined(alice_client, stored):
    Media.objects.filter(media_id=stored.split("/")[1]).update(status=MediaStatus.QUARANTINED)
    response = alice_client.get(download_url(stored))
    assert response.status_code == 404
    assert response.json()["code"] == "MEDIA_QUARANTINED"
    assert response.json()["errcode"] == "M_NOT_FOUND"


@pytest.mark.django_db
def test_quarantined_blob_hides_every_media_sharing_it(alice_client, stored):
    other = upload(alice_client, DATA)
    Blob.objects.update(quarantined=True)
    for mxc in (stored, other):
        assert alice_client.get(download_url(mxc)).json()["code"] == "MEDIA_QUARANTINED"
    # Re-uploaded quarantined bytes are accepted and arrive quarantined.
    again = upload(alice_client, DATA)
    assert alice_client.get(download_url(again)).json()["code"] == "MEDIA_QUARANTINED"
    assert Media.objects.get(media_id=again.split("/")[1]).status == MediaStatus.QUARANTINED


@pytest.mark.django_db
def test_deleted_media_is_not_found(alice_client, stored):
    Media.objects.filter(media_id=stored.split("/")[1]).update(status=MediaStatus.DELETED)
    assert alice_client.get(download_url(stored)).json()["code"] == "MEDIA_NOT_FOUND"


@pytest.mark.django_db
def test_download_needs_a_token(client, stored):
    response = client.get(download_url(stored))
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_MISSING_TOKEN"


@pytest.mark.django_db
def test_config(alice_client):
    response = alice_client.get("/_matrix/client/v1/media/config")
    assert response.status_code == 200
    assert response.json() == {"m.upload.size": settings.MEDIASITE["MAX_UPLOAD_SIZE_BYTES"]}


@pytest.mark.django_db
def test_legacy_endpoints_are_off_by_default(client, stored):
    for url in (f"/_matrix/media/v3/download/{stored}", "/_matrix/media/v3/config"):
        response = client.get(url)
        assert response.status_code == 404
        assert response.json()["errcode"] == "M_UNRECOGNIZED"


@pytest.mark.django_db
def test_legacy_endpoints_when_enabled_need_no_token(client, stored):
    with override_settings(MEDIASITE={**settings.MEDIASITE, "LEGACY_MEDIA": True}):
        response = client.get(f"/_matrix/media/v3/download/{stored}/named.bin")
        assert response.status_code == 200
        assert body_of(response) == DATA
        assert response["Content-Disposition"] == "attachment; filename=named.bin"
        assert client.get("/_matrix/media/v3/config").json()["m.upload.size"] > 0


@pytest.mark.django_db
def test_big_file_streams_in_blocks(alice_client):
    data = os.urandom(3 << 20)
    mxc = upload(alice_client, data)
    response = alice_client.get(download_url(mxc))
    assert response.streaming
    chunks = list(response.streaming_content)
    assert len(chunks) > 1 and max(map(len, chunks)) <= 256 * 1024
    assert b"".join(chunks) == data


def test_the_operators_maximum_wait_bounds_the_default_wait_too():
    from media_app.services.download import parse_timeout_ms

    with override_settings(MEDIASITE={**settings.MEDIASITE, "MAX_DOWNLOAD_TIMEOUT_MS": 500}):
        assert parse_timeout_ms(None) == 500 and parse_timeout_ms("") == 500
        assert parse_timeout_ms("100") == 100 and parse_timeout_ms("90000") == 500
    with override_settings(MEDIASITE={**settings.MEDIASITE, "MAX_DOWNLOAD_TIMEOUT_MS": 60_000,
                                      "DEFAULT_DOWNLOAD_TIMEOUT_MS": 20_000}):
        assert parse_timeout_ms(None) == 20_000
