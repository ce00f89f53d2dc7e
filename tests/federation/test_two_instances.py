"""Two live Mediasite instances federating over loopback: signed fetches, refusals, thumbnails,
single flight across processes, rate limits."""
import contextlib
import io
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import IncompleteRead
from pathlib import Path

import pytest
from PIL import Image
from signedjson.key import generate_signing_key, read_signing_keys
from signedjson.sign import sign_json

from django.db import connection

from media_app.federation import multipart
from media_app.models import Media, MediaEvent
from tests.conftest import noisy_png, png_bytes, stored_media

pytestmark = pytest.mark.server


def http(method, url, *, body=None, headers=None, timeout=60):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def upload_to(instance, data: bytes, token: str) -> str:
    status, _, body = http("POST", instance.url + "/_matrix/media/v3/upload?filename=red.png", body=data,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"})
    assert status == 200, body
    return json.loads(body)["content_uri"].removeprefix("mxc://")


def x_matrix(key, *, origin: str, destination: str, uri: str, method: str = "GET") -> str:
    signed = sign_json({"method": method, "uri": uri, "origin": origin, "destination": destination},
                       origin, key)
    sig = signed["signatures"][origin][f"ed25519:{key.version}"]
    return f'X-Matrix origin="{origin}",destination="{destination}",key="ed25519:{key.version}",sig="{sig}"'


def a_signing_key(a):
    with open(Path(a.data_dir) / "signing.key") as fh:
        return read_signing_keys(fh)[0]


def test_a_fetches_b_media_over_signed_federation_and_caches_it(pair, make_user, make_token):
    a, b = pair
    data = png_bytes(64, 48, color=(10, 200, 30))
    mxc = upload_to(b, data, b.token)
    assert mxc.startswith("b.test/")
    token = make_token(make_user("alice"))
    status, headers, body = http("GET", f"{a.url}/_matrix/client/v1/media/download/{mxc}",
                                 headers={"Authorization": f"Bearer {token}"})
    assert status == 200, (body, a.log()[-3000:])
    assert body == data
    assert headers["Content-Type"] == "image/png"
    media = stored_media("b.test", mxc.split("/")[1])
    assert media.origin == "remote" and media.upload_name == "red.png"
    assert MediaEvent.objects.filter(event_type="media.remote_cached", media_id=media.media_id).count() == 1
    # B saw a signed federation request from A (its access log names the path).
    assert f"/_matrix/federation/v1/media/download/{media.media_id}" in b.log()

    status, headers, body = http("GET", f"{a.url}/_matrix/client/v1/media/thumbnail/{mxc}?width=32&height=32&method=crop",
                                 headers={"Authorization": f"Bearer {token}"})
    assert status == 200, body
    with Image.open(io.BytesIO(body)) as image:
        assert image.size == (32, 32)


def test_b_serves_its_media_to_a_correctly_signed_request(pair):
    a, b = pair
    data = png_bytes(5, 5)
    media_id = upload_to(b, data, b.token).split("/")[1]
    uri = f"/_matrix/federation/v1/media/download/{media_id}"
    auth = x_matrix(a_signing_key(a), origin="a.test", destination="b.test", uri=uri)
    status, headers, body = http("GET", b.url + uri, headers={"Authorization": auth})
    assert status == 200, body
    metadata, part = multipart.read_media_response(io.BytesIO(body), headers["Content-Type"])
    assert metadata == {}
    assert part.headers["content-type"] == "image/png"
    assert part.headers["content-length"] == str(len(data))  # what lets A answer as it receives
    assert part.stream.read(1 << 20) == data

    thumb_uri = f"/_matrix/federation/v1/media/thumbnail/{media_id}?width=32&height=32&method=scale"
    auth = x_matrix(a_signing_key(a), origin="a.test", destination="b.test", uri=thumb_uri)
    status, headers, body = http("GET", b.url + thumb_uri, headers={"Authorization": auth})
    assert status == 200, body
    _metadata, part = multipart.read_media_response(io.BytesIO(body), headers["Content-Type"])
    assert part.headers["content-type"].startswith("image/")


@pytest.mark.parametrize("case", ["unsigned", "wrong_key", "other_destination", "tampered_uri", "not_x_matrix"])
def test_b_refuses_unsigned_and_wrongly_signed_requests(pair, case):
    a, b = pair
    media_id = upload_to(b, png_bytes(4, 4), b.token).split("/")[1]
    uri = f"/_matrix/federation/v1/media/download/{media_id}"
    key = a_signing_key(a)
    headers = {
        "unsigned": {},
        # A key that a.test does not publish, under the ID it does publish.
        "wrong_key": {"Authorization": x_matrix(generate_signing_key(key.version), origin="a.test",
                                                destination="b.test", uri=uri)},
        "other_destination": {"Authorization": x_matrix(key, origin="a.test", destination="c.test", uri=uri)},
        "tampered_uri": {"Authorization": x_matrix(key, origin="a.test", destination="b.test", uri=uri + "x")},
        "not_x_matrix": {"Authorization": "Bearer abc"},
    }[case]
    status, _, body = http("GET", b.url + uri, headers=headers)
    assert status == 401, body
    assert json.loads(body)["errcode"] == "M_UNAUTHORIZED"


def test_b_refuses_a_blocked_requester_before_fetching_its_keys(pair):
    a, b = pair
    media_id = upload_to(b, png_bytes(3, 3), b.token).split("/")[1]
    uri = f"/_matrix/federation/v1/media/download/{media_id}"
    auth = x_matrix(a_signing_key(a), origin="evil.test", destination="b.test", uri=uri)
    status, _, body = http("GET", b.url + uri, headers={"Authorization": auth})
    assert status == 403, body
    assert json.loads(body) == {"errcode": "M_FORBIDDEN", "error": "Media from this server is not permitted"}


def test_b_serves_only_its_own_media_over_federation(pair):
    a, b = pair
    uri = f"/_matrix/federation/v1/media/download/{secrets.token_hex(8)}"
    auth = x_matrix(a_signing_key(a), origin="a.test", destination="b.test", uri=uri)
    status, _, body = http("GET", b.url + uri, headers={"Authorization": auth})
    assert status == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND"


def test_a_large_first_fetch_is_answered_as_it_arrives_and_one_broken_off_is_cut_short(pair, fed_origin, make_user,
                                                                                       make_token):
    """Through gunicorn: in-web, a first fetch of over 1 MiB is answered while it arrives (no
    ETag: the hash is not known yet), and an origin breaking off midway cuts the client's answer
    short (the connection closes) rather than completing or hanging it. In-worker, neither."""
    a, b = pair
    in_worker = a.env["MEDIASITE_REMOTE_FETCH_IN_WORKER"] == "true"
    data = noisy_png(900)
    assert len(data) > 2 << 20
    mxc = upload_to(b, data, b.token)
    auth = {"Authorization": f"Bearer {make_token(make_user('erin'))}"}
    status, headers, body = http("GET", f"{a.url}/_matrix/client/v1/media/download/{mxc}", headers=auth)
    assert status == 200 and body == data
    assert ("ETag" in headers) is in_worker
    assert stored_media("b.test", mxc.split("/")[1]).status == "stored"

    gate, sent = threading.Event(), threading.Event()
    gate.set()
    short = fed_origin.on("s" + secrets.token_hex(8), "gated", data, len(data) + 1000, 500_000, gate, sent)
    # A multipart part longer than it said: all the declared bytes came, but the last is held
    # back until the part is seen to end there, so this answer is cut short too.
    longer = fed_origin.on("l" + secrets.token_hex(8), "federation_bytes", data, len(data) - 1000)
    for media_id, declared in ((short, len(data) + 1000), (longer, len(data) - 1000)):
        url = f"{a.url}/_matrix/client/v1/media/download/origin.test/{media_id}"
        if in_worker:
            assert http("GET", url, headers=auth)[0] == 502
        else:
            with urllib.request.urlopen(urllib.request.Request(url, headers=auth), timeout=30) as response:
                assert response.status == 200 and response.headers["Content-Length"] == str(declared)
                with pytest.raises(IncompleteRead):
                    response.read()
        assert not Media.objects.filter(media_id=media_id).exists()


def test_a_client_leaving_a_streamed_first_fetch_early_leaves_the_media_stored(pair, make_user, make_token):
    a, b = pair
    in_worker = a.env["MEDIASITE_REMOTE_FETCH_IN_WORKER"] == "true"
    data = noisy_png(900)
    mxc = upload_to(b, data, b.token)
    request = urllib.request.Request(f"{a.url}/_matrix/client/v1/media/download/{mxc}",
                                     headers={"Authorization": f"Bearer {make_token(make_user('ivan'))}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200 and ("ETag" in response.headers) is in_worker  # streamed in-web
        assert data.startswith(response.read(100_000))
    # Gone after 100 KB: the fetch goes on, is stored, and the next request is served from it.
    deadline = time.monotonic() + 20
    while not Media.objects.filter(media_id=mxc.split("/")[1], status="stored").exists():
        assert time.monotonic() < deadline, a.log()[-3000:]
        time.sleep(0.1)
    status, headers, body = http("GET", request.full_url, headers=dict(request.header_items()))
    assert status == 200 and body == data and "ETag" in headers
    assert b.log().count(f"/_matrix/federation/v1/media/download/{mxc.split('/')[1]}") == 1


def test_a_publishes_its_key_and_b_fetched_it(pair):
    a, _b = pair
    status, _, body = http("GET", a.url + "/_matrix/key/v2/server")
    assert status == 200
    assert json.loads(body)["server_name"] == "a.test"


def _hundred_first_requests(urls: list, fed_origin, token: str, color) -> str:
    """100 concurrent downloads of one uncached remote media, spread over `urls` in turn: all
    answered with its bytes, and one request at the origin. Returns its media ID."""
    data = png_bytes(30, 30, color=color)
    # The origin answers after a second, so every request arrives while the fetch is in flight.
    media_id = fed_origin.on("c" + secrets.token_hex(8), "bytes", data, "image/png", 1.0)
    path = f"/_matrix/client/v1/media/download/origin.test/{media_id}"

    def one(i):
        return http("GET", urls[i % len(urls)] + path, headers={"Authorization": f"Bearer {token}"}, timeout=120)

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(100)))
    statuses = [status for status, _, _ in results]
    assert statuses == [200] * 100, statuses
    assert all(body == data for _, _, body in results)
    assert fed_origin.count(media_id) == 1
    return media_id


def test_hundred_concurrent_requests_over_two_web_processes_make_one_origin_request(pair, fed_origin, make_user,
                                                                                     make_token):
    a, _b = pair
    media_id = _hundred_first_requests([a.url], fed_origin, make_token(make_user("carol")), (1, 2, 3))
    pids = {line.rsplit("pid=", 1)[1] for line in a.log().splitlines() if media_id in line and "pid=" in line}
    assert len(pids) >= 2, "the requests were all served by one web process"


def test_hundred_concurrent_requests_over_two_nodes_of_one_server_make_one_origin_request(
        pair, fed_origin, make_user, make_token, tmp_path):
    """A second node of A: its own gunicorn (two processes), on A's database, Redis (when set)
    and data directory, as nodes share them. Every other request goes to it."""
    from tests.conftest import _free_port, start_server, stop_server

    a, _b = pair
    second = start_server(tmp_path, port=_free_port(), **a.env)
    try:
        media_id = _hundred_first_requests([a.url, second.url], fed_origin, make_token(make_user("dora")), (4, 5, 6))
        assert media_id in second.log() and media_id in a.log()  # both nodes answered some
    finally:
        stop_server(second)


@contextlib.contextmanager
def media_inserts_blocked():
    """Hold, from outside A, a lock that makes every INSERT of a media row on A's database wait."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        import psycopg

        conn = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                               password=db["PASSWORD"] or None, dbname=db["NAME"])
        conn.execute(f"LOCK TABLE {Media._meta.db_table} IN SHARE MODE")  # reads pass, writes wait
    else:
        import sqlite3

        conn = sqlite3.connect(db["NAME"], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # SQLite's one write lock; readers pass
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def test_who_is_answered_while_the_fetched_bytes_cannot_be_stored_yet(pair, fed_origin, make_user, make_token):
    """In-web: the request that fetched is answered from its temp file while storing waits; the
    other requesters are released when the media is stored. In-worker: everyone waits for it."""
    if connection.vendor != "postgresql":
        # SQLite's one write lock also stops the writes a request makes before it fetches (the
        # token's last use): there is no holding back media rows alone. CI runs this on PostgreSQL.
        pytest.skip("needs a lock on the media table alone (PostgreSQL)")
    a, _b = pair
    in_worker = a.env["MEDIASITE_REMOTE_FETCH_IN_WORKER"] == "true"
    data = png_bytes(40, 40, color=(9, 8, 7))
    media_id = fed_origin.on("d" + secrets.token_hex(8), "bytes", data, "image/png")
    token = make_token(make_user("dora"))
    url = f"{a.url}/_matrix/client/v1/media/download/origin.test/{media_id}"
    results = {}

    def ask(name):
        results[name] = http("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    with media_inserts_blocked():
        first = threading.Thread(target=ask, args=("first",))
        first.start()
        deadline = time.monotonic() + 20
        while fed_origin.count(media_id) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fed_origin.count(media_id) == 1, a.log()[-3000:]
        first.join(timeout=2 if in_worker else 20)
        assert first.is_alive() == in_worker, (results, a.log()[-3000:])
        second = threading.Thread(target=ask, args=("second",))
        second.start()
        second.join(timeout=2)
        assert second.is_alive(), results  # a waiter is released by the stored row only
        assert not Media.objects.filter(media_id=media_id).exists()
    first.join(timeout=30)
    second.join(timeout=30)
    assert results["first"][0] == 200 and results["first"][2] == data
    assert results["second"][0] == 200 and results["second"][2] == data
    assert stored_media("origin.test", media_id).status == "stored"
    assert fed_origin.count(media_id) == 1
