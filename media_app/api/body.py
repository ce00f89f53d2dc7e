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


RAW, MULTIPART = "raw", "multipart"
UPLOAD_ACCEPTS = (
    "Send the file as the raw request body, with any Content-Type but application/x-www-form-urlencoded "
    "and multipart/* (or none; the type is detected from the bytes), or as multipart/form-data with "
    "one or more `file` parts"
)
# Bodies that are neither a file nor a multipart form: refused, so a form is never stored as content.
_REFUSED_UPLOAD_TYPES = ("application/x-www-form-urlencoded", "multipart/")
# The usual way to send a form by mistake: curl's --data-binary without a Content-Type.
_FORM_HINT = " (curl --data-binary sends it unless given one, e.g. -H 'Content-Type: application/octet-stream')"


def upload_body_kind(request) -> str:
    """RAW or MULTIPART for a native upload, or UnsupportedContentType naming what is accepted."""
    content_type = request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    if content_type == "multipart/form-data":
        return MULTIPART
    if content_type.startswith(_REFUSED_UPLOAD_TYPES):
        hint = _FORM_HINT if content_type == "application/x-www-form-urlencoded" else ""
        raise errors.UnsupportedContentType(f"{content_type} is not accepted{hint}. {UPLOAD_ACCEPTS}.")
    return RAW
