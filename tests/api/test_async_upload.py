import threading
import time
import types
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from media_app.models import Media, MediaStatus
from tests.conftest import body_of, download_url


def _create(client):
    response = client.post("/_matrix/media/v1/create")
    assert response.status_code == 200, response.content
    return response.json()


def _put(client, mxc, data=b"filled", filename=None):
    url = f"/_matrix/media/v3/upload/{mxc}" + (f"?filename={filename}" if filename else "")
    return client.put(url, data=data, content_type="application/octet-stream")


@pytest.mark.django_db
def test_create_then_upload_then_download(alice_client):
    before = int(time.time() * 1000)
    created = _create(alice_client)
    assert created["content_uri"].startswith("mxc://test.local/")
    assert before + 23 * 3600 * 1000 < created["unused_expires_at"] <= before + 24 * 3600 * 1000 + 5000
    mxc = created["content_uri"].removeprefix("mxc://")
    media = Media.objects.get(media_id=mxc.split("/")[1])
    assert media.status == MediaStatus.PENDING and media.blob is None
    response = _put(alice_client, mxc, b"async bytes", "later.txt")
    assert response.status_code == 200 and response.json() == {}
    media.refresh_from_db()
    assert media.status == MediaStatus.STORED and media.upload_name == "later.txt"
    assert body_of(alice_client.get(download_url(mxc))) == b"async bytes"


@pytest.mark.django_db
def test_only_the_creator_may_upload(alice_client, client_for, make_user):
    mxc = _create(alice_client)["content_uri"].removeprefix("mxc://")
    response = _put(client_for(make_user("mallory")), mxc)
    assert response.status_code == 403
    assert response.json()["errcode"] == "M_FORBIDDEN"
    assert Media.objects.get().status == MediaStatus.PENDING


@pytest.mark.django_db
def test_second_upload_is_409(alice_client):
    mxc = _create(alice_client)["content_uri"].removeprefix("mxc://")
    assert _put(alice_client, mxc, b"first").status_code == 200
    response = _put(alice_client, mxc, b"second")
    assert response.status_code == 409
    assert response.json()["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    assert body_of(alice_client.get(download_url(mxc))) == b"first"


@pytest.mark.django_db
def test_expired_reservation_is_404(alice_client):
    mxc = _create(alice_client)["content_uri"].removeprefix("mxc://")
    Media.objects.update(unused_expires_at=timezone.now() - timedelta(seconds=1))
    response = _put(alice_client, mxc)
    assert response.status_code == 404
    assert response.json()["errcode"] == "M_NOT_FOUND"
    assert alice_client.get(download_url(mxc) + "?timeout_ms=0").status_code == 404


@pytest.mark.django_db
def test_unknown_or_foreign_reservation_is_404(alice_client):
    assert _put(alice_client, "test.local/neverreserved").status_code == 404
    assert _put(alice_client, "other.example/abc").status_code == 404


@pytest.mark.django_db
def test_pending_ids_are_capped_per_user(alice_client, client_for, make_user):
    with override_settings(MEDIASITE={**settings.MEDIASITE, "MAX_PENDING_UPLOADS_PER_USER": 3}):
        for _ in range(3):
            _create(alice_client)
        response = alice_client.post("/_matrix/media/v1/create")
        assert response.status_code == 429
        assert response.json()["errcode"] == "M_LIMIT_EXCEEDED"
        assert int(response["Retry-After"]) > 0
        assert response.json()["retry_after_ms"] > 0
        _create(client_for(make_user("bob")))  # the cap is per user


@pytest.mark.django_db
def test_download_of_pending_media_times_out_with_504(alice_client):
    mxc = _create(alice_client)["content_uri"].removeprefix("mxc://")
    started = time.monotonic()
    response = alice_client.get(download_url(mxc) + "?timeout_ms=300")
    assert response.status_code == 504
    assert response.json()["errcode"] == "M_NOT_YET_UPLOADED"
    assert 0.3 <= time.monotonic() - started < 5


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["abc", "-1", "1.5"])
def test_bad_timeout_is_400(alice_client, value):
    mxc = _create(alice_client)["content_uri"].removeprefix("mxc://")
    response = alice_client.get(download_url(mxc) + f"?timeout_ms={value}")
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_INVALID_PARAM"


@pytest.mark.django_db(transaction=True)
def test_download_waits_for_a_pending_upload(alice_client):
    mxc = _create(alice_client)["content_uri"].removeprefix("mxc://")

    def fill_later():
        time.sleep(0.5)
        try:
            assert _put(alice_client, mxc, b"arrived").status_code == 200
        finally:
            connection.close()

    filler = threading.Thread(target=fill_later)
    filler.start()
    response = alice_client.get(download_url(mxc) + "?timeout_ms=10000")
    filler.join()
    assert response.status_code == 200
    assert body_of(response) == b"arrived"


@pytest.mark.django_db(transaction=True)
def test_only_so_many_requests_of_a_process_wait_for_pending_uploads(alice_client, settings, monkeypatch):
    """Anyone may long-poll anyone's reservation: past PENDING_WAITERS_PER_PROCESS waiting
    requests, the next is answered 504 at once instead of holding one more thread."""
    from media_app.services import download

    settings.MEDIASITE = {**settings.MEDIASITE, "PENDING_WAITERS_PER_PROCESS": 1}
    mxc = _create(alice_client)["content_uri"].removeprefix("mxc://")
    polling = threading.Event()

    def sleep(seconds):  # download.py sleeps only in its polling loop: the first request is waiting
        polling.set()
        time.sleep(seconds)

    monkeypatch.setattr(download, "time", types.SimpleNamespace(sleep=sleep, monotonic=time.monotonic))

    def wait_long():
        try:
            alice_client.get(download_url(mxc) + "?timeout_ms=1500")
        finally:
            connection.close()

    first = threading.Thread(target=wait_long)
    first.start()
    assert polling.wait(10)
    started = time.monotonic()
    response = alice_client.get(download_url(mxc) + "?timeout_ms=5000")
    assert response.status_code == 504 and response.json()["errcode"] == "M_NOT_YET_UPLOADED"
    assert time.monotonic() - started < 1.0  # answered at once, not after its own 5 s
    first.join()
    started = time.monotonic()  # the slot is free again: the next one waits its time
    assert alice_client.get(download_url(mxc) + "?timeout_ms=400").status_code == 504
    assert time.monotonic() - started >= 0.4
