"""Against a real gunicorn (production settings, two worker processes): chunked bodies, big
files, concurrency across processes, and what reaches the log."""
import hashlib
import http.client
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings

from media_app.models import Blob, Media, MediaEvent

pytestmark = pytest.mark.server


def _request(live, method, path, token, body=None, headers=None, chunked=False):
    conn = http.client.HTTPConnection(*live.host_port, timeout=120)
    h = {"Authorization": f"Bearer {token}"} if token else {}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h, encode_chunked=chunked)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def _chunks(total: int, size: int = 64 * 1024, byte: bytes = b"c"):
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield byte * n


def _tmp_files():
    tmp = Path(settings.MEDIASITE["DATA_DIR"]) / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def test_chunked_upload_round_trip(live, alice_token):
    response, data = _request(live, "POST", "/_matrix/media/v3/upload", alice_token,
                              body=_chunks(300_000), chunked=True)
    assert response.status == 200, data
    mxc = json.loads(data)["content_uri"].removeprefix("mxc://")
    response, body = _request(live, "GET", f"/_matrix/client/v1/media/download/{mxc}", alice_token)
    assert response.status == 200 and body == b"c" * 300_000


def test_chunked_upload_over_the_limit_is_cut_off(live, alice_token):
    """The 413 must arrive while the client is still sending: the body is written by another
    thread (which stops when the server closes), and the answer is read as it comes, so the
    assertion holds whether or not the client's sending ends in a broken pipe."""
    limit = settings.MEDIASITE["MAX_UPLOAD_SIZE_BYTES"]
    sock = socket.create_connection(live.host_port, timeout=120)
    sock.sendall(
        b"POST /_matrix/media/v3/upload HTTP/1.1\r\n"
        + f"Host: {live.host_port[0]}\r\nAuthorization: Bearer {alice_token}\r\n".encode()
        + b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sent = [0]

    def send_body():
        chunk = b"%x\r\n" % (1 << 20) + b"c" * (1 << 20) + b"\r\n"
        try:
            while sent[0] < limit + (64 << 20):  # far past the limit: the server must stop us
                sock.sendall(chunk)
                sent[0] += 1 << 20
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed after answering: what the test expects

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    response = http.client.HTTPResponse(sock)
    response.begin()
    data = response.read()
    sender.join(timeout=120)
    sock.close()
    assert response.status == 413, data
    assert json.loads(data)["code"] == "MEDIA_TOO_LARGE"
    assert sent[0] < limit + (64 << 20)  # refused while the body was still coming
    assert not Blob.objects.exists() and not Media.objects.exists()
    assert _tmp_files() == []


def test_declared_length_over_the_limit_is_refused_before_reading(live, alice_token):
    limit = settings.MEDIASITE["MAX_UPLOAD_SIZE_BYTES"]
    conn = http.client.HTTPConnection(*live.host_port, timeout=30)
    conn.putrequest("POST", "/_matrix/media/v3/upload")
    conn.putheader("Authorization", f"Bearer {alice_token}")
    conn.putheader("Content-Length", str(limit + 1))
    conn.endheaders()  # not a byte of the body is sent: the answer must come anyway
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["code"] == "MEDIA_TOO_LARGE"
    conn.close()


@pytest.mark.slow
def test_200_mib_round_trip(live, alice_token):
    data = os.urandom(200 << 20)
    response, body = _request(live, "POST", "/_matrix/media/v3/upload?filename=big.bin", alice_token, body=data)
    assert response.status == 200, body
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    response, body = _request(live, "GET", f"/_matrix/client/v1/media/download/{mxc}", alice_token)
    assert response.status == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert response.getheader("Content-Length") == str(200 << 20)
    response, body = _request(live, "GET", f"/_matrix/client/v1/media/download/{mxc}", alice_token,
                              headers={"Range": f"bytes={100 << 20}-{(100 << 20) + 9}"})
    assert response.status == 206 and body == data[100 << 20 : (100 << 20) + 10]
    assert _tmp_files() == []


def test_twenty_identical_concurrent_uploads_make_one_blob(live, alice_token):
    data = os.urandom(2 << 20)
    barrier = threading.Barrier(20)

    def one(_):
        barrier.wait()
        return _request(live, "POST", "/_matrix/media/v3/upload", alice_token, body=data)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert [r.status for r, _ in results] == [200] * 20, [b[:200] for _, b in results]
    uris = {json.loads(b)["content_uri"] for _, b in results}
    assert len(uris) == 20
    assert Blob.objects.count() == 1
    assert Media.objects.count() == 20
    assert set(Media.objects.values_list("blob_id", flat=True)) == {Blob.objects.get().pk}
    assert MediaEvent.objects.filter(event_type="media.uploaded").count() == 20
    assert MediaEvent.objects.filter(event_type="media.deduplicated").count() == 19
    assert _tmp_files() == []
    stored = list((Path(settings.MEDIASITE["DATA_DIR"]) / "media").rglob(Blob.objects.get().sha256 + "*"))
    assert len(stored) == 1


def test_access_token_and_filename_never_reach_the_log(live, alice_token):
    secret_name = "top-secret-plans.pdf"
    response, body = _request(live, "POST", f"/_matrix/media/v3/upload?filename={secret_name}&access_token={alice_token}",
                              None, body=b"secret")
    assert response.status == 200, body
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    response, _ = _request(live, "GET", f"/_matrix/client/v1/media/download/{mxc}?access_token={alice_token}", None)
    assert response.status == 200
    _request(live, "GET", "/_matrix/client/v1/media/config?access_token=mst_wrongtoken", None)
    time.sleep(0.5)
    log = live.log()
    assert "/_matrix/client/v1/media/download/" in log  # the requests were logged...
    assert alice_token not in log and "mst_wrongtoken" not in log  # ...without their secrets
    assert secret_name not in log


def test_access_times_are_flushed_by_the_server(live, alice_token):
    response, body = _request(live, "POST", "/_matrix/media/v3/upload", alice_token, body=b"touch")
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    for _ in range(3):
        _request(live, "GET", f"/_matrix/client/v1/media/download/{mxc}", alice_token)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if MediaEvent.objects.filter(event_type="media.retrieved").count() == 3:
            break
        time.sleep(0.1)
    assert MediaEvent.objects.filter(event_type="media.retrieved").count() == 3
    assert Media.objects.get(media_id=mxc.split("/")[1]).last_access_ts is not None


def test_head_and_range_over_the_wire(live, alice_token):
    data = bytes(range(256)) * 100
    response, body = _request(live, "POST", "/_matrix/media/v3/upload", alice_token, body=data)
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    path = f"/_matrix/client/v1/media/download/{mxc}"
    response, body = _request(live, "HEAD", path, alice_token)
    assert response.status == 200 and body == b"" and response.getheader("Content-Length") == str(len(data))
    response, body = _request(live, "GET", path, alice_token, headers={"Range": "bytes=1000-1999"})
    assert response.status == 206 and body == data[1000:2000]
    assert response.getheader("Content-Range") == f"bytes 1000-1999/{len(data)}"
    # A 304 says the 200's length (RFC 9110 forbids any other), and sends no body: the same
    # kept-alive connection answers the next request.
    conn = http.client.HTTPConnection(*live.host_port, timeout=60)
    auth = {"Authorization": f"Bearer {alice_token}"}
    conn.request("GET", path, headers={**auth, "If-None-Match": response.getheader("ETag")})
    not_modified = conn.getresponse()
    assert not_modified.status == 304 and not_modified.read() == b""
    assert not_modified.getheader("Content-Length") == str(len(data))
    conn.request("GET", path, headers=auth)
    again = conn.getresponse()
    assert again.status == 200 and again.read() == data
    conn.close()


@pytest.fixture(scope="module")
def sync_server(live_server_proc, tmp_path_factory):
    """Two single-request (sync) workers: a busy worker accepts nothing, so concurrent requests
    are certain to be spread over both processes."""
    from tests.conftest import start_server, stop_server

    import socket

    server = start_server(tmp_path_factory.mktemp("sync-server"), "--worker-class", "sync")
    # The server answers once one worker is up. Hold that worker with a request head that never
    # ends, so the next request is answered only when the other worker is up too.
    held = socket.create_connection(server.host_port, timeout=60)
    try:
        held.sendall(b"GET /_matrix/key/v2/server HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.2)  # accepted by the worker that is up
        response, _ = _request(server, "GET", "/_matrix/key/v2/server", None)
        assert response.status == 200
    finally:
        held.close()
    yield server
    stop_server(server)


def test_fifty_concurrent_identical_thumbnail_requests_render_once(sync_server, transactional_db, alice_token):
    import io
    import re

    from PIL import Image

    from media_app.models import Thumbnail

    buf = io.BytesIO()
    Image.linear_gradient("L").resize((3000, 2000)).convert("RGB").save(buf, "JPEG", quality=90)
    response, body = _request(sync_server, "POST", "/_matrix/media/v3/upload", alice_token, body=buf.getvalue())
    assert response.status == 200, body
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    path = f"/_matrix/client/v1/media/thumbnail/{mxc}?width=320&height=240&method=scale"
    barrier = threading.Barrier(50)

    def one(_):
        barrier.wait()
        return _request(sync_server, "GET", path, alice_token)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    assert [r.status for r, _ in results] == [200] * 50
    assert len({b for _, b in results}) == 1
    assert Thumbnail.objects.count() == 1
    assert MediaEvent.objects.filter(event_type="media.thumbnail_generated").count() == 1
    pids = set(re.findall(r'"GET /_matrix/client/v1/media/thumbnail/[^ ]+ [^"]+" 200 .* pid=<?(\d+)', sync_server.log()))
    assert len(pids) >= 2, pids


def test_a_revoked_token_stops_working_on_every_node_at_once(live, alice_token, tmp_path):
    """Two nodes (two gunicorns, two worker processes each) on one database: a token revoked
    through one is refused by the other on its very next request, whichever process takes it."""
    from tests.conftest import start_server, stop_server

    other = start_server(tmp_path)
    try:
        for _ in range(4):  # each process of the other node has seen the token work
            response, _ = _request(other, "GET", "/api/v1/tokens", alice_token)
            assert response.status == 200
        response, data = _request(live, "GET", "/api/v1/tokens", alice_token)
        in_use = json.loads(data)[0]["id"]
        response, _ = _request(live, "DELETE", f"/api/v1/tokens/{in_use}", alice_token)
        assert response.status == 204
        for _ in range(4):
            response, data = _request(other, "GET", "/api/v1/tokens", alice_token)
            assert response.status == 401 and json.loads(data)["errcode"] == "M_UNKNOWN_TOKEN"
    finally:
        stop_server(other)


def _gunicorn_workers(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def _io_counter(pids: list[int], name: str) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith(f"{name}:"):
                total += int(line.split()[1])
    return total


def test_local_files_are_sent_with_sendfile_not_read_through_the_process(live, alice_token):
    """Zero-copy: the kernel counts bytes moved by sendfile(2) as written by the process
    (`wchar` in /proc/<pid>/io), while bytes sent with send(2) on a socket, as a body read
    through Python would be, are not. So a download by sendfile adds its whole size there."""
    size = 16 << 20
    response, data = _request(live, "POST", "/_matrix/media/v3/upload", alice_token, body=b"s" * size)
    assert response.status == 200, data
    mxc = json.loads(data)["content_uri"].removeprefix("mxc://")
    path = f"/_matrix/client/v1/media/download/{mxc}"
    workers = _gunicorn_workers(live.process.pid)
    before = _io_counter(workers, "wchar")
    response, body = _request(live, "GET", path, alice_token)
    assert response.status == 200 and len(body) == size
    assert _io_counter(workers, "wchar") - before >= size


def test_x_forwarded_proto_is_believed_from_a_trusted_proxy_only(live, alice_token):
    """README (MEDIASITE_FORWARDED_ALLOW_IPS): gunicorn trusts the X-Forwarded-Proto of the
    listed proxies (127.0.0.1 by default), which the native API's absolute URLs then carry."""
    def upload_from(source: str) -> str:
        conn = http.client.HTTPConnection(*live.host_port, timeout=60, source_address=(source, 0))
        conn.request("POST", "/api/v1/media", body=b"proto", headers={
            "Authorization": f"Bearer {alice_token}", "Content-Type": "application/octet-stream",
            "X-Forwarded-Proto": "https"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        assert response.status == 201, data
        return json.loads(data)["download_url"]

    assert upload_from("127.0.0.1").startswith("https://")
    assert upload_from("127.0.0.2").startswith("http://")  # not a trusted proxy: its header is ignored
