"""Download redirects to presigned S3 URLs: the spec's allow_redirect plus the operator switch."""
import random
import urllib.request
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import botocore.auth
import pytest
from django.core.files.storage import storages

from media_app import storage
from media_app.storage import presign
from media_app.models import Blob
from tests.conftest import body_of, download_url, png_bytes, upload
from tests.storage.conftest import use_backend

DATA = random.Random(5).randbytes(50_000)


@pytest.fixture
def redirects_on(settings, s3):
    use_backend(settings, "s3")
    settings.MEDIASITE = {**settings.MEDIASITE, "REDIRECT_DOWNLOADS": True}
    return s3


def fetch(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


@pytest.mark.django_db
def test_redirect_to_a_presigned_url_with_type_and_disposition(alice_client, redirects_on):
    image = png_bytes(40, 30)
    mxc = upload(alice_client, image, filename="photo.png")
    response = alice_client.get(download_url(mxc) + "?allow_redirect=true")
    assert response.status_code == 307
    location = response["Location"]
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]  # s3v4
    assert query["response-content-disposition"] == ["inline; filename=photo.png"]
    assert "max-age=" in response["Cache-Control"] and "immutable" not in response["Cache-Control"]
    status, headers, body = fetch(location)  # followed, against the real S3 server
    assert status == 200 and body == image
    # The object is stored as opaque bytes; the URL makes S3 answer with our type and name.
    assert headers["content-type"] == "image/png"
    assert headers["content-disposition"] == "inline; filename=photo.png"


@pytest.mark.django_db
def test_same_url_within_a_time_bucket(alice_client, redirects_on, settings, monkeypatch):
    mxc = upload(alice_client, DATA)
    clock = iter([1_800_000_100.0, 1_800_000_900.5])  # two requests, same hour

    class FrozenTime:
        @staticmethod
        def time():
            return next(clock)

    monkeypatch.setattr(presign, "time", FrozenTime)
    first = alice_client.get(download_url(mxc) + "?allow_redirect=true")
    second = alice_client.get(download_url(mxc) + "?allow_redirect=true")
    assert first["Location"] == second["Location"]
    assert fetch(second["Location"])[2] == DATA
    key = Blob.objects.get().key
    kwargs = {"media_type": "application/octet-stream", "disposition": "attachment"}
    bucket = settings.MEDIASITE["REDIRECT_URL_BUCKET_SECONDS"]
    start = 1_800_000_000 - 1_800_000_000 % bucket
    a, age_a = storage.download_redirect(storage.backend("s3"), key, now=start + 1, **kwargs)
    b, age_b = storage.download_redirect(storage.backend("s3"), key, now=start + bucket - 1, **kwargs)
    c, _ = storage.download_redirect(storage.backend("s3"), key, now=start + bucket, **kwargs)
    assert a == b and c != a
    assert (age_a, age_b) == (bucket - 1, 1)


@pytest.mark.django_db
def test_a_url_is_valid_for_its_window_plus_the_minimum_validity(alice_client, redirects_on, settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "REDIRECT_URL_BUCKET_SECONDS": 3600,
                          "REDIRECT_URL_MIN_VALIDITY_SECONDS": 600}
    upload(alice_client, DATA)
    key = Blob.objects.get().key
    url, _ = storage.download_redirect(storage.backend("s3"), key, now=1_800_000_100.0,
                                       media_type="application/octet-stream", disposition="attachment")
    query = parse_qs(urlsplit(url).query)
    start = 1_800_000_000 - 1_800_000_000 % 3600
    assert query["X-Amz-Date"] == [datetime.fromtimestamp(start, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")]
    assert query["X-Amz-Expires"] == ["4200"]  # valid until 600 s after its window ends


@pytest.mark.django_db
def test_signature_matches_botocore_at_the_same_instant(redirects_on, monkeypatch, alice_client):
    """Our signer only fixes the time; the URL must be the one botocore would sign then."""
    upload(alice_client, DATA)
    key = Blob.objects.get().key
    at = datetime(2026, 1, 2, 3, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: at)
    params = {"ResponseContentType": "image/png", "ResponseContentDisposition": "inline; filename=x.png"}
    backend = storages["s3"]
    theirs = backend.connection.meta.client.generate_presigned_url(
        "get_object", Params={"Bucket": backend.bucket_name, "Key": key, **params}, ExpiresIn=7200,
    )
    ours = storage.backend("s3").presign(
        key, signed_at=at.replace(tzinfo=timezone.utc), expires_seconds=7200,
        response_headers={"response-content-type": "image/png",
                          "response-content-disposition": "inline; filename=x.png"},
    )
    assert parse_qs(urlsplit(ours).query) == parse_qs(urlsplit(theirs).query)
    assert urlsplit(ours)[:3] == urlsplit(theirs)[:3]


@pytest.mark.django_db
def test_no_redirect_unless_both_client_and_operator_allow(alice_client, s3, settings):
    use_backend(settings, "s3")
    mxc = upload(alice_client, DATA)
    # Operator switch off (the default): the client's wish is ignored.
    assert alice_client.get(download_url(mxc) + "?allow_redirect=true").status_code == 200
    settings.MEDIASITE = {**settings.MEDIASITE, "REDIRECT_DOWNLOADS": True}
    for query in ("", "?allow_redirect=false", "?allow_redirect=1"):
        response = alice_client.get(download_url(mxc) + query)
        assert response.status_code == 200 and body_of(response) == DATA


@pytest.mark.django_db
def test_never_for_local_files(alice_client, settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "STORAGE": "fs", "REDIRECT_DOWNLOADS": True}
    mxc = upload(alice_client, DATA)
    response = alice_client.get(download_url(mxc) + "?allow_redirect=true")
    assert response.status_code == 200 and body_of(response) == DATA


@pytest.mark.django_db
def test_never_for_quarantined_media(alice_client, redirects_on):
    mxc = upload(alice_client, DATA)
    Blob.objects.update(quarantined=True)
    response = alice_client.get(download_url(mxc) + "?allow_redirect=true")
    assert response.status_code == 404
    assert response.json()["code"] == "MEDIA_QUARANTINED"
    assert "Location" not in response


@pytest.mark.django_db
def test_legacy_endpoint_redirects_too(client, alice_client, redirects_on, settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "LEGACY_MEDIA": True}
    mxc = upload(alice_client, DATA)
    response = client.get(f"/_matrix/media/v3/download/{mxc}?allow_redirect=true")
    assert response.status_code == 307
    assert fetch(response["Location"])[2] == DATA
