"""The raw request body as a stream, whether it came with a Content-Length or chunked."""
from .. import errors


def request_body(request) -> tuple[object, int | None]:
    """(readable, declared length or None for a chunked body)."""
    meta = request.META
    if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        # Django sizes its own stream by CONTENT_LENGTH, which a chunked body lacks; the
        # server's input stream decodes the chunks and ends at the last one.
        return meta["wsgi.input"], None
    raw = meta.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise errors.BadRequest("Invalid Content-Length") from None
    if length < 0:
        raise errors.BadRequest("Invalid Content-Length")
    return request, length
