"""Serving stored bytes over HTTP, for the Matrix and native APIs alike: the download and
thumbnail responses, the safety headers (docs/ARCHITECTURE.md, "Serving"), ETag/If-None-Match,
single byte ranges and HEAD, with zero-copy sendfile when the bytes are on local disk."""
import io
import logging
import re
import threading
from urllib.parse import quote

from django.http import FileResponse, HttpResponse, StreamingHttpResponse

from .. import errors, storage
from ..crypto import is_undecryptable
from ..services import download, identifiers, thumbnails
from ..conf import media_settings
from ..models import Blob, Media

logger = logging.getLogger(__name__)

# The Matrix spec's list of types that may be shown inline; everything else is an attachment.
INLINE_TYPES = frozenset(
    {
        "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
        "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
        "video/mp4", "video/webm", "video/ogg", "video/quicktime",
        "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave",
        "audio/wav", "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
    }
)
CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; object-src 'self';"
)
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 7230 token characters
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
BLOCK_SIZE = 256 * 1024


def content_disposition(media_type: str, filename: str | None) -> str:
    base_type = media_type.split(";", 1)[0].strip().lower()
    disposition = "inline" if base_type in INLINE_TYPES else "attachment"
    if not filename:
        return disposition
    if filename.isascii() and _TOKEN.fullmatch(filename):
        return f"{disposition}; filename={filename}"
    return f"{disposition}; filename*=utf-8''{quote(filename, safe='')}"


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    candidates = (part.strip().removeprefix("W/") for part in header.split(","))
    return etag in candidates


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, end-inclusive) of a single byte range; None to serve the whole file.

    Multiple ranges and malformed headers are ignored (RFC 9110 allows serving the whole
    representation instead); a well-formed range outside the file is RangeNotSatisfiable (416).
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise errors.RangeNotSatisfiable(size=size)
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise errors.RangeNotSatisfiable(size=size)
    return start, min(end, size - 1)


def _allow_remote(params) -> bool:
    # The spec's boolean: only an explicit "false" keeps the request local.
    return params.get("allow_remote", "").lower() != "false"


def download_response(request, server_name: str, media_id: str, *, file_name: str | None = None):
    params = request.GET
    media = download.media_get_servable(
        server_name=server_name, media_id=media_id,
        timeout_ms=download.parse_timeout_ms(params.get("timeout_ms")), requester=request.user,
        allow_remote=_allow_remote(params), defer_remote_store=True,
    )
    if not isinstance(media, Media):
        return serve_fetched(request, media, filename=file_name)
    # The spec's boolean: only an explicit "true" allows a redirect.
    allow_redirect = params.get("allow_redirect", "").lower() == "true"
    response = serve_media(request, media, filename=file_name, allow_redirect=allow_redirect)
    download.media_record_retrieval(media=media, downloader=request.user)
    return response


def thumbnail_response(request, server_name: str, media_id: str):
    params = request.GET
    width, height, method, animated = thumbnails.parse_request(
        params.get("width"), params.get("height"), params.get("method"), params.get("animated")
    )
    timeout_ms = download.parse_timeout_ms(params.get("timeout_ms"))
    allow_remote = _allow_remote(params)
    try:
        media = download.media_get_servable(
            server_name=server_name, media_id=media_id, timeout_ms=timeout_ms, requester=request.user,
            allow_remote=allow_remote,
        )
    except errors.MediaTooLarge:
        # Remote media too large to cache: the origin's own thumbnail, passed through.
        if not allow_remote or identifiers.is_local(server_name):
            raise
        from ..federation.remote import remote_thumbnail_get

        thumb = remote_thumbnail_get(
            server_name=server_name, media_id=media_id, width=width, height=height, method=method,
            animated=animated, timeout_ms=timeout_ms,
        )
        return serve_open_file(request, io.BytesIO(thumb.data), media_type=thumb.media_type, size=len(thumb.data),
                               sha256=thumb.sha256, filename=f"thumbnail.{thumb.media_type.rsplit('/', 1)[-1]}")
    thumb = thumbnails.thumbnail_get_or_render(
        media=media, width=width, height=height, method=method, animated=animated
    )
    try:
        response = serve_thumbnail(request, thumb)
    except errors.BlobMissing:
        # A rendition can be made again from its original, which is what serving it needs.
        thumb = thumbnails.thumbnail_render_again(
            media=media, thumbnail=thumb, width=width, height=height, method=method, animated=animated
        )
        response = serve_thumbnail(request, thumb)
    download.media_record_retrieval(media=media, downloader=request.user, thumbnail_pk=thumb.pk)
    return response


def serve_media(request, media: Media, *, filename: str | None = None, allow_redirect: bool = False) -> HttpResponse:
    blob = media.blob
    return serve_stored(
        request, alias=blob.storage, key=blob.key, size=blob.size, sha256=blob.sha256,
        # A name no key decrypts is an operator's problem (logged, shown in the admin); the
        # bytes still go out, without a name.
        media_type=media.media_type,
        filename=filename or (None if is_undecryptable(media.upload_name) else media.upload_name),
        # Quarantined media never gets this far (download.media_get_servable refuses it), and
        # the check is repeated here because a presigned URL outlives any later quarantine.
        allow_redirect=allow_redirect and not media.is_quarantined,
    )


def serve_thumbnail(request, thumb) -> HttpResponse:
    blob = thumb.blob
    extension = thumb.media_type.rsplit("/", 1)[-1]
    return serve_stored(
        request, alias=blob.storage, key=blob.key, size=blob.size, sha256=blob.sha256,
        media_type=thumb.media_type, filename=f"thumbnail.{extension}",
    )


def _serving_headers(media_type: str, filename: str | None, etag: str) -> dict:
    return {
        "Content-Type": media_type,
        "Content-Disposition": content_disposition(media_type, filename),
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Referrer-Policy": "no-referrer",
        # Content behind an ID never changes, but it may be quarantined at any moment: caches
        # revalidate every use (If-None-Match, answered 304 without a byte once the media
        # lookup has passed), so a quarantine stops cached copies as well.
        "Cache-Control": "private, no-cache",
        "ETag": etag,
        "Accept-Ranges": "bytes",
    }


class _JoinOnClose(io.FileIO):
    """A file whose close() also waits for a thread: the response using it is finished only once
    the work beside it is, so the worker thread is not handed its next request before."""

    thread: threading.Thread | None = None

    def close(self):
        try:
            super().close()
        finally:
            thread, self.thread = self.thread, None
            if thread is not None:
                thread.join()


def serve_fetched(request, fetched, *, filename: str | None = None) -> HttpResponse:
    """Remote media this request has just fetched (a federation.remote.FetchedRemote), answered
    from its checked temp file while it is stored beside the answer: its own client does not
    wait for the durable write, and the requests waiting for it do not wait for that client.
    A StreamedRemote is answered as it arrives instead."""
    user = request.user
    if fetched.streamed:
        return _serve_streamed(request, fetched, filename=filename or fetched.filename,
                               then=lambda media: download.media_record_retrieval(media=media, downloader=user))
    try:
        fh = _JoinOnClose(fetched.received.path, "r")  # before the store moves or removes the file
    except BaseException:
        fetched.store_soon()
        raise
    # Joined when the response closes, before this worker thread takes another request: the
    # store ends the flight on the claim's own handle (on PostgreSQL, this thread's flight
    # connection), which this thread must not use meanwhile.
    fh.thread = fetched.store_soon(then=lambda media: download.media_record_retrieval(media=media, downloader=user))
    name = filename or fetched.filename
    return serve_open_file(request, fh, media_type=fetched.media_type, size=fetched.received.size,
                           sha256=fetched.received.sha256, filename=name)


def _serve_streamed(request, fetched, *, filename: str | None, then) -> HttpResponse:
    """A first fetch answered while it arrives (federation.remote.StreamedRemote): the serving
    headers and its declared length, without an ETag (the hash is known only at the end) and
    without ranges. A failure of the origin midway cuts the answer short of its length."""
    if request.method == "HEAD":
        # No body to stream: the fetch is finished, checked and stored first, so that a HEAD
        # says what a GET would get.
        media = fetched.store()
        if media.is_quarantined:
            raise errors.MediaQuarantined()
        then(media)
        return serve_media(request, media, filename=filename)
    try:
        body = fetched.tail()  # before the receive starts, which may move the temp file once done
    except BaseException:
        fetched.store_soon()
        raise
    # Joined when the response closes, as in serve_fetched.
    body.thread = fetched.store_soon(then=then)
    headers = _serving_headers(fetched.media_type, filename, etag="")
    headers["Content-Length"] = str(fetched.size)
    response = StreamingHttpResponse(body, content_type=fetched.media_type)
    return _with_headers(response, headers, drop=("ETag", "Accept-Ranges"))


def serve_open_file(request, fh, *, media_type: str, size: int, sha256: str, filename: str | None) -> HttpResponse:
    """Bytes that are not stored (remote media being fetched, an origin's thumbnail) with the
    serving headers."""
    headers = _serving_headers(media_type, filename, f'"{sha256}"')
    headers["Content-Length"] = str(size)
    if request.method == "HEAD":
        fh.close()
        return _with_headers(HttpResponse(), headers)
    response = FileResponse(fh, content_type=media_type)
    response.block_size = BLOCK_SIZE
    return _with_headers(response, headers, drop=("Accept-Ranges",))


def serve_stored(request, *, alias: str, key: str, size: int, sha256: str, media_type: str,
                 filename: str | None, allow_redirect: bool = False) -> HttpResponse:
    """Serve stored bytes (an original or a thumbnail) with every header of docs/ARCHITECTURE.md, "Serving".

    With `allow_redirect` (the client's spec parameter) and the operator's REDIRECT_DOWNLOADS,
    bytes on a backend that can presign are answered with a 307 to the backend instead.
    """
    etag = f'"{sha256}"'
    headers = _serving_headers(media_type, filename, etag)
    if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
    if if_none_match and _etag_matches(if_none_match, etag):
        response = _with_headers(HttpResponse(status=304), headers, drop=("Content-Type",))
        # RFC 9110: a 304 carries no Content-Length but the 200's (Django would write 0).
        response["Content-Length"] = str(size)
        return response

    redirect = None
    if allow_redirect and media_settings.REDIRECT_DOWNLOADS:
        redirect = storage.download_redirect(
            storage.backend(alias), key, media_type=media_type, disposition=headers["Content-Disposition"]
        )
    if redirect is not None:
        url, max_age = redirect
        response = HttpResponse(status=307)
        response["Location"] = url
        # Cached no longer than the URL stays the same, so a cached redirect never expires early.
        headers["Cache-Control"] = f"private, max-age={max_age}"
        return _with_headers(response, headers, drop=("Content-Type", "Content-Disposition", "ETag", "Accept-Ranges"))

    range_header = request.META.get("HTTP_RANGE")
    if_range = request.META.get("HTTP_IF_RANGE")
    if if_range and if_range.strip() != etag:
        range_header = None  # the client's partial copy is of other content
    window = parse_range(range_header, size)  # a RangeNotSatisfiable is rendered as JSON by the endpoint

    status, start, length = 200, 0, size
    if window is not None:
        status, start, length = 206, window[0], window[1] - window[0] + 1
        headers["Content-Range"] = f"bytes {window[0]}-{window[1]}/{size}"
    headers["Content-Length"] = str(length)

    if request.method == "HEAD":
        return _with_headers(HttpResponse(status=status), headers)
    try:
        stream = storage.backend(alias).open_range(key, start, length)
    except errors.BlobMissing:
        # migrate_storage may have moved the bytes, and deleted this copy, since the row was
        # read: look where the content is now before calling it missing.
        moved = Blob.objects.filter(sha256=sha256).values_list("storage", "key").first()
        if moved is None or moved == (alias, key):
            raise
        stream = storage.backend(moved[0]).open_range(moved[1], start, length)
    response = FileResponse(stream, status=status, content_type=media_type)
    response.block_size = BLOCK_SIZE
    return _with_headers(response, headers)


def _with_headers(response: HttpResponse, headers: dict, drop: tuple = ()) -> HttpResponse:
    """Set the serving headers, leaving out (and removing Django's defaults for) `drop`."""
    for name, value in headers.items():
        if name not in drop:
            response[name] = value
    for name in drop:
        if name in response:
            del response[name]
    return response
