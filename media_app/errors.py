"""One error model for every response: `{"errcode", "error", "code"}` (other servers get the
first two only, see `error_response`); every error class of the project lives here (the table is
in docs/ARCHITECTURE.md, "Errors").

Each error code is one exception class carrying its HTTP status, Matrix errcode and message.
Services and views raise them; `media_app.api.endpoint.Endpoint`, `drf_exception_handler` and
the Django handlers render them all alike and translate framework exceptions, so no path can
leak a traceback, a path or a SQL fragment.
"""
import errno
import logging

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions

logger = logging.getLogger(__name__)


class MediasiteError(Exception):
    code = "UNKNOWN"
    status = 500
    errcode = "M_UNKNOWN"
    message = "Internal server error"

    def __init__(self, message: str | None = None, *, headers: dict | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.headers = headers or {}

    def as_dict(self, *, for_servers: bool = False) -> dict:
        """The JSON body; for another homeserver without the project's `code` (error_response)."""
        body = {"errcode": self.errcode, "error": self.message}
        if not for_servers:
            body["code"] = self.code
        return body


# The media codes of the project.
class MediaTooLarge(MediasiteError):
    code, status, errcode, message = "MEDIA_TOO_LARGE", 413, "M_TOO_LARGE", "File exceeds the maximum allowed upload size"


class MediaTooManyPixels(MediasiteError):
    code, status, errcode, message = "MEDIA_TOO_MANY_PIXELS", 400, "M_TOO_LARGE", "Image dimensions exceed the maximum allowed size"


class MediaNotFound(MediasiteError):
    code, status, errcode, message = "MEDIA_NOT_FOUND", 404, "M_NOT_FOUND", "Media not found"


class MediaQuarantined(MediasiteError):
    code, status, errcode, message = "MEDIA_QUARANTINED", 404, "M_NOT_FOUND", "This media has been removed"


class TokenNotFound(MediasiteError):
    code, status, errcode, message = "TOKEN_NOT_FOUND", 404, "M_NOT_FOUND", "Token not found"


class MediaServerBlocked(MediasiteError):
    code, status, errcode, message = "MEDIA_SERVER_BLOCKED", 403, "M_FORBIDDEN", "Media from this server is not permitted"


class MediaNotThumbnailable(MediasiteError):
    code, status, errcode, message = "MEDIA_NOT_THUMBNAILABLE", 400, "M_UNKNOWN", "This media type has no thumbnails"


class MediaImageBroken(MediasiteError):
    """The client's image cannot be decoded (image_ops.BrokenImage, seen from HTTP)."""

    code, status, errcode, message = "MEDIA_IMAGE_BROKEN", 400, "M_UNKNOWN", "The image could not be decoded"


# Matrix errors the spec requires, under codes of the same style.
class MissingToken(MediasiteError):
    code, status, errcode, message = "AUTH_MISSING_TOKEN", 401, "M_MISSING_TOKEN", "Missing access token"


class UnknownToken(MediasiteError):
    code, status, errcode, message = "AUTH_UNKNOWN_TOKEN", 401, "M_UNKNOWN_TOKEN", "Unknown or revoked access token"


class FederationUnauthorized(MediasiteError):
    code, status, errcode, message = "FEDERATION_UNAUTHORIZED", 401, "M_UNAUTHORIZED", "Missing or invalid X-Matrix signature"


class Forbidden(MediasiteError):
    code, status, errcode, message = "FORBIDDEN", 403, "M_FORBIDDEN", "You are not allowed to do this"


class RateLimited(MediasiteError):
    code, status, errcode, message = "RATE_LIMITED", 429, "M_LIMIT_EXCEEDED", "Too many requests"

    def __init__(self, message=None, *, retry_after_ms: int = 1000):
        seconds = max(1, -(-retry_after_ms // 1000))
        super().__init__(message, headers={"Retry-After": str(seconds)})
        self.retry_after_ms = retry_after_ms

    def as_dict(self, *, for_servers: bool = False):
        return {**super().as_dict(for_servers=for_servers), "retry_after_ms": self.retry_after_ms}


class QuotaExceeded(MediasiteError):
    code, status, errcode, message = "QUOTA_EXCEEDED", 403, "M_FORBIDDEN", "Your media quota is used up"


class TooManyPendingUploads(RateLimited):
    code = "MEDIA_TOO_MANY_PENDING"
    message = "Too many media IDs reserved and not yet uploaded"


class MediaNotYetUploaded(MediasiteError):
    code, status, errcode, message = "MEDIA_NOT_YET_UPLOADED", 504, "M_NOT_YET_UPLOADED", "Media has not been uploaded yet"


class MediaCannotOverwrite(MediasiteError):
    code, status, errcode, message = "MEDIA_CANNOT_OVERWRITE", 409, "M_CANNOT_OVERWRITE_MEDIA", "Media ID already has content"


class MediaInvalidState(MediasiteError):
    code, status, errcode, message = "MEDIA_INVALID_STATE", 409, "M_BAD_STATE", "This media cannot make that change of state"


class IllegalTransition(MediaInvalidState):
    """The transition table forbids the change, or another request changed the status first."""


class SignoffRequired(MediasiteError):
    code, status, errcode, message = "SIGNOFF_REQUIRED", 403, "M_FORBIDDEN", "This change needs a second moderator's sign-off"


class RequestTimeout(MediasiteError):
    """Answered by the gunicorn worker, before Django, to a request that never finished arriving."""
    code, status, errcode, message = "REQUEST_TIMEOUT", 408, "M_UNKNOWN", "The request did not arrive in time"


class MalformedRequest(MediasiteError):
    """Answered by the gunicorn worker, before Django, to what its HTTP parser refuses: a bad
    request line or header, a request line or head over its limits. The status is the parser's
    (400, 414, 417, 431, 501); the message is its reason phrase, never the request quoted."""
    code, status, errcode, message = "MALFORMED_REQUEST", 400, "M_UNKNOWN", "Bad Request"


class RemoteFetchFailed(MediasiteError):
    code, status, errcode, message = "REMOTE_FETCH_FAILED", 502, "M_UNKNOWN", "Could not fetch media from the remote server"


class RemoteTimeout(MediasiteError):
    code, status, errcode, message = "REMOTE_TIMEOUT", 504, "M_UNKNOWN", "The remote server did not answer in time"


class StorageUnavailable(MediasiteError):
    code, status, errcode, message = "STORAGE_UNAVAILABLE", 503, "M_UNKNOWN", "Media storage is temporarily unavailable"

    def __init__(self, message=None):
        super().__init__(message, headers={"Retry-After": "5"})


class FlightTimedOut(MediasiteError):
    """A result computed once for many callers (media_app.singleflight) was not ready in time."""
    code, status, errcode, message = "RESULT_NOT_READY", 503, "M_UNKNOWN", "The result is still being prepared; please retry"

    def __init__(self, message=None):
        super().__init__(message, headers={"Retry-After": "5"})


class HomeserverUnavailable(MediasiteError):
    code, status, errcode, message = "AUTH_HOMESERVER_UNAVAILABLE", 503, "M_UNKNOWN", "Cannot verify the access token with the homeserver right now"

    def __init__(self, message=None):
        super().__init__(message, headers={"Retry-After": "5"})


class CoordinationUnavailable(MediasiteError):
    """The service through which processes share work (the single flight's Redis) is unreachable."""
    code, status, errcode, message = ("COORDINATION_UNAVAILABLE", 503, "M_UNKNOWN",
                                      "A service this server depends on is unreachable; please retry")

    def __init__(self, message=None):
        super().__init__(message, headers={"Retry-After": "5"})


class FlightAbandoned(MediasiteError):
    """The process computing a result for many callers stopped without one."""
    code, status, errcode, message = "RESULT_ABANDONED", 503, "M_UNKNOWN", "The worker preparing this result stopped; please retry"

    def __init__(self, message=None):
        super().__init__(message, headers={"Retry-After": "1"})


class StorageFull(MediasiteError):
    code, status, errcode, message = "STORAGE_FULL", 507, "M_UNKNOWN", "Media storage is full"


def is_database_full(exc: BaseException) -> bool:
    """The database could not write for lack of space: SQLite's SQLITE_FULL ("database or disk
    is full"), PostgreSQL's disk_full (SQLSTATE 53100)."""
    from django.db import DatabaseError

    if not isinstance(exc, DatabaseError):
        return False
    cause = exc.__cause__
    return getattr(cause, "sqlstate", None) == "53100" or "database or disk is full" in str(exc)


class RangeNotSatisfiable(MediasiteError):
    """A well-formed Range wholly outside the content (RFC 9110: 416, with the size in
    Content-Range so the client can ask again)."""

    code, status, errcode, message = "RANGE_NOT_SATISFIABLE", 416, "M_UNKNOWN", "The requested range lies outside the content"

    def __init__(self, message=None, *, size: int | None = None):
        super().__init__(message, headers={} if size is None else {"Content-Range": f"bytes */{size}"})


class BlobMissing(MediasiteError):
    """The row exists but its bytes do not: a server-side fault, not the client's."""

    code, status, errcode, message = "MEDIA_UNREADABLE", 500, "M_UNKNOWN", "The stored media could not be read"


class InvalidParam(MediasiteError):
    code, status, errcode, message = "INVALID_PARAM", 400, "M_INVALID_PARAM", "Invalid parameter"


class BadRequest(MediasiteError):
    code, status, errcode, message = "BAD_REQUEST", 400, "M_BAD_JSON", "Malformed request"


class UnsupportedContentType(MediasiteError):
    # 400, not 415: the Matrix API answers client mistakes in a body with 400 and an errcode.
    code, status, errcode, message = "UNSUPPORTED_CONTENT_TYPE", 400, "M_UNKNOWN", "This endpoint does not accept that Content-Type"


class MalformedMultipart(MediasiteError):
    code, status, errcode, message = "MALFORMED_MULTIPART", 400, "M_UNKNOWN", "The multipart/form-data body could not be parsed"


class MissingParam(MediasiteError):
    code, status, errcode, message = "MISSING_PARAM", 400, "M_MISSING_PARAM", "A required parameter is missing"


class TooManyFiles(MediasiteError):
    code, status, errcode, message = "UPLOAD_TOO_MANY_FILES", 413, "M_TOO_LARGE", "Too many files in one request"


class UploadIncomplete(MediasiteError):
    code, status, errcode, message = "UPLOAD_INCOMPLETE", 400, "M_UNKNOWN", "The upload ended before all its bytes arrived"


class Unrecognized(MediasiteError):
    code, status, errcode, message = "UNRECOGNIZED", 404, "M_UNRECOGNIZED", "Unrecognized request"


class MethodNotAllowed(MediasiteError):
    code, status, errcode, message = "METHOD_NOT_ALLOWED", 405, "M_UNRECOGNIZED", "Method not allowed on this endpoint"

    def __init__(self, message=None, *, allowed=()):
        # RFC 9110: a 405 lists the methods the resource does answer.
        super().__init__(message, headers={"Allow": ", ".join(sorted(m.upper() for m in allowed))} if allowed else {})


# Moderation.
class MediaProtected(MediasiteError):
    code, status, errcode, message = "MEDIA_PROTECTED", 400, "M_FORBIDDEN", "This media is protected from quarantine"


class ModerationSelfApproval(MediasiteError):
    code, status, errcode, message = (
        "MODERATION_SELF_APPROVAL", 403, "M_FORBIDDEN", "A request must be approved by someone other than its requester"
    )


class ModerationAlreadyDecided(MediasiteError):
    code, status, errcode, message = (
        "MODERATION_ALREADY_DECIDED", 409, "M_UNKNOWN", "This moderation request has already been decided"
    )


class UserNotFound(MediasiteError):
    code, status, errcode, message = "USER_NOT_FOUND", 404, "M_NOT_FOUND", "User not found"


class ModerationRequestNotFound(MediasiteError):
    code, status, errcode, message = "MODERATION_REQUEST_NOT_FOUND", 404, "M_NOT_FOUND", "Moderation request not found"


class InternalError(MediasiteError):
    pass


def error_classes(cls=MediasiteError):
    """Every error class below `cls`, subclasses of subclasses included."""
    for sub in cls.__subclasses__():
        yield sub
        yield from error_classes(sub)


def error_response(err: MediasiteError, *, for_servers: bool = False) -> JsonResponse:
    """The JSON answer for `err`. `for_servers`: the answer goes to another homeserver
    (Endpoint.answers_server, handler404), which gets the spec's keys without the project's
    `code`.

    Synapse (1.163) turns a remote 404 into the error it gives its own client, copying the
    body's other keys into it, and one named `code` collides with an argument of the function
    building that error: the request then fails inside Synapse and its client never gets an
    answer, so a media ID unknown here left Synapse's users waiting until their own timeout.
    """
    response = JsonResponse(err.as_dict(for_servers=for_servers), status=err.status)
    for name, value in err.headers.items():
        response[name] = value
    return response


def _from_drf(exc) -> MediasiteError | None:
    if isinstance(exc, drf_exceptions.NotAuthenticated):
        return MissingToken()
    if isinstance(exc, drf_exceptions.AuthenticationFailed):
        return UnknownToken()
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return MethodNotAllowed()
    if isinstance(exc, drf_exceptions.Throttled):
        return RateLimited(retry_after_ms=int((exc.wait or 1) * 1000))
    if isinstance(exc, drf_exceptions.PermissionDenied):
        return Forbidden()
    if isinstance(exc, drf_exceptions.NotFound):
        return MediaNotFound()
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return BadRequest("Unsupported request content type")
    if isinstance(exc, drf_exceptions.ParseError):
        return BadRequest("Request body is not valid JSON")
    if isinstance(exc, drf_exceptions.ValidationError):
        return InvalidParam(_first_message(exc.detail))
    if isinstance(exc, drf_exceptions.NotAcceptable):
        return BadRequest("Cannot produce the requested content type")
    return None


def _first_message(detail) -> str:
    """The first human message in a DRF error detail, with the field name it belongs to."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            return f"{field}: {_first_message(value)}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail) or "Invalid parameter"


def to_mediasite_error(exc) -> MediasiteError:
    if isinstance(exc, MediasiteError):
        return exc
    converted = _from_drf(exc) if isinstance(exc, drf_exceptions.APIException) else None
    if converted:
        return converted
    if isinstance(exc, Http404):
        return MediaNotFound()
    if isinstance(exc, PermissionDenied):
        return Forbidden()
    if isinstance(exc, SuspiciousOperation):
        return BadRequest("Malformed request")
    if is_database_full(exc):
        logger.error("The database is out of space: %s", type(exc).__name__)
        return StorageFull()
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # A local write (temp file, rendition) that no storage layer translated on its way up.
        logger.error("A local disk is full: %s", type(exc).__name__)
        return StorageFull()
    logger.exception("Unhandled error", exc_info=exc)
    return InternalError()


def drf_exception_handler(exc, context):
    return error_response(to_mediasite_error(exc))


# Django-level handlers for requests that never reach a DRF view.
def handler400(request, exception=None):
    return error_response(BadRequest())


def handler403(request, exception=None):
    return error_response(Forbidden())


# Paths only other homeservers call: an unknown one there is answered as to a server.
SERVER_PATH_PREFIXES = ("/_matrix/federation/", "/_matrix/key/")


def handler404(request, exception=None):
    return error_response(Unrecognized(), for_servers=request.path.startswith(SERVER_PATH_PREFIXES))


def handler500(request):
    return error_response(InternalError())


def csrf_failure(request, reason=""):
    """API paths answer in the one error model; the admin keeps Django's page."""
    if request.path_info.startswith(("/_matrix/", "/api/")):
        return error_response(Forbidden("CSRF verification failed"))
    from django.views.csrf import csrf_failure as django_csrf_failure

    return django_csrf_failure(request, reason)
