"""How endpoints are described in the OpenAPI document (drf-spectacular), for every API alike.

Describing an endpoint takes one decorator on its method:

    @endpoint_schema(
        summary="…", parameters=[…], request=…,            # anything extend_schema takes
        responses={200: SomeSerializer},                   # the successful answers
        errors=[errors.MediaNotFound, errors.InvalidParam],  # the error classes it may raise
    )
    def get(self, request, …): …

`MediasiteAutoSchema` (the schema class of every `Endpoint`) adds the rest from what the
endpoint already declares: the security requirement and the 401/403 answers from its `access`,
one response per HTTP status of the listed error classes, each typed as the shared `Error`
component with the possible `code` and `errcode` values and an example of each, and a tag
from the path. Legacy endpoints are left out while MEDIASITE_LEGACY_MEDIA is off
(`exclude_disabled_endpoints`, a preprocessing hook).
"""
from collections import defaultdict

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from .. import errors
from ..conf import media_settings

# The first matching prefix names an operation's group in the docs.
PATH_TAGS = (
    ("/_matrix/federation/", "Matrix federation"),
    ("/_matrix/key/", "Matrix federation"),
    ("/_matrix/", "Matrix content repository"),
    ("/_synapse/admin/", "Admin API (Synapse-compatible)"),
    ("/api/v1/tokens", "Access tokens"),
    ("/api/", "Native media API"),
)


class ServerErrorSerializer(serializers.Serializer):
    """The body of an error answered to another homeserver (federation and key endpoints)."""

    errcode = serializers.CharField(help_text="Matrix error code, e.g. M_NOT_FOUND")
    error = serializers.CharField(help_text="Human-readable message")
    retry_after_ms = serializers.IntegerField(
        required=False, help_text="With M_LIMIT_EXCEEDED: how long to wait before retrying"
    )

    class Meta:
        ref_name = "ServerError"


class ErrorSerializer(ServerErrorSerializer):
    """The body of every error response to clients."""

    code = serializers.CharField(
        required=False,
        help_text="Mediasite error code, e.g. MEDIA_NOT_FOUND; left out when the legacy media endpoints "
        "answer another homeserver (allow_remote=false)",
    )

    class Meta:
        ref_name = "Error"


def _access_errors(access) -> tuple:
    from .endpoint import Access  # endpoint imports this module

    if access in (Access.TOKEN, Access.STAFF):
        found = (errors.MissingToken, errors.UnknownToken)
        return found + ((errors.Forbidden,) if access is Access.STAFF else ())
    return ()


def _error_response(ref: dict, classes: list, *, for_servers: bool) -> dict:
    properties = {"errcode": {"type": "string", "enum": sorted({cls.errcode for cls in classes})}}
    if not for_servers:
        properties["code"] = {"type": "string", "enum": sorted({cls.code for cls in classes})}
    narrowed = {"type": "object", "properties": properties}
    return {
        "description": "\n".join(f"- `{cls.code}` ({cls.errcode}): {cls.message}" for cls in classes),
        "content": {
            "application/json": {
                "schema": {"allOf": [ref, narrowed]},
                "examples": {cls.code: {"summary": cls.message, "value": cls().as_dict(for_servers=for_servers)}
                             for cls in classes},
            }
        },
    }


class MediasiteAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        from .endpoint import Access

        access = getattr(self.view, "access", None)
        if access is Access.LEGACY:
            operation["deprecated"] = True
            operation["summary"] = operation.get("summary", "") + " (legacy, unauthenticated)"
        handler = getattr(self.view, method.lower(), None)
        declared = list(_access_errors(access))
        declared += [cls for cls in getattr(handler, "documented_errors", ()) if cls not in declared]
        if declared:
            by_status = defaultdict(list)
            for cls in declared:
                by_status[str(cls.status)].append(cls)
            for_servers = getattr(self.view, "for_servers", False)
            serializer = ServerErrorSerializer if for_servers else ErrorSerializer
            ref = self.resolve_serializer(serializer, "response").ref
            responses = operation.setdefault("responses", {})
            for status, classes in by_status.items():
                response = _error_response(ref, classes, for_servers=for_servers)
                # Headers declared for an error status (binary_parameters: Content-Range on a 416),
                # which drf-spectacular attaches only to the responses it builds itself.
                headers = self._get_response_headers_for_code(status)
                if headers:
                    response["headers"] = headers
                responses.setdefault(status, response)
            operation["responses"] = dict(sorted(responses.items()))
        return operation

    def get_tags(self):
        for prefix, tag in PATH_TAGS:
            if self.path.startswith(prefix):
                return [tag]
        return super().get_tags()

    def get_operation_id(self):
        operation_id = super().get_operation_id().strip("_")
        # Paths that differ only by a trailing parameter (download with a file name) would
        # otherwise share an ID.
        if self.path.endswith("/{file_name}"):
            operation_id += "_with_file_name"
        return operation_id


def endpoint_schema(*, errors=(), **kwargs):
    """`extend_schema(**kwargs)` plus the error classes (media_app.errors) the operation may
    raise; authentication errors follow from the endpoint's `access` and need not be listed."""

    def decorate(method):
        method = extend_schema(**kwargs)(method)
        method.documented_errors = tuple(errors)
        return method

    return decorate


def exclude_disabled_endpoints(endpoints):
    """Preprocessing hook: leave out the endpoints that answer 404 in this configuration."""
    from .endpoint import Access

    def enabled(callback) -> bool:
        view = getattr(callback, "cls", None)
        if getattr(view, "access", None) is Access.LEGACY:
            return media_settings.LEGACY_MEDIA
        return True

    return [endpoint for endpoint in endpoints if enabled(endpoint[3])]


class AccessTokenScheme(OpenApiAuthenticationExtension):
    """The security schemes of `media_app.auth.AccessTokenAuthentication`: a Bearer header, or
    the `access_token` query parameter the Matrix spec still allows (either one)."""

    target_class = "media_app.auth.AccessTokenAuthentication"
    name = ["bearerAuth", "accessTokenQuery"]

    def get_security_definition(self, auto_schema):
        return [
            {
                "type": "http",
                "scheme": "bearer",
                "description": "An access token (`manage.py create_token USER`, or `POST /api/v1/tokens`).",
            },
            {
                "type": "apiKey",
                "in": "query",
                "name": "access_token",
                "description": "The same token as a query parameter (deprecated by the Matrix spec).",
            },
        ]

    def get_security_requirement(self, auto_schema):
        return [{"bearerAuth": []}, {"accessTokenQuery": []}]


# --- pieces many endpoints share -------------------------------------------------------------

SERVER_NAME = OpenApiParameter(
    "server_name", str, OpenApiParameter.PATH,
    description="The server part of the `mxc://` URI (this server's name for local media)",
)
MEDIA_ID = OpenApiParameter(
    "media_id", str, OpenApiParameter.PATH, pattern=r"^[A-Za-z0-9_-]{1,255}$",
    description="The media ID part of the `mxc://` URI",
)
FILENAME_QUERY = OpenApiParameter(
    "filename", str, description="The file's name, kept (encrypted at rest) and given back on download",
)
TIMEOUT_MS = OpenApiParameter(
    "timeout_ms", int,
    description="How long to wait (ms) for the content of a media ID reserved but not uploaded yet",
)
ALLOW_REDIRECT = OpenApiParameter(
    "allow_redirect", bool,
    description="Allow a 307 redirect to the storage backend (only if the operator enabled it)",
)
THUMBNAIL_PARAMETERS = [
    OpenApiParameter("width", int, required=True, description="Desired width in pixels (1–100000)"),
    OpenApiParameter("height", int, required=True, description="Desired height in pixels (1–100000)"),
    OpenApiParameter("method", str, enum=["crop", "scale"], description="Crop to the size, or scale within it (default)"),
    OpenApiParameter("animated", bool, description="Animated WebP for an animated source"),
]

RAW_BODY = {"*/*": OpenApiTypes.BINARY}
# `{}`: an empty serializer would be documented as no body at all.
EMPTY_OBJECT = {"type": "object", "maxProperties": 0}
_SERVED = "the stored type, detected from the bytes"


def _header(name: str, description: str, statuses: list[int]) -> OpenApiParameter:
    return OpenApiParameter(name, str, OpenApiParameter.HEADER, response=statuses, description=description)


def binary_parameters() -> list[OpenApiParameter]:
    """Request and response headers of a byte-serving endpoint (download, thumbnail)."""
    return [
        OpenApiParameter("Range", str, OpenApiParameter.HEADER, description="A single byte range, e.g. `bytes=0-1023`"),
        OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER, description="ETag of a cached copy: 304 if it matches"),
        _header("ETag", "The content's SHA-256, quoted", [200, 206, 304]),
        _header("Content-Disposition", "inline for the Matrix spec's safe types, else attachment; with the file name", [200, 206]),
        _header("Content-Range", "The range served (206) or the size (416)", [206, 416]),
        _header("Content-Security-Policy", "A sandboxing policy", [200, 206]),
    ]


def binary_responses() -> dict:
    """The non-error answers of a byte-serving endpoint."""
    return {
        (200, "*/*"): OpenApiResponse(OpenApiTypes.BINARY, description=f"The bytes; Content-Type is {_SERVED}"),
        (206, "*/*"): OpenApiResponse(OpenApiTypes.BINARY, description="The requested byte range"),
        304: OpenApiResponse(description="Not modified (If-None-Match matched the ETag)"),
        307: OpenApiResponse(description="Redirect to the storage backend (allow_redirect=true, when enabled)"),
    }


DOWNLOAD_ERRORS = [
    errors.InvalidParam, errors.MediaNotFound, errors.MediaQuarantined, errors.MediaNotYetUploaded,
    errors.StorageUnavailable,
]
# What serves stored bytes, with ranges (416 is an error body like any other), to clients, for
# whom another server's media is fetched first; the federation's multipart answers take no
# Range, serve only local media, and keep DOWNLOAD_ERRORS.
SERVING_ERRORS = [
    *DOWNLOAD_ERRORS, errors.RangeNotSatisfiable, errors.MediaServerBlocked, errors.RemoteFetchFailed,
    errors.RemoteTimeout, errors.MediaTooLarge, errors.RateLimited, errors.CoordinationUnavailable,
]
# Thumbnails, besides: media that is no image, or too large or broken an image to render.
THUMBNAIL_ERRORS = [*SERVING_ERRORS, errors.MediaNotThumbnailable, errors.MediaTooManyPixels, errors.MediaImageBroken]
UPLOAD_ERRORS = [
    errors.MediaTooLarge, errors.MediaTooManyPixels, errors.UploadIncomplete, errors.StorageUnavailable,
    errors.QuotaExceeded, errors.RateLimited, errors.StorageFull,
]
