"""`multipart/mixed` as the federation media endpoints use it: a JSON part, then the bytes
(or a `Location` header to fetch them from). Written here because the form-data parsers in the
ecosystem (Django's, python-multipart) only speak `multipart/form-data`.

Both directions stream: the bytes part is read through a file-like object that stops at the
closing delimiter, so a large file never sits in memory.
"""
import json
import secrets
from email.message import Message

MAX_JSON_PART_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
# Reads take what has arrived, up to this much (the sources read like read1; the outbound
# client's responses give at most what their last read suggests, see client.Response.read).
FILL_BYTES = 1 << 20


class MultipartError(Exception):
    pass


def boundary_of(content_type: str | None) -> str:
    msg = Message()
    msg["Content-Type"] = content_type or ""
    if msg.get_content_type() != "multipart/mixed":
        raise MultipartError("not multipart/mixed")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 70:
        raise MultipartError("missing boundary")
    return boundary


class _Buffer:
    def __init__(self, source):
        self.source, self.buf, self.eof = source, b"\r\n", False  # CRLF: the first delimiter may open the body
        self.received = 0

    @property
    def position(self) -> int:
        """How many bytes of the body lie before the first one still buffered."""
        return self.received - len(self.buf)  # the CRLF put in front is read before any byte

    def fill(self) -> None:
        chunk = self.source.read(FILL_BYTES)
        if chunk:
            self.buf += chunk
            self.received += len(chunk)
        else:
            self.eof = True

    def read_until(self, delimiter: bytes, limit: int) -> bytes:
        while True:
            index = self.buf.find(delimiter)
            if index >= 0:
                found, self.buf = self.buf[:index], self.buf[index + len(delimiter):]
                return found
            if len(self.buf) > limit:
                raise MultipartError("part header or JSON too large")
            if self.eof:
                raise MultipartError("truncated multipart body")
            self.fill()


class _PartStream:
    """The bytes of one part, ending where the next delimiter starts."""

    def __init__(self, buffer: _Buffer, delimiter: bytes):
        self._b, self._delimiter, self._done = buffer, delimiter, False

    def read(self, amount: int) -> bytes:
        b = self._b
        while not self._done:
            index = b.buf.find(self._delimiter)
            if index >= 0:
                if index == 0:
                    self._done = True
                    return b""
                take = min(amount, index)
            else:
                take = min(amount, len(b.buf) - len(self._delimiter) + 1)
            if take > 0:
                out, b.buf = b.buf[:take], b.buf[take:]
                return out
            if b.eof:
                raise MultipartError("truncated multipart body")
            b.fill()
        return b""


class Part:
    """`offset`: where its bytes start in the body; `closing`: the delimiter that ends the body."""

    def __init__(self, headers: dict, stream, offset: int = 0, closing: bytes = b""):
        self.headers, self.stream, self.offset, self.closing = headers, stream, offset, closing


def _headers(buffer: _Buffer) -> dict:
    headers, total = {}, 0
    while True:
        line = buffer.read_until(b"\r\n", MAX_HEADER_BYTES)
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise MultipartError("part headers too large")
        if not line:
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise MultipartError("malformed part header")
        headers[name.strip().lower()] = value.strip()


def read_media_response(stream, content_type: str | None) -> tuple[dict, Part]:
    """(the JSON metadata, the second part) of a federation media response."""
    delimiter = b"\r\n--" + boundary_of(content_type).encode("latin-1")
    buffer = _Buffer(stream)
    buffer.read_until(delimiter, MAX_HEADER_BYTES)  # preamble
    buffer.read_until(b"\r\n", MAX_HEADER_BYTES)  # rest of the boundary line
    _headers(buffer)
    try:
        metadata = json.loads(buffer.read_until(delimiter, MAX_JSON_PART_BYTES) or b"{}")
    except ValueError:
        raise MultipartError("first part is not JSON") from None
    if not isinstance(metadata, dict):
        raise MultipartError("first part is not a JSON object")
    tail = buffer.read_until(b"\r\n", MAX_HEADER_BYTES)
    if tail.startswith(b"--"):
        raise MultipartError("no media part")
    headers = _headers(buffer)
    return metadata, Part(headers, _PartStream(buffer, delimiter), buffer.position, delimiter + b"--\r\n")


def new_boundary() -> str:
    return secrets.token_hex(16)


def media_response_chunks(boundary: str, *, metadata: dict, part_headers: dict, body_chunks):
    """(head, body iterator, tail) of a federation media response; the caller adds up lengths."""
    head = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode()
            + json.dumps(metadata).encode()
            + f"\r\n--{boundary}\r\n".encode()
            + "".join(f"{k}: {v}\r\n" for k, v in part_headers.items()).encode("latin-1")
            + b"\r\n")
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, body_chunks, tail
