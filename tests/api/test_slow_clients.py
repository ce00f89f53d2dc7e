"""Slow clients against a real gunicorn (mediasite/gunicorn_worker.py): clients that send their
request head or body slowly hold no thread, so everyone else is still answered.

No timing assertions beyond generous bounds: every probe must be answered within a few
seconds (the stock gthread worker leaves them hanging for good); bench/slow_clients.py prints
the latency percentiles.
"""
import json
import os
import socket
import time

import pytest

from tests.conftest import start_server, stop_server, upload
from tests.slow_clients import SlowClients, probe

# Generous: a probe answered at all while the slow clients are held; the stock worker never answers.
PROBE_BOUND_SECONDS = 5


@pytest.fixture(scope="module")
def slow_server(django_db_setup, django_db_blocker, tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("slow-server"),
        MEDIASITE_REQUEST_HEAD_TIMEOUT_SECONDS="3",
        MEDIASITE_BODY_GRACE_SECONDS="2",
        MEDIASITE_MIN_BODY_RATE_BYTES_PER_SECOND="4096",
        MEDIASITE_IO_TIMEOUT_SECONDS="3",
    )
    yield server
    stop_server(server)


@pytest.fixture
def served(slow_server, transactional_db, alice_token):
    """(server, token, path of a 16 KiB download) with the rows committed for the server."""
    from django.test import Client

    mxc = upload(Client(HTTP_AUTHORIZATION=f"Bearer {alice_token}"), os.urandom(16 << 10))
    return slow_server, alice_token, f"/_matrix/client/v1/media/download/{mxc}"


def test_downloads_are_answered_while_200_slow_heads_and_20_slow_bodies_are_held(served):
    server, token, path = served
    host, port = server.host_port
    with SlowClients(host, port, heads=200, bodies=20, interval=1.0, token=token) as slow:
        time.sleep(2)  # every slow client has started dribbling
        for _ in range(50):
            status, seconds, size = probe(host, port, path, token, timeout=30)
            assert status == 200 and size == 16 << 10
            assert seconds < PROBE_BOUND_SECONDS, f"a download took {seconds:.1f} s"
        assert slow.stats.opened >= 220


def test_a_request_head_that_never_ends_is_answered_408_and_closed(served):
    server, token, _path = served
    host, port = server.host_port
    slow = SlowClients(host, port, heads=1, interval=0.5, reopen=False).start()
    try:
        deadline = time.monotonic() + 20
        while slow.stats.closed_by_server == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        slow.stop()
    assert slow.stats.answers == ["HTTP/1.1 408 Request Timeout"]
    head, body = slow.stats.replies[0].split(b"\r\n\r\n", 1)
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert json.loads(body) == {"errcode": "M_UNKNOWN", "error": "The request did not arrive in time",
                                "code": "REQUEST_TIMEOUT"}


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
            break
    return data


def test_a_body_that_trickles_after_a_fast_start_loses_its_thread(served):
    """Past the prefetched part the body is read in a thread, under a deadline that moves with
    the bytes received: a client that then sends one byte every half second is cut off."""
    server, token, _path = served
    sock = socket.create_connection(server.host_port, timeout=30)
    try:
        sock.sendall(b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + token.encode() + b"\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: 1000000\r\n\r\n" + os.urandom(128 << 10))
        sock.settimeout(0.5)
        answer = b""
        deadline = time.monotonic() + 30
        while not answer and time.monotonic() < deadline:
            try:
                sock.send(b"x")
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(10)
        answer += _read_response(sock) if answer and b"}" not in answer else b""
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"UPLOAD_INCOMPLETE" in answer


def test_small_request_bodies_are_collected_before_the_thread_takes_them(served):
    """A small upload sent in pieces (head, then body a moment later) is read whole."""
    server, token, _path = served
    data = os.urandom(1000)
    sock = socket.create_connection(server.host_port, timeout=30)
    try:
        sock.sendall(b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + token.encode() + b"\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: 1000\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)
        sock.sendall(data[:500])
        time.sleep(0.3)
        sock.sendall(data[500:])
        answer = _read_response(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b"content_uri" in answer


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /_matrix/client/v1/media/config?access_token=secret-token" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     b"414 URI Too Long"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
     b"431 Request Header Fields Too Large"),
    (b"GET /?access_token=secret-token HTTP/9.9\r\nHost: x\r\n\r\n", b"400 Bad Request"),
    (b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n", b"400 Bad Request"),
])
def test_what_the_http_parser_refuses_is_answered_in_the_json_error_model(served, request_bytes, status):
    server, _token, _path = served
    sock = socket.create_connection(server.host_port, timeout=30)
    try:
        sock.sendall(request_bytes)
        answer = _read_response(sock)
    finally:
        sock.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 " + status + b"\r\n"), head
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert json.loads(body) == {"errcode": "M_UNKNOWN", "error": status.split(b" ", 1)[1].decode(),
                                "code": "MALFORMED_REQUEST"}
    assert b"secret-token" not in answer


def test_a_download_the_client_stops_reading_is_cut_after_the_io_timeout(served):
    """A client that asks for a large file and reads nothing holds a thread only until a write
    has waited MEDIASITE_IO_TIMEOUT_SECONDS (3 s here): the answer is then cut short."""
    from django.test import Client

    server, token, _path = served
    size = 32 << 20
    mxc = upload(Client(HTTP_AUTHORIZATION=f"Bearer {token}"), os.urandom(size))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # before connecting: a small window
    sock.settimeout(30)
    try:
        sock.connect(server.host_port)
        sock.sendall(f"GET /_matrix/client/v1/media/download/{mxc} HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {token}\r\n\r\n".encode())
        time.sleep(8)  # reading nothing, well past the timeout
        received = 0
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    finally:
        sock.close()
    assert 0 < received < size, received
