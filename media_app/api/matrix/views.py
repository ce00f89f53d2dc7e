"""The Matrix Content Repository API (client-server, v1.11+), including the deprecated
unauthenticated `/_matrix/media/v3/` reads behind MEDIASITE_LEGACY_MEDIA."""
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from ... import errors
from ...conf import media_settings
from ...services import upload
from ..body import request_body
from ..endpoint import Access, Endpoint
from ..schema import (
    ALLOW_REDIRECT, FILENAME_QUERY, MEDIA_ID, RAW_BODY, SERVER_NAME, SERVING_ERRORS, THUMBNAIL_ERRORS,
    THUMBNAIL_PARAMETERS, TIMEOUT_MS, UPLOAD_ERRORS, binary_parameters, binary_responses, endpoint_schema,
)
from ..serving import download_response, thumbnail_response

_CONTENT_URI = inline_serializer("MatrixContentUri", {"content_uri": serializers.CharField(help_text="mxc://server/id")})
_CREATED = inline_serializer("MatrixCreatedMediaId", {
    "content_uri": serializers.CharField(help_text="mxc://server/id"),
    "unused_expires_at": serializers.IntegerField(help_text="When the reservation lapses, ms since the epoch"),
})
_EMPTY = inline_serializer("MatrixEmpty", {})
_CONFIG = inline_serializer("MatrixMediaConfig", {
    "m.upload.size": serializers.IntegerField(help_text="Largest upload accepted, in bytes"),
})
_MEDIA_PATH = [SERVER_NAME, MEDIA_ID]
_DOWNLOAD = dict(
    description="The content, with Range (206/416), HEAD and ETag / If-None-Match (304) support.",
    responses=binary_responses(),
    errors=SERVING_ERRORS,
)
_THUMBNAIL = dict(
    description="The smallest configured size at least as large as asked (never upscaled), "
    "metadata stripped; animated WebP when animated=true.",
    parameters=[*_MEDIA_PATH, *THUMBNAIL_PARAMETERS, TIMEOUT_MS, *binary_parameters()],
    responses=binary_responses(),
    errors=THUMBNAIL_ERRORS,
)


class UploadView(Endpoint):
    rate_limits = {"post": "upload"}

    @endpoint_schema(
        summary="Upload content",
        description="The raw request body is the file (Content-Length or chunked); its type is "
        "detected from the bytes.",
        request=RAW_BODY, parameters=[FILENAME_QUERY], responses={200: _CONTENT_URI},
        errors=[*UPLOAD_ERRORS],
    )
    def post(self, request):
        stream, length = request_body(request)
        media = upload.media_upload(
            uploader=request.user, stream=stream, declared_length=length,
            upload_name=request.GET.get("filename"),
        )
        return {"content_uri": media.content_uri}


class CreateView(Endpoint):
    rate_limits = {"post": "upload"}

    @endpoint_schema(
        summary="Reserve a media ID", description="Fill it later with PUT /_matrix/media/v3/upload/{serverName}/{mediaId}.",
        request=None, responses={200: _CREATED}, errors=[errors.TooManyPendingUploads],
    )
    def post(self, request):
        media = upload.media_create_pending(uploader=request.user)
        return {
            "content_uri": media.content_uri,
            "unused_expires_at": int(media.unused_expires_at.timestamp() * 1000),
        }


class UploadToReservationView(Endpoint):
    @endpoint_schema(
        summary="Upload content to a reserved media ID",
        description="Only its creator, once, before the reservation lapses.",
        request=RAW_BODY, parameters=[*_MEDIA_PATH, FILENAME_QUERY], responses={200: _EMPTY},
        errors=[*UPLOAD_ERRORS, errors.InvalidParam, errors.MediaNotFound,
                errors.Forbidden, errors.MediaCannotOverwrite],
    )
    def put(self, request, server_name, media_id):
        stream, length = request_body(request)
        upload.media_upload_pending(
            uploader=request.user, server_name=server_name, media_id=media_id,
            stream=stream, declared_length=length, upload_name=request.GET.get("filename"),
        )
        return {}


class DownloadView(Endpoint):
    @endpoint_schema(
        summary="Download content",
        parameters=[*_MEDIA_PATH, TIMEOUT_MS, ALLOW_REDIRECT, *binary_parameters()],
        **_DOWNLOAD,
    )
    def get(self, request, server_name, media_id, file_name=None):
        return download_response(request, server_name, media_id, file_name=file_name)


class ThumbnailView(Endpoint):
    @endpoint_schema(summary="Thumbnail of content", **_THUMBNAIL)
    def get(self, request, server_name, media_id):
        return thumbnail_response(request, server_name, media_id)


class ConfigView(Endpoint):
    @endpoint_schema(summary="Upload configuration", responses={200: _CONFIG})
    def get(self, request):
        return {"m.upload.size": media_settings.MAX_UPLOAD_SIZE_BYTES}


class _LegacyMedia:
    access = Access.LEGACY

    def answers_server(self, request) -> bool:
        # A homeserver fetching from one without the federation media endpoints asks here with
        # allow_remote=false (the spec's guard against fetch loops between servers).
        return request.GET.get("allow_remote", "").lower() == "false"


class LegacyDownloadView(_LegacyMedia, DownloadView):
    pass


class LegacyThumbnailView(_LegacyMedia, ThumbnailView):
    pass


class LegacyConfigView(ConfigView):
    access = Access.LEGACY
