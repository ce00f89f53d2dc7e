"""The outbound HTTP client for everything this server asks of others (media, keys,
.well-known): urllib3 with connections that check the address they actually reach.

Why not a plain urllib3/requests call: a hostname is resolved inside the connect, so a check
made beforehand on a resolved address leaves a DNS-rebinding window. Here the connection
resolves, drops forbidden addresses, connects, and checks the peer of the connected socket; each
redirect hop is a new connection through the same code. Redirects are followed by hand (at most
MAX_REDIRECTS, http and https only), bodies are never inflated (`Accept-Encoding: identity`,
a response that is encoded anyway is refused), and every read is bounded by the read timeout
and the caller's total deadline.

Connections are kept alive and reused per target (host, port, scheme and TLS name), as
federating servers do: a fetch from an origin already talked to skips the TCP and TLS
handshakes. A reused connection's peer is checked again before every request, so the guard
holds per request and not only per connect; a response not read to its end closes its
connection instead of returning it, so no stale bytes can be taken for the next answer.
"""
import functools
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NameResolutionError, NewConnectionError, ProtocolError
from urllib3.util.ssl_ import create_urllib3_context

from ..conf import media_settings
from . import addresses

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Targets with idle connections kept per process (the least recently used are dropped), and idle
# connections kept per target: as many as a process has threads fetching at once, so a busy
# origin does not see a connection made and dropped per request.
KEPT_TARGETS = 64
KEPT_CONNECTIONS_PER_TARGET = 8
# What one read of a response body asks for: READ_BYTES at first, then twice what the last read
# brought, up to MAX_READ_BYTES. read1 allocates what it is asked for before it learns how little
# has arrived: 1 MiB asked for each TLS record of a few KiB cost more than the record, while a
# plain connection that has much waiting is read in large pieces.
READ_BYTES = 64 << 10
MAX_READ_BYTES = 1 << 20


class OutboundError(Exception):
    """The remote could not be reached or answered unusably (a 502 for our clients)."""


class OutboundTimeout(OutboundError):
    """The remote did not answer in time (a 504 for our clients)."""


class OutboundBlocked(OutboundError):
    """The connection would reach an address the SSRF guard refuses."""


class Deadline:
    """The time an outbound exchange may take in total; with `first_answer_seconds`, a shorter
    time for its first answer (the status line of a 200), after which the total applies."""

    def __init__(self, seconds: float, *, first_answer_seconds: float | None = None):
        now = time.monotonic()
        self._total_at = now + seconds
        self.at = self._total_at if first_answer_seconds is None else min(self._total_at, now + first_answer_seconds)
        self.answered_yet = first_answer_seconds is None

    def answered(self) -> None:
        self.at, self.answered_yet = self._total_at, True

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise OutboundTimeout("Total deadline passed")


_this_request = threading.local()


class _Guarded:
    """Mixed into urllib3's connections: resolve, filter, connect, verify the peer; and verify
    it again before each request on a kept-alive connection."""

    def request(self, *args, **kwargs):
        if self.sock is not None:
            try:
                peer = self.sock.getpeername()[0]
            except OSError:
                self.close()  # reset while idle: the request connects anew, through _new_conn
            else:
                addresses.check(peer)
        return super().request(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        _this_request.connected = True
        try:
            infos = socket.getaddrinfo(self._dns_host, self.port, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        refused, error = None, None
        for family, type_, proto, _name, sockaddr in infos:
            if not addresses.is_allowed(sockaddr[0]):
                refused = sockaddr[0]
                continue
            sock = socket.socket(family, type_, proto)
            try:
                sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
                sock.connect(sockaddr)
                addresses.check(sock.getpeername()[0])
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except addresses.AddressBlocked:
                sock.close()
                raise
            except TimeoutError as exc:
                sock.close()
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
            except OSError as exc:
                sock.close()
                error = exc
        if error is None and refused is not None:
            raise addresses.AddressBlocked(refused)
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")


class _GuardedHTTPConnection(_Guarded, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_Guarded, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


@dataclass(frozen=True)
class Target:
    """Where to connect, and what to call the server once connected.

    Matrix discovery may send a request for `example.org` to an SRV target: the connection
    goes to `host:port`, while `Host` and the certificate name stay the server's name."""

    scheme: str
    host: str
    port: int
    host_header: str
    tls_name: str | None = None

    @classmethod
    def from_url(cls, url: str) -> "Target":
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutboundError("Only http and https URLs are followed")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise OutboundError("Invalid port in URL") from None
        return cls(parts.scheme, parts.hostname, port, parts.netloc.rsplit("@", 1)[-1], parts.hostname)

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{path}"


def parse_length(value: str | None) -> int | None:
    """A Content-Length header's value, or None if it is missing or not plain ASCII digits
    (headers are decoded as latin-1, where `isdigit()` alone accepts "²")."""
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


class Response:
    """A streamed response: `read(n)` never waits past the read timeout or the deadline."""

    def __init__(self, raw: urllib3.HTTPResponse, deadline: Deadline, url: str):
        self.raw, self.deadline, self.url = raw, deadline, url
        self._ask = READ_BYTES
        self.status = raw.status
        self.headers = raw.headers

    def header(self, name: str) -> str | None:
        return self.raw.headers.get(name)

    @property
    def content_length(self) -> int | None:
        return parse_length(self.header("Content-Length"))

    def read(self, amount: int) -> bytes:
        self.deadline.check()
        try:
            data = self.raw.read1(min(amount, self._ask))
            self._ask = min(MAX_READ_BYTES, max(READ_BYTES, 2 * len(data)))
            return data
        except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
            raise OutboundTimeout("Read timed out") from exc
        except (OSError, HTTPError) as exc:
            raise OutboundError(f"Read failed: {exc.__class__.__name__}") from exc

    def read_all(self, limit: int) -> bytes:
        """The whole (small) body, refused past `limit` bytes."""
        chunks, size = [], 0
        while chunk := self.read(65536):
            size += len(chunk)
            if size > limit:
                raise OutboundError("Response body too large")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        # Read to its end, the response has already given its connection back for reuse (and
        # close() has nothing left to close); otherwise the connection is closed first, so the
        # pool gets it back closed and connects anew next time.
        self.raw.close()
        self.raw.release_conn()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _PoolManager(urllib3.PoolManager):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Set after urllib3's __init__, which sets its own: every pool must use the guarded connections.
        self.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


_pools: _PoolManager | None = None
_pools_lock = threading.Lock()


def _forget_pools_after_fork() -> None:
    # A forked child (gunicorn or Celery worker) must not share its parent's sockets, nor inherit
    # the lock as another thread of the parent may have held it.
    global _pools, _pools_lock
    _pools, _pools_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def _pool_for(target: Target):
    global _pools
    with _pools_lock:
        if _pools is None:
            _pools = _PoolManager(num_pools=KEPT_TARGETS, maxsize=KEPT_CONNECTIONS_PER_TARGET, block=False,
                                  retries=False)
        manager = _pools
    tls = {}
    if target.scheme == "https":
        tls = {"server_hostname": target.tls_name, "assert_hostname": target.tls_name, "cert_reqs": "CERT_REQUIRED",
               "ssl_context": current_tls_context()}
    return manager.connection_from_host(target.host, target.port, target.scheme, pool_kwargs=tls)


def current_tls_context() -> ssl.SSLContext:
    """The context for FEDERATION_TLS_CA_FILE as the file is now: a file replaced or rewritten
    (a CA renewed) is read again at the next connection, without a restart. One stat() per
    request; the pools are keyed on the context, so connections made under the old file are
    not reused for new requests."""
    path = media_settings.FEDERATION_TLS_CA_FILE
    version = None
    if path:
        try:
            st = os.stat(path)
            version = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            pass  # tls_context reports the file it cannot load
    return tls_context(path, version)


@functools.lru_cache(maxsize=4)
def tls_context(extra_ca_file: str, version: tuple | None = None) -> ssl.SSLContext:
    """The system's CAs, plus those of FEDERATION_TLS_CA_FILE: a private CA is added to the trust
    store, never put in its place (urllib3's `ca_certs` would replace it, cutting off every
    public server). One context per file and `version` (current_tls_context), so the pools keyed
    on it are shared. A file that cannot be loaded is an OutboundError (never cached), which
    every caller answers as an unreachable server (and `manage.py check` reports)."""
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.load_default_certs()
    if extra_ca_file:
        try:
            context.load_verify_locations(cafile=extra_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise OutboundError(f"Cannot load MEDIASITE_FEDERATION_TLS_CA_FILE {extra_ca_file!r}: {exc}") from None
    return context


def _timeout(deadline: Deadline) -> urllib3.Timeout:
    read = max(0.1, min(media_settings.OUTBOUND_READ_TIMEOUT_SECONDS, deadline.remaining()))
    return urllib3.Timeout(connect=media_settings.OUTBOUND_CONNECT_TIMEOUT_SECONDS, read=read)


def _urlopen(pool, method: str, path: str, headers: dict, deadline: Deadline):
    for attempt in (1, 2):
        _this_request.connected = False
        try:
            return pool.urlopen(method, path, headers=headers, timeout=_timeout(deadline), redirect=False,
                                retries=False, preload_content=False, decode_content=False, assert_same_host=False)
        except ProtocolError as exc:
            # A kept-alive connection the server closed or reset before its status line (its
            # idle timeout, as the request went out): a GET once more, within the same deadline,
            # on another connection. A new connection failing is the origin's answer.
            reset = len(exc.args) > 1 and isinstance(exc.args[1], ConnectionResetError)
            if attempt == 1 and reset and not _this_request.connected and method in ("GET", "HEAD"):
                deadline.check()
                continue
            raise


def request(method: str, target: Target, path: str, *, headers: dict | None = None,
            deadline: Deadline, follow_redirects: bool = False) -> Response:
    """Send one request (and follow redirects if asked); the caller closes the response."""
    hops = 0
    while True:
        deadline.check()
        pool = _pool_for(target)
        sent = {"Host": target.host_header, "Accept-Encoding": "identity", "User-Agent": "Mediasite",
                **(headers or {})}
        try:
            raw = _urlopen(pool, method, path, sent, deadline)
        except addresses.AddressBlocked as exc:
            raise OutboundBlocked(f"Refused to connect to a non-public address ({exc})") from None
        except NewConnectionError as exc:  # a ConnectTimeoutError subclass in urllib3, but not a timeout
            raise OutboundError(f"Could not connect to {target.host_header}") from exc
        except (ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise OutboundTimeout(f"Timed out talking to {target.host_header}") from exc
        except (OSError, HTTPError) as exc:
            raise OutboundError(f"Could not reach {target.host_header}: {exc.__class__.__name__}") from exc
        response = Response(raw, deadline, target.url(path))
        encoding = (response.header("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            response.close()
            raise OutboundError("The remote sent an encoded body although identity was asked for")
        location = response.header("Location")
        if not (follow_redirects and response.status in REDIRECT_STATUSES and location):
            return response
        response.close()
        hops += 1
        if hops > MAX_REDIRECTS:
            raise OutboundError("Too many redirects")
        next_url = urljoin(response.url, location)
        relative = urlsplit(location)
        if relative.scheme or relative.netloc:
            if not relative.netloc:  # file:///etc/passwd, https:/x: no server to go to
                raise OutboundError("Only http and https URLs with a host are followed")
            target = Target.from_url(next_url)
        # else the same server: the same connection target, and still its name for Host and the
        # certificate (not the SRV target's, which response.url is written with)
        parts = urlsplit(next_url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # Credentials meant for the first server never travel to wherever it points.
        headers = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}


def get_url(url: str, *, deadline: Deadline, headers: dict | None = None, follow_redirects: bool = True) -> Response:
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return request("GET", Target.from_url(url), path, headers=headers, deadline=deadline,
                   follow_redirects=follow_redirects)
