"""A small HTTP origin for the federation tests: it speaks the legacy media download endpoint
(and answers M_UNRECOGNIZED on the federation one, like a server predating it), and can be
told to behave badly per media ID. It counts connections and requests per media ID, and keeps
connections alive between requests (HTTP/1.1) unless a behaviour closes them."""
import collections
import gzip
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Origin:
    def __init__(self, host: str = "127.0.0.1", *, port: int = 0, tls: ssl.SSLContext | None = None):
        self.behaviours: dict[str, tuple] = {}
        self.hits: collections.Counter = collections.Counter()
        self.connections = 0
        self.authorizations: list = []
        self.host_headers: list = []
        self.thumbnail_queries: list = []
        self._lock = threading.Lock()
        origin = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def get_request(self):
                request = super().get_request()
                with origin._lock:
                    origin.connections += 1
                return request

            def handle_error(self, request, client_address):
                # A client hanging up (as several tests make A do) is not the origin's error.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        class Handler(_Handler):
            pass

        Handler.origin = origin
        self.server = Server((host, port), Handler)
        if tls is not None:  # the handshake happens as each connection is accepted
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, media_id: str, behaviour: str, *args) -> str:
        self.behaviours[media_id] = (behaviour, *args)
        return media_id

    def count(self, media_id: str) -> int:
        return self.hits[media_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    origin: Origin
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _federation(self, behaviour, *args):
        """A multipart/mixed federation answer: the bytes inline, or a Location to follow."""
        boundary = "6d656469617369746574657374"
        # args: the bytes, the part's declared length if any, then what follows the closing
        # delimiter (bytes), or how many of its last bytes to leave out (a number)
        after = args[2] if behaviour == "federation_bytes" and len(args) > 2 else b""
        if behaviour == "federation_bytes":
            length = args[1] if len(args) > 1 else None
            second = (b"Content-Type: image/png\r\n"
                      + (f"Content-Length: {length}\r\n".encode() if length is not None else b"") + b"\r\n" + args[0])
        else:  # federation_location
            second = f"Location: {args[0]}\r\n\r\n".encode()
        body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n".encode()
                + second + f"\r\n--{boundary}--\r\n".encode())
        body = body + after if isinstance(after, bytes) else body[:-after]
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/mixed; boundary={boundary}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: C901 - one branch per behaviour
        self.requests_on_connection = getattr(self, "requests_on_connection", 0) + 1
        with self.origin._lock:
            self.origin.host_headers.append(self.headers.get("Host"))
        path = self.path.split("?", 1)[0]
        if path.startswith("/_matrix/federation/"):
            media_id = path.rsplit("/", 1)[-1]
            behaviour, *args = self.origin.behaviours.get(media_id, ("missing",))
            if not behaviour.startswith("federation_") or "/download/" not in path:
                self._json(404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
                return
            with self.origin._lock:
                self.origin.hits[media_id] += 1
                self.origin.authorizations.append(self.headers.get("Authorization"))
            if behaviour == "federation_hangup":  # the connection closed without an answer
                self.close_connection = True
                return
            self._federation(behaviour, *args)
            return
        media_id = path.rstrip("/").rsplit("/", 1)[-1]
        if path.startswith("/redirect/"):
            media_id = path.split("/")[2]
        with self.origin._lock:
            self.origin.hits[media_id] += 1
        behaviour, *args = self.origin.behaviours.get(media_id, ("missing",))
        if behaviour == "missing":
            self._json(404, {"errcode": "M_NOT_FOUND", "error": "Not found"})
        elif behaviour == "bytes":  # args: body, content type, delay seconds
            body = args[0]
            content_type = args[1] if len(args) > 1 else None
            delay = args[2] if len(args) > 2 else 0
            time.sleep(delay or 0)
            self.send_response(200)
            self.send_header("Content-Type", content_type or "application/octet-stream")
            self.send_header("Content-Disposition", "inline; filename*=utf-8''pic%07ture.png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif behaviour == "oversized":  # args: declared size of the original, thumbnail bytes, its delay
            if "/thumbnail/" in path:
                with self.origin._lock:
                    self.origin.thumbnail_queries.append(self.path.split("?", 1)[-1])
                time.sleep(args[2] if len(args) > 2 else 0)
                body, content_type = args[1], "image/png"
            else:
                body, content_type = None, "application/octet-stream"
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if body is not None else args[0]))
            self.send_header("Connection", "close")
            self.end_headers()
            if body is not None:
                self.wfile.write(body)
            self.close_connection = True
        elif behaviour == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
            self.close_connection = True
        elif behaviour == "lying_length":  # args: declared length, bytes actually sent
            declared, sent = args
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(declared))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * sent)
            self.close_connection = True
        elif behaviour == "trickle":  # args: body, seconds: answers at once, sends it in 10 pieces over that time
            body, seconds = args
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            step = -(-len(body) // 10)
            for start in range(0, len(body), step):
                self.wfile.write(body[start:start + step])
                self.wfile.flush()
                time.sleep(seconds / 10)
        elif behaviour == "drip":  # one byte every args[0] seconds, for ever
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(10_000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(args[0])
            except OSError:
                pass
            self.close_connection = True
        elif behaviour == "redirect":  # args: Location
            self.send_response(302)
            self.send_header("Location", args[0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif behaviour == "gzip_bomb":
            body = gzip.compress(b"\0" * (64 << 20))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif behaviour == "gated":  # args: body, declared length, bytes sent at once, gate, sent (events)
            body, declared, first, gate, sent = args
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(declared))
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                self.wfile.write(body[:first])
                self.wfile.flush()
                gate.wait(10)
                self.wfile.write(body[first:])
                self.wfile.flush()
            except OSError:
                pass
            sent.set()
            self.close_connection = True
        elif behaviour == "late_body":  # args: body, seconds between the head and the body
            self.send_response(200)
            self.send_header("Content-Length", str(len(args[0])))
            self.end_headers()
            self.wfile.flush()
            time.sleep(args[1])
            try:
                self.wfile.write(args[0])
            except OSError:
                pass
        elif behaviour == "hangup_when_reused":  # args: body; closed unanswered unless on a new connection
            if self.requests_on_connection > 1:
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(args[0])))
            self.end_headers()
            self.wfile.write(args[0])
        elif behaviour == "json":  # args: status, body (e.g. /.well-known/matrix/server, "on" as "server")
            self._json(args[0], args[1])
        elif behaviour == "error":
            self._json(args[0] if args else 500, {"errcode": "M_UNKNOWN", "error": "broken"})
        else:
            raise AssertionError(behaviour)
