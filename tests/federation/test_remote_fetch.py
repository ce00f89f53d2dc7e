"""Fetching remote media in this process from a real HTTP origin on loopback: the legacy
fallback, caching, block list, SSRF, limits and hostile origins; each test once with the fetch
done by the request and once by the (eager) Celery task."""
import concurrent.futures
import contextlib
import io
import secrets
import shutil
import subprocess
import threading
import time

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connections
from django.test import override_settings
from PIL import Image

from media_app import singleflight
from media_app.federation import blocklist
from media_app.federation import ratelimit as fed_ratelimit
from media_app.federation import remote as remote_media
from media_app.models import Media, MediaEvent, Thumbnail
from tests.conftest import _free_port, body_of, png_bytes, require_service
from tests.federation.origin import Origin


@pytest.fixture(scope="module")
def origin():
    server = Origin("127.0.0.2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def trap():
    """A server where no request may ever arrive (redirect targets on forbidden addresses)."""
    server = Origin("127.0.0.1")
    yield server
    server.stop()


@contextlib.contextmanager
def _configured(origin, *, in_worker: bool):
    conf = {**django_settings.MEDIASITE, "REMOTE_FETCH_IN_WORKER": in_worker,
            "FEDERATION_SERVER_MAP": {"origin.test": origin.url, "blocked.test": origin.url},
            "OUTBOUND_ALLOWLIST": ["127.0.0.2/32"], "BLOCKED_SERVERS": ["blocked.test"],
            "MAX_UPLOAD_SIZE_BYTES": 1 << 20, "REMOTE_FETCH_DEADLINE_SECONDS": 5.0,
            "OUTBOUND_READ_TIMEOUT_SECONDS": 2.0}
    with override_settings(MEDIASITE=conf):
        blocklist.clear_cache()
        yield origin
    blocklist.clear_cache()


@pytest.fixture(params=["in-web", "in-worker"])
def remote(request, origin, transactional_db):
    """The origin, with the fetch done by the request that needs it, or by a Celery task (eager
    here; tests/federation/test_two_instances.py runs a real worker)."""
    with _configured(origin, in_worker=request.param == "in-worker"):
        yield origin


@pytest.fixture
def in_web(origin, transactional_db):
    """The origin, with the fetch done by the request that needs it (the default)."""
    with _configured(origin, in_worker=False):
        yield origin


def new_id() -> str:
    return "t" + secrets.token_hex(8)


def get(client, server, media_id, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    response = client.get(f"/_matrix/client/v1/media/download/{server}/{media_id}" + (f"?{query}" if query else ""))
    if response.streaming:
        # Read to the end, which closes the response as a server does once it has sent it: the
        # request that fetched remote media has stored it by then (its close waits for the store).
        response.streaming_content = [b"".join(response.streaming_content)]
    return response


def test_remote_media_is_fetched_once_through_the_legacy_fallback_and_then_served_from_cache(remote, alice_client):
    data = png_bytes(20, 10)
    media_id = remote.on(new_id(), "bytes", data, "image/png")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 200, response.content
    assert body_of(response) == data
    assert response["Content-Type"] == "image/png"
    media = Media.objects.get(server_name="origin.test", media_id=media_id)
    assert media.origin == "remote" and media.status == "stored" and media.media_length == len(data)
    assert media.upload_name == "picture.png"  # control character removed, as for uploads
    assert MediaEvent.objects.filter(event_type="media.remote_cached", media_id=media_id).count() == 1
    assert MediaEvent.objects.get(event_type="media.remote_cached").payload == {
        "media_id": media_id, "origin_server": "origin.test"}
    assert remote.count(media_id) == 1
    for _ in range(3):
        assert body_of(get(alice_client, "origin.test", media_id)) == data
    assert remote.count(media_id) == 1  # from the cache


def test_thumbnail_of_remote_media_is_rendered_locally(remote, alice_client):
    media_id = remote.on(new_id(), "bytes", png_bytes(200, 100), "image/png")
    response = alice_client.get(f"/_matrix/client/v1/media/thumbnail/origin.test/{media_id}?width=32&height=32&method=crop")
    assert response.status_code == 200, response.content
    with Image.open(io.BytesIO(body_of(response))) as image:
        assert image.size == (32, 32)
    assert Thumbnail.objects.filter(source__media__media_id=media_id).count() == 1
    assert remote.count(media_id) == 1


def test_remote_bytes_identical_to_local_content_are_deduplicated(remote, alice_client):
    from tests.conftest import upload

    data = png_bytes(7, 7)
    upload(alice_client, data)
    media_id = remote.on(new_id(), "bytes", data, "image/png")
    assert get(alice_client, "origin.test", media_id).status_code == 200
    blobs = {m.blob_id for m in Media.objects.all()}
    assert len(blobs) == 1


def test_quarantined_content_stays_quarantined_when_fetched_from_elsewhere(remote, alice_client):
    from media_app.models import Blob
    from tests.conftest import upload

    data = png_bytes(9, 9)
    upload(alice_client, data)
    Blob.objects.update(quarantined=True)
    media_id = remote.on(new_id(), "bytes", data, "image/png")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 404 and response.json()["code"] == "MEDIA_QUARANTINED"
    assert Blob.objects.count() == 1


def test_blocked_server_is_refused_without_any_connection(remote, alice_client):
    before = remote.connections
    response = get(alice_client, "blocked.test", new_id())
    assert response.status_code == 403
    assert response.json()["code"] == "MEDIA_SERVER_BLOCKED"
    assert response.json()["errcode"] == "M_FORBIDDEN"
    assert remote.connections == before


def test_blocked_server_from_moderation_rows_is_refused_without_any_connection(remote, alice_client):
    from media_app.moderation.models import BlockedServer

    BlockedServer.objects.create(server_name="origin.test", active=True)
    blocklist.clear_cache()
    before = remote.connections
    response = get(alice_client, "origin.test", remote.on(new_id(), "bytes", b"x"))
    assert response.status_code == 403 and response.json()["code"] == "MEDIA_SERVER_BLOCKED"
    assert remote.connections == before


def test_missing_remote_media_is_404_and_the_failure_is_cached(remote, alice_client):
    media_id = new_id()
    assert get(alice_client, "origin.test", media_id).status_code == 404
    assert get(alice_client, "origin.test", media_id).status_code == 404
    assert remote.count(media_id) == 1


def test_origin_5xx_is_502_and_not_retried_while_cached(remote, alice_client):
    media_id = remote.on(new_id(), "error", 500)
    first = get(alice_client, "origin.test", media_id)
    assert first.status_code == 502 and first.json()["code"] == "REMOTE_FETCH_FAILED"
    assert get(alice_client, "origin.test", media_id).status_code == 502
    assert remote.count(media_id) == 1


def test_endless_body_is_cut_at_the_size_limit(remote, alice_client):
    response = get(alice_client, "origin.test", remote.on(new_id(), "endless"))
    assert response.status_code == 413 and response.json()["errcode"] == "M_TOO_LARGE"


def test_declared_length_over_the_limit_is_refused_unread(remote, alice_client):
    response = get(alice_client, "origin.test", remote.on(new_id(), "lying_length", 50 << 20, 10))
    assert response.status_code == 413


def test_body_shorter_than_its_content_length_is_a_502(remote, alice_client):
    response = get(alice_client, "origin.test", remote.on(new_id(), "lying_length", 1000, 10))
    assert response.status_code == 502
    assert not Media.objects.filter(server_name="origin.test").exists()


def test_slow_drip_is_stopped_by_the_total_deadline(remote, alice_client):
    started = time.monotonic()
    response = get(alice_client, "origin.test", remote.on(new_id(), "drip", 0.2))
    assert response.status_code == 504, response.content
    assert response.json()["code"] == "REMOTE_TIMEOUT"
    assert time.monotonic() - started < 60  # bounded by the deadline, not by the drip


def test_redirect_loop_is_stopped_after_five_redirects(remote, alice_client):
    media_id = new_id()
    remote.on(media_id, "redirect", f"{remote.url}/redirect/{media_id}/again")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 502
    assert remote.count(media_id) == 6  # the first answer and five redirects followed


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/x", "http://169.254.169.254/latest/meta-data/",
                                    "http://[::ffff:127.0.0.1]:{port}/x", "file:///etc/passwd",
                                    "https:/etc/passwd",  # a scheme without a host: not a path here
                                    "http://localhost:{port}/x"])
def test_redirects_to_forbidden_addresses_are_not_followed(remote, alice_client, trap, target):
    before = trap.connections
    response = get(alice_client, "origin.test", remote.on(new_id(), "redirect", target.format(port=trap.port)))
    assert response.status_code == 502, response.content
    assert trap.connections == before
    # The answer names no address or host: it must not tell a client what a name resolves to.
    assert response.json() == {"errcode": "M_UNKNOWN", "code": "REMOTE_FETCH_FAILED",
                               "error": "Could not fetch media from the remote server"}


def test_direct_connection_to_a_forbidden_address_is_refused(remote, alice_client, trap):
    conf = {**django_settings.MEDIASITE, "FEDERATION_SERVER_MAP": {"trap.test": trap.url},
            "OUTBOUND_ALLOWLIST": ["127.0.0.2/32"]}
    before = trap.connections
    with override_settings(MEDIASITE=conf):
        response = get(alice_client, "trap.test", new_id())
    assert response.status_code == 502
    assert trap.connections == before


def test_gzip_bomb_is_never_inflated(remote, alice_client):
    response = get(alice_client, "origin.test", remote.on(new_id(), "gzip_bomb"))
    assert response.status_code == 502
    assert not Media.objects.filter(server_name="origin.test").exists()


def test_html_claiming_to_be_png_is_stored_and_served_as_what_it_is(remote, alice_client):
    media_id = remote.on(new_id(), "bytes", b"<html><script>alert(1)</script></html>", "image/png")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html"
    assert response["Content-Disposition"].startswith("attachment")


def test_allow_remote_false_does_not_fetch(remote, alice_client):
    media_id = remote.on(new_id(), "bytes", b"data")
    assert get(alice_client, "origin.test", media_id, allow_remote="false").status_code == 404
    assert remote.count(media_id) == 0


def test_federation_answer_with_bytes_inline_is_signed_and_parsed(remote, alice_client):
    data = png_bytes(11, 11)
    media_id = remote.on(new_id(), "federation_bytes", data)
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 200, response.content
    assert body_of(response) == data
    assert remote.authorizations[-1].startswith('X-Matrix origin="test.local",destination="origin.test",key="ed25519:')


def test_federation_answer_with_location_is_followed(remote, alice_client):
    data = png_bytes(12, 12)
    plain = remote.on(new_id(), "bytes", data, "image/png")
    media_id = remote.on(new_id(), "federation_location", f"{remote.url}/files/{plain}")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 200, response.content
    assert body_of(response) == data
    assert remote.count(plain) == 1


def test_an_error_body_where_a_location_points_is_not_read_as_a_matrix_error(remote, alice_client):
    # A bucket or CDN answering 400 with a body that happens to say M_TOO_LARGE: the fetch
    # failed, it did not find media too large (which would send thumbnails to the origin's).
    elsewhere = remote.on(new_id(), "json", 400, {"errcode": "M_TOO_LARGE", "error": "not Matrix"})
    media_id = remote.on(new_id(), "federation_location", f"{remote.url}/files/{elsewhere}")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 502 and response.json()["code"] == "REMOTE_FETCH_FAILED"


def test_remote_bytes_per_user_are_rate_limited_with_retry_after(remote, alice_client, settings):
    from media_app.federation import ratelimit

    settings.MEDIASITE = {**settings.MEDIASITE, "REMOTE_DOWNLOAD_BYTES_PER_USER": 1000,
                          "REMOTE_DOWNLOAD_WINDOW_SECONDS": 600}
    ratelimit.limiter().storage.reset()
    first = remote.on(new_id(), "bytes", b"a" * 1500)
    assert get(alice_client, "origin.test", first).status_code == 200
    second = remote.on(new_id(), "bytes", b"b" * 10)
    response = get(alice_client, "origin.test", second)
    assert response.status_code == 429
    assert response.json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert 1 <= int(response["Retry-After"]) <= 600
    assert remote.count(second) == 0
    assert get(alice_client, "origin.test", first).status_code == 200  # cached media is not limited
    ratelimit.limiter().storage.reset()


def test_concurrent_fetches_per_origin_are_limited(remote, alice_client, settings):
    from media_app.federation import ratelimit

    settings.MEDIASITE = {**settings.MEDIASITE, "REMOTE_FETCHES_PER_ORIGIN": 1}
    # A fetch in progress, asked for under another spelling of the same name.
    held = ratelimit.acquire_origin_slot("Origin.TEST", hold_seconds=30)
    try:
        media_id = remote.on(new_id(), "bytes", b"c")
        response = get(alice_client, "origin.test", media_id)
        assert response.status_code == 429 and response["Retry-After"]
        assert remote.count(media_id) == 0
    finally:
        ratelimit.release_origin_slot("Origin.TEST", held)
    assert get(alice_client, "origin.test", media_id).status_code == 200


def test_thumbnail_of_media_too_large_to_cache_comes_from_the_origin(remote, alice_client):
    thumb = png_bytes(32, 24, color=(0, 0, 255))
    media_id = remote.on(new_id(), "oversized", 50 << 20, thumb)
    assert get(alice_client, "origin.test", media_id).status_code == 413  # never cached
    response = alice_client.get(f"/_matrix/client/v1/media/thumbnail/origin.test/{media_id}?width=32&height=32&method=scale")
    assert response.status_code == 200, response.content
    assert body_of(response) == thumb
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "width=32" in remote.thumbnail_queries[-1] and "allow_remote=false" in remote.thumbnail_queries[-1]
    assert not Media.objects.filter(media_id=media_id).exists()


def test_origin_thumbnail_that_is_not_an_image_is_refused_and_the_failure_remembered(remote, alice_client):
    media_id = remote.on(new_id(), "oversized", 50 << 20, b"<html>not an image</html>")
    before = len(remote.thumbnail_queries)
    for _ in range(2):
        response = alice_client.get(f"/_matrix/client/v1/media/thumbnail/origin.test/{media_id}?width=32&height=32")
        assert response.status_code == 502
    assert len(remote.thumbnail_queries) == before + 1


def test_origin_thumbnail_is_fetched_once_per_size_for_concurrent_and_later_requests(in_web, alice_client):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    thumb = png_bytes(16, 16, color=(0, 255, 0))
    media_id = in_web.on(new_id(), "oversized", 50 << 20, thumb, 0.5)  # answers after half a second
    url = f"/_matrix/client/v1/media/thumbnail/origin.test/{media_id}?width=16&height=16&method=scale"
    before = len(in_web.thumbnail_queries)

    def one(_):
        try:
            response = alice_client.get(url)
            return response.status_code, body_of(response)
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert results == [(200, thumb)] * 8
    assert body_of(alice_client.get(url)) == thumb  # later: from the cache
    assert len(in_web.thumbnail_queries) == before + 1
    other_size = alice_client.get(url.replace("width=16", "width=24"))
    assert other_size.status_code == 200
    assert len(in_web.thumbnail_queries) == before + 2


# --- the request that fetches -----------------------------------------------------------------

def test_the_fetching_request_is_answered_from_its_temp_file_and_stores_once_it_is_sent(in_web, alice_client):
    data = png_bytes(13, 13)
    media_id = in_web.on(new_id(), "bytes", data, "image/png")
    response = alice_client.get(f"/_matrix/client/v1/media/download/origin.test/{media_id}")
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(data)) and response["Content-Type"] == "image/png"
    # Headers out, body not yet sent: nothing is stored, nobody else is released.
    assert not Media.objects.filter(media_id=media_id).exists()
    assert body_of(response) == data  # sent to the end: the response closes and stores
    media = Media.objects.get(media_id=media_id)
    assert media.origin == "remote" and media.status == "stored"
    assert response["ETag"] == f'"{media.blob.sha256}"'
    assert MediaEvent.objects.filter(event_type="media.remote_cached", media_id=media_id).count() == 1
    assert body_of(get(alice_client, "origin.test", media_id)) == data
    assert in_web.count(media_id) == 1


def test_a_response_dropped_unsent_still_stores_the_fetched_media(in_web, alice_client):
    media_id = in_web.on(new_id(), "bytes", b"abc" * 100)
    response = alice_client.get(f"/_matrix/client/v1/media/download/origin.test/{media_id}")
    assert response.status_code == 200
    response.close()  # what the server does when the client goes away mid-answer
    assert Media.objects.filter(media_id=media_id, status="stored").exists()


def test_head_of_uncached_remote_media_fetches_and_stores_it(in_web, alice_client):
    data = b"head" * 50
    media_id = in_web.on(new_id(), "bytes", data)
    response = alice_client.head(f"/_matrix/client/v1/media/download/origin.test/{media_id}")
    assert response.status_code == 200 and response["Content-Length"] == str(len(data))
    assert Media.objects.filter(media_id=media_id, status="stored").exists()
    assert body_of(get(alice_client, "origin.test", media_id)) == data
    assert in_web.count(media_id) == 1


def test_content_quarantined_by_hash_alone_is_never_answered_from_the_temp_file(in_web, alice_client):
    import hashlib

    from media_app.moderation.models import QuarantinedContent

    data = png_bytes(14, 14)
    QuarantinedContent.objects.create(sha256=hashlib.sha256(data).hexdigest())  # bytes long reclaimed
    media_id = in_web.on(new_id(), "bytes", data, "image/png")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 404 and response.json()["code"] == "MEDIA_QUARANTINED"
    media = Media.objects.get(media_id=media_id)
    assert media.status == "quarantined" and media.blob.quarantined


def test_a_waiter_takes_the_fetch_over_when_its_owner_goes_away(in_web, alice_client):
    data = b"taken over"
    media_id = in_web.on(new_id(), "bytes", data)
    # Another process's request owns the fetch, then vanishes without a result.
    flight = singleflight.claim(remote_media.flight_key("origin.test", media_id), lease=30)
    threading.Timer(0.5, singleflight.abandon, [flight]).start()
    started = time.monotonic()
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 200, response.content
    assert body_of(response) == data
    assert time.monotonic() - started >= 0.5  # it waited for the owner first
    assert in_web.count(media_id) == 1


def test_timeout_ms_bounds_the_wait_for_the_origin_to_answer_not_the_transfer(in_web, alice_client):
    data = secrets.token_bytes(50_000)
    media_id = in_web.on(new_id(), "trickle", data, 1.5)  # answers at once, then 1.5 s of bytes
    started = time.monotonic()
    response = get(alice_client, "origin.test", media_id, timeout_ms=1000)
    assert response.status_code == 200, response.content
    assert body_of(response) == data and time.monotonic() - started >= 1.3


def test_a_timeout_set_by_an_impatient_client_is_not_remembered_against_the_origin(in_web, alice_client):
    data = b"slow but fine"
    media_id = in_web.on(new_id(), "bytes", data, None, 1.5)
    response = get(alice_client, "origin.test", media_id, timeout_ms=1000)
    assert response.status_code == 504 and response.json()["code"] == "REMOTE_TIMEOUT"
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 200 and body_of(response) == data
    assert in_web.count(media_id) == 2


@pytest.fixture
def own_origin(transactional_db):
    """An origin of the test's own, so its connection count starts from nothing."""
    server = Origin("127.0.0.2")
    with _configured(server, in_worker=False):
        yield server
    server.stop()


def test_connections_to_an_origin_are_kept_alive_and_reused(own_origin, alice_client):
    for _ in range(3):
        data = secrets.token_bytes(1000)
        assert body_of(get(alice_client, "origin.test", own_origin.on(new_id(), "bytes", data))) == data
    assert own_origin.connections == 1


def test_a_response_not_read_to_its_end_does_not_leave_its_connection_for_the_next_request(own_origin, alice_client):
    # Refused on its Content-Length, before its body (sent a little later) has arrived.
    too_large = own_origin.on(new_id(), "late_body", b"x" * ((1 << 20) + 1), 2.0)
    assert get(alice_client, "origin.test", too_large).status_code == 413
    data = secrets.token_bytes(1000)
    assert body_of(get(alice_client, "origin.test", own_origin.on(new_id(), "bytes", data))) == data
    assert own_origin.connections == 2


def test_a_kept_alive_connection_the_origin_closed_is_replaced_once(own_origin, alice_client):
    assert get(alice_client, "origin.test", own_origin.on(new_id(), "bytes", b"first")).status_code == 200
    media_id = own_origin.on(new_id(), "hangup_when_reused", b"second")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 200, response.content
    assert body_of(response) == b"second"
    assert own_origin.count(media_id) == 2 and own_origin.connections == 2


def test_an_origin_hanging_up_on_a_new_connection_is_not_asked_again(own_origin, alice_client):
    media_id = own_origin.on(new_id(), "federation_hangup")
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 502 and response.json()["code"] == "REMOTE_FETCH_FAILED"
    assert own_origin.count(media_id) == 1


def test_a_kept_alive_connection_is_checked_against_the_address_rules_again_before_reuse(own_origin, alice_client):
    assert get(alice_client, "origin.test", own_origin.on(new_id(), "bytes", b"allowed")).status_code == 200
    media_id = own_origin.on(new_id(), "bytes", b"no longer allowed")
    with override_settings(MEDIASITE={**django_settings.MEDIASITE, "OUTBOUND_ALLOWLIST": ["127.0.0.3/32"]}):
        response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 502
    assert own_origin.count(media_id) == 0
    assert own_origin.connections == 1  # refused on the kept-alive connection, not on a new one


@pytest.mark.parametrize("flights", ["file", "postgresql", "redis"])
def test_requests_waiting_for_a_fetch_do_not_wait_for_the_fetching_client_to_read(in_web, alice_client, flights,
                                                                                   monkeypatch, tmp_path):
    """On each single-flight backend: the store thread ends the flight the request claimed."""
    from django.db import connection

    if flights == "redis":
        require_service("Redis", bool(getattr(django_settings, "REDIS_URL", "")), "set REDIS_URL")
        chosen = singleflight.RedisBackend(django_settings.REDIS_URL)
    elif flights == "postgresql":
        require_service("PostgreSQL", connection.vendor == "postgresql", "set DATABASE_URL")
        chosen = singleflight.PostgresBackend()
    else:
        chosen = singleflight.FileBackend(tmp_path / "flights")
    monkeypatch.setattr(singleflight, "backend", lambda: chosen)

    data = secrets.token_bytes(300_000)
    media_id = in_web.on(new_id(), "bytes", data)
    first = alice_client.get(f"/_matrix/client/v1/media/download/origin.test/{media_id}")
    assert first.status_code == 200  # answered; its client has not read a byte yet
    def another_client():
        try:
            return get(alice_client, "origin.test", media_id, timeout_ms=5000)
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # meanwhile
        second = pool.submit(another_client).result()
    assert second.status_code == 200, second.content
    assert body_of(second) == data
    # The first answer is whole, though its temp file was stored (and removed) meanwhile.
    assert b"".join(first.streaming_content) == data
    assert in_web.count(media_id) == 1
    if isinstance(chosen, singleflight.PostgresBackend):
        chosen.close_connections()


def test_an_owner_whose_flight_lapsed_finds_its_successors_row_instead_of_failing(in_web, alice_client):
    """A lease lost mid-fetch (a Redis outage, a pause past the lease) lets a second owner fetch
    the same media; whichever stores second gets the first one's row, not an error."""
    data = b"fetched twice"
    media_id = in_web.on(new_id(), "bytes", data)
    key = remote_media.flight_key("origin.test", media_id)
    first = remote_media._fetch_as_owner(remote_media._claim(key), "origin.test", media_id)
    singleflight.abandon(first.flight)  # the lease lapses: the first owner no longer holds it
    second = remote_media._fetch_as_owner(remote_media._claim(key), "origin.test", media_id)
    stored = second.store()
    assert first.store().pk == stored.pk
    assert Media.objects.filter(media_id=media_id).count() == 1
    assert MediaEvent.objects.filter(event_type="media.remote_cached", media_id=media_id).count() == 1
    assert body_of(get(alice_client, "origin.test", media_id)) == data
    assert in_web.count(media_id) == 2


# --- the single flight's Redis going away mid-fetch -------------------------------------------
# On a Redis server of the test's own, started, killed and started again empty (as Redis without
# persistence comes back).


class PrivateRedis:
    def __init__(self):
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited (port taken?)"
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.02)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        self.kill()
        self.start()


def _until(condition, seconds: float = 10):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def flights_on_private_redis(monkeypatch):
    """The flights and the remote-media rate limits (byte counts, origin slots) on one Redis of
    the test's own, as a deployment has them on its one REDIS_URL."""
    require_service("redis-server", shutil.which("redis-server") is not None, "install Redis")
    server = PrivateRedis()
    server.start()
    chosen = singleflight.RedisBackend(server.url)
    monkeypatch.setattr(singleflight, "backend", lambda: chosen)
    monkeypatch.setattr(fed_ratelimit, "_redis_url", lambda: server.url)
    monkeypatch.setattr(fed_ratelimit, "_limiter", None)
    yield server
    if server.proc.poll() is None:
        server.kill()
    chosen.client.close()
    server.client.close()


def test_redis_gone_before_a_fetch_answers_503_with_retry_after_and_local_media_still_serves(
        in_web, flights_on_private_redis, alice_client):
    from tests.conftest import download_url, upload

    local = upload(alice_client, b"local bytes")
    data = b"after the outage"
    media_id = in_web.on(new_id(), "bytes", data)
    flights_on_private_redis.kill()
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["code"] == "COORDINATION_UNAVAILABLE"
    assert in_web.count(media_id) == 0
    assert body_of(alice_client.get(download_url(local))) == b"local bytes"
    flights_on_private_redis.start()
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 200 and body_of(response) == data


def test_redis_gone_until_the_fetch_ends_still_stores_and_answers(in_web, flights_on_private_redis, alice_client):
    data = secrets.token_bytes(40_000)
    media_id = in_web.on(new_id(), "trickle", data, 2.5)
    outage = threading.Thread(target=lambda: (_until(lambda: in_web.count(media_id) == 1),
                                              flights_on_private_redis.kill()))
    outage.start()
    # Stored inline (not deferred), as HEAD requests and thumbnails do. After the bytes, with
    # Redis gone: the origin slot's release, the flight's end, the user's byte count.
    media = remote_media.remote_media_get(server_name="origin.test", media_id=media_id, timeout_ms=5000)
    outage.join()
    assert media.status == "stored" and media.blob.size == len(data)
    flights_on_private_redis.start()
    response = get(alice_client, "origin.test", media_id)
    assert response.status_code == 200 and body_of(response) == data
    assert in_web.count(media_id) == 1


def test_redis_restarted_empty_mid_fetch_lets_a_second_owner_fetch_and_both_are_answered(
        in_web, flights_on_private_redis, alice_client, caplog):
    data = secrets.token_bytes(40_000)
    media_id = in_web.on(new_id(), "trickle", data, 2.5)

    def request():
        try:
            response = get(alice_client, "origin.test", media_id, timeout_ms=5000)
            return response.status_code, body_of(response)
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(request)
        _until(lambda: in_web.count(media_id) == 1)  # the origin is sending
        flights_on_private_redis.restart()  # the first owner's claim is gone with the data
        second = pool.submit(request)
        assert first.result() == (200, data)
        assert second.result() == (200, data)
    # Two owners, one origin request each: the price of the outage. One row for both.
    assert in_web.count(media_id) == 2
    assert Media.objects.filter(media_id=media_id).count() == 1
    # Both stores went through: neither answered its waiters with a failure.
    assert not [r.getMessage() for r in caplog.records if r.name == remote_media.logger.name]
    assert body_of(get(alice_client, "origin.test", media_id)) == data
    assert in_web.count(media_id) == 2
