"""A gunicorn gthread worker that reads each request's head in its event loop, not in a thread.

gunicorn's gthread worker hands a connection to a thread as soon as it is readable, and the
thread then blocks reading the request line and headers with no time limit: a few dozen
clients sending one header byte every few seconds hold every thread, and every other request
waits. Here the main thread (a selector loop, as in the stock worker) collects the head — and
the first BODY_PREFETCH_BYTES of the body, all of a small one — without blocking, and only
then gives the connection to a thread, with the bytes already read put back into its parser.
A client that never finishes within REQUEST_HEAD_TIMEOUT_SECONDS is answered 408 and closed;
it never held a thread.

Once in a thread, the request body is read under a deadline that grows with what arrived
(MIN_BODY_RATE_BYTES_PER_SECOND after a grace period) and every socket read or write waits at
most IO_TIMEOUT_SECONDS, so a client that sends its first bytes quickly and then trickles, or
stops reading a download, frees its thread too.

Everything else (keep-alive, sendfile, the C parser, hooks, access log) is the stock worker's.
"""
import errno
import json
import os
import re
import selectors
import socket
import time
from collections import deque
from functools import partial

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# Time for a request's head (and its first body bytes) to arrive, from the connection's accept
# (or, on a kept-alive connection, from the next request's first byte).
REQUEST_HEAD_TIMEOUT_SECONDS = _env_float("MEDIASITE_REQUEST_HEAD_TIMEOUT_SECONDS", 20)
# Body bytes collected before a thread is used: a body this small never waits in a thread.
BODY_PREFETCH_BYTES = int(_env_float("MEDIASITE_BODY_PREFETCH_BYTES", 64 << 10))
# A head larger than this is handed to the parser, which refuses it with its own limits.
HEAD_LIMIT_BYTES = 64 << 10
# In a thread: the body must average at least this rate after the grace period...
MIN_BODY_RATE_BYTES_PER_SECOND = _env_float("MEDIASITE_MIN_BODY_RATE_BYTES_PER_SECOND", 1024)
BODY_GRACE_SECONDS = _env_float("MEDIASITE_BODY_GRACE_SECONDS", 30)
# ...and no single read or write may wait longer than this.
IO_TIMEOUT_SECONDS = _env_float("MEDIASITE_IO_TIMEOUT_SECONDS", 60)

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\ntransfer-encoding[ \t]*:[^\n]*chunked", re.IGNORECASE)
_EXPECT_CONTINUE = re.compile(rb"\nexpect[ \t]*:[ \t]*100-continue", re.IGNORECASE)
_WAIT, _READY, _GONE = object(), object(), object()


def _max_body_bytes() -> int:
    # Read when the first request arrives: Django is set up by then (the app is loaded).
    global _max_body
    if _max_body is None:
        from media_app.conf import media_settings

        _max_body = media_settings.MAX_UPLOAD_SIZE_BYTES
    return _max_body


_max_body = None


def _timeout_response() -> bytes:
    # Built when first needed, from the one error model (Django is set up by then).
    global _timeout_bytes
    if _timeout_bytes is None:
        from media_app.errors import RequestTimeout

        body = json.dumps(RequestTimeout().as_dict()).encode()
        _timeout_bytes = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return _timeout_bytes


_timeout_bytes = None


def _write_json_error(sock, status_int, reason, mesg):
    """gunicorn's answer to a request its parser refuses, in the one error model instead of its
    HTML page. `mesg` (which may quote the request line, a token in its query included) goes
    to gunicorn's log as before, not to the client."""
    from media_app.errors import InternalError, MalformedRequest

    # 500: the application failed before it could answer (gunicorn logged it), not the client.
    error = InternalError() if status_int == 500 else MalformedRequest(reason)
    body = json.dumps(error.as_dict()).encode()
    util.write_nonblock(sock, b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (status_int, reason.encode("latin-1"), len(body), body))


# gunicorn writes those answers through this module function (workers.base.Worker.handle_error,
# which holds the status table for its parser's errors); this worker's processes use ours.
util.write_error = _write_json_error


def request_ready(buf: bytes) -> bool:
    """Whether enough of a request has arrived to hand it to a thread: the whole head, plus the
    whole body or its first BODY_PREFETCH_BYTES. A client that asked for `100 Continue` waits
    for it before sending its body, so its head is enough; so is a declared length over the
    upload limit, which is refused (413) before a byte of the body is read."""
    end = _HEAD_END.search(buf)
    if end is None:
        return len(buf) >= HEAD_LIMIT_BYTES
    head = buf[: end.start()]
    if _EXPECT_CONTINUE.search(head):
        return True
    have = len(buf) - end.end()
    if _CHUNKED.search(head):
        # The last chunk ("0" CRLF, trailers may follow) or enough. Handing over early only
        # costs a thread; waiting for bytes that never come would cost the request.
        body = buf[end.end():]
        return have >= BODY_PREFETCH_BYTES or body.startswith(b"0\r\n") or b"\r\n0\r\n" in body
    length = _CONTENT_LENGTH.search(head)
    if length is None:
        return True
    declared = int(length.group(1))
    return have >= min(declared, BODY_PREFETCH_BYTES) or declared > _max_body_bytes()


class _PacedSocket:
    """The socket as the request parser sees it: each recv() waits at most until the body's
    deadline, which moves on by one second per MIN_BODY_RATE_BYTES_PER_SECOND received."""

    def __init__(self, sock):
        self._sock = sock
        self._deadline = time.monotonic() + BODY_GRACE_SECONDS

    def recv(self, size):
        wait = min(IO_TIMEOUT_SECONDS, self._deadline - time.monotonic())
        if wait <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "request body arrives too slowly")
        self._sock.settimeout(wait)
        data = self._sock.recv(size)
        self._deadline += len(data) / MIN_BODY_RATE_BYTES_PER_SECOND
        return data

    def __getattr__(self, name):
        return getattr(self._sock, name)


class BufferingThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Connections whose request is still arriving, oldest (earliest deadline) first.
        self.reading_conns = deque()

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._read_request(TConn(self.cfg, client_sock, client_addr, listener.getsockname()))

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection has a next request coming: read it here too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn)

    def _read_request(self, conn):
        conn.sock.setblocking(False)
        conn.prefetched = bytearray()
        conn.timeout = time.monotonic() + REQUEST_HEAD_TIMEOUT_SECONDS
        # Usually the whole request is there already: no need to wait for it in the selector.
        state = self._read_some(conn)
        if state is _WAIT:
            self.reading_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))
        else:
            self._hand_over(conn, state)

    def _on_request_bytes(self, conn, _client):
        state = self._read_some(conn)
        if state is not _WAIT:
            self.poller.unregister(conn.sock)
            self.reading_conns.remove(conn)
            self._hand_over(conn, state)

    @staticmethod
    def _read_some(conn):
        try:
            data = conn.sock.recv(BODY_PREFETCH_BYTES + HEAD_LIMIT_BYTES)
        except (BlockingIOError, InterruptedError):
            return _WAIT
        except OSError:
            data = b""
        if not data:
            return _GONE
        conn.prefetched += data
        return _READY if request_ready(conn.prefetched) else _WAIT

    def _hand_over(self, conn, state):
        if state is _GONE:  # the client went away
            self.nr_conns -= 1
            conn.close()
            return
        conn.data_ready = True  # the stock handle() must not wait for data again
        self.enqueue_req(conn)

    def murder_pending(self):
        super().murder_pending()
        # A stopping worker does not wait for requests still arriving: their clients retry.
        now = time.monotonic() if self.alive else float("inf")
        while self.reading_conns and self.reading_conns[0].timeout <= now:
            conn = self.reading_conns.popleft()
            self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            if conn.prefetched:  # a request had begun: say why it is closed
                try:
                    conn.sock.send(_timeout_response())
                except OSError:
                    pass
            conn.close()

    def handle(self, conn):
        prefetched, conn.prefetched = getattr(conn, "prefetched", None), None
        if prefetched:
            try:
                conn.sock.setblocking(True)
                conn.init()
            except OSError:
                return False
            conn.parser.unreader.unread(bytes(prefetched))
            if not isinstance(conn.parser.unreader.sock, _PacedSocket):
                conn.parser.unreader.sock = _PacedSocket(conn.sock)
        return super().handle(conn)

    def handle_request(self, req, conn):
        unreader = conn.parser.unreader
        if isinstance(unreader.sock, _PacedSocket):
            unreader.sock = _PacedSocket(conn.sock)  # this request's own body deadline
        conn.sock.settimeout(IO_TIMEOUT_SECONDS)  # writes too: a client that stops reading
        try:
            return super().handle_request(req, conn)
        except socket.timeout:
            return False
