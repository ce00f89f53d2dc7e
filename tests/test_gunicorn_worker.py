"""When the worker's event loop hands a request to a thread (mediasite/gunicorn_worker.py)."""
import pytest

from mediasite.gunicorn_worker import BODY_PREFETCH_BYTES, request_ready

HEAD = b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize("request_bytes, ready", [
    (b"GET / HTTP/1.1\r\nHost: x", False),  # head not finished
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    (b"GET / HTTP/1.1\nHost: x\n\n", True),  # bare LF line ends
    (HEAD + b"Content-Length: 3\r\n\r\nab", False),  # body not all there
    (HEAD + b"Content-Length: 3\r\n\r\nabc", True),
    (HEAD + b"content-length:3\r\n\r\nabc", True),
    (HEAD + b"Content-Length: 3\r\nExpect: 100-continue\r\n\r\n", True),  # waits for our 100
    (HEAD + b"Content-Length: 999999999999\r\n\r\n", True),  # over the limit: refused at once
    (HEAD + b"Content-Length: 1000000\r\n\r\n" + b"x" * (BODY_PREFETCH_BYTES - 1), False),
    (HEAD + b"Content-Length: 1000000\r\n\r\n" + b"x" * BODY_PREFETCH_BYTES, True),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", False),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", True),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * (64 << 10), True),  # oversized head: the parser refuses it
])
def test_request_ready(request_bytes, ready, settings):
    assert request_ready(request_bytes) is ready
