"""Receiving a `multipart/form-data` upload (`curl -F file=@photo.jpg`) as a stream.

The body is fed chunk by chunk to python-multipart's push parser; each `file` part's bytes go
straight into a `BodyReceiver` (services.blobs), the same size cut-off, hashing and temp file as
a raw body, so the envelope is never buffered nor stored. Other fields are read and dropped,
within a small budget.
"""
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from .. import errors
from ..conf import media_settings
from .blobs import BodyReceiver, Received, read_chunks

FILE_FIELD = "file"
# Headers of one part, and the values of all non-file fields together: enough for any real
# form, small enough that a hostile body cannot make the server hold much.
_MAX_PART_HEADER_BYTES = 16 * 1024
_MAX_OTHER_FIELD_BYTES = 64 * 1024
# Per-part headers and boundaries: what a body may add to its files' sizes.
_ENVELOPE_ALLOWANCE_PER_FILE = 64 * 1024


@dataclass
class ReceivedFile:
    received: Received
    filename: str | None


def multipart_boundary(content_type: str) -> bytes:
    """The boundary parameter of a multipart/form-data Content-Type, or MalformedMultipart."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    # RFC 2046: 1 to 70 characters.
    if not boundary or len(boundary) > 70:
        raise errors.MalformedMultipart("multipart/form-data needs a boundary parameter of 1 to 70 characters")
    return boundary


def _decode(raw: bytes) -> str:
    # Browsers send UTF-8 file names unencoded; anything else is shown with replacements.
    return raw.decode("utf-8", errors="replace")


def _basename(name: str) -> str:
    # Some clients send the full local path.
    return name.replace("\\", "/").rsplit("/", 1)[-1]


class _FormReader:
    def __init__(self, max_files: int):
        self.max_files = max_files
        self.files: list[ReceivedFile] = []
        self.ended = False
        self._receiver: BodyReceiver | None = None
        self._filename: str | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._header_bytes = 0
        self._other_bytes = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self):
        self._headers, self._header_bytes = {}, 0
        self._field.clear()
        self._value.clear()

    def _count_header(self, n: int):
        self._header_bytes += n
        if self._header_bytes > _MAX_PART_HEADER_BYTES:
            raise errors.MalformedMultipart("A multipart part has too large headers")

    def header_field(self, data, start, end):
        self._count_header(end - start)
        self._field += data[start:end]

    def header_value(self, data, start, end):
        self._count_header(end - start)
        self._value += data[start:end]

    def header_end(self):
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def headers_finished(self):
        disposition, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition.lower() != b"form-data" or b"name" not in params:
            raise errors.MalformedMultipart("Each multipart part needs Content-Disposition: form-data; name=…")
        if params[b"name"] != FILE_FIELD.encode():
            return
        if len(self.files) >= self.max_files:
            raise errors.TooManyFiles(f"At most {self.max_files} files may be uploaded in one request")
        filename = params.get(b"filename")
        self._filename = _basename(_decode(filename)) if filename else None
        self._receiver = BodyReceiver()

    def part_data(self, data, start, end):
        if self._receiver is not None:
            self._receiver.write(data[start:end])
            return
        self._other_bytes += end - start
        if self._other_bytes > _MAX_OTHER_FIELD_BYTES:
            raise errors.MalformedMultipart("Form fields other than `file` are too large")

    def part_end(self):
        if self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            self.files.append(ReceivedFile(received=receiver.finish(), filename=self._filename))

    def end(self):
        self.ended = True

    def abort(self):
        if self._receiver is not None:
            self._receiver.abort()
            self._receiver = None
        for item in self.files:
            item.received.discard()


def receive_multipart(*, stream, declared_length: int | None, content_type: str) -> list[ReceivedFile]:
    """Every `file` part of a multipart/form-data body, each received to its own temp file.

    Raises MalformedMultipart for a body that does not parse or ends early, MissingParam when it
    has no `file` part, MediaTooLarge as soon as one file passes the upload limit, TooManyFiles
    past MAX_UPLOAD_FILES_PER_REQUEST. On any error nothing is left on disk.
    """
    max_files = media_settings.MAX_UPLOAD_FILES_PER_REQUEST
    boundary = multipart_boundary(content_type)
    ceiling = max_files * (media_settings.MAX_UPLOAD_SIZE_BYTES + _ENVELOPE_ALLOWANCE_PER_FILE)
    if declared_length is not None and declared_length > ceiling:
        raise errors.MediaTooLarge()
    reader = _FormReader(max_files)
    parser = MultipartParser(boundary, reader.callbacks())
    try:
        total = 0
        for data in read_chunks(stream=stream, declared_length=declared_length):
            total += len(data)
            if total > ceiling:  # a chunked body: the same ceiling as a declared one
                raise errors.MediaTooLarge()
            try:
                parser.write(data)
            except MultipartParseError as exc:
                raise errors.MalformedMultipart(
                    "The body does not match its multipart/form-data boundary"
                ) from exc
            if reader.ended:
                break  # an epilogue after the closing boundary is ignored
        parser.finalize()
        if not reader.ended:
            raise errors.MalformedMultipart("The multipart/form-data body ended before its closing boundary")
        if not reader.files:
            raise errors.MissingParam(f"The multipart/form-data body has no `{FILE_FIELD}` part")
    except BaseException:
        reader.abort()
        raise
    return reader.files
