"""Native REST API (`/api/v1/`): the same services as the Matrix API, in REST shapes."""
from dataclasses import asdict

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.pagination import LimitOffsetPagination

from ...selectors import media_list_for_user
from ...services import download, quotas, upload
from ..body import request_body
from ..endpoint import Endpoint, drf_request, json_response
from ..serving import download_response, thumbnail_response
from .serializers import MediaSerializer

_FILENAME = OpenApiParameter("filename", str, description="Original file name, kept encrypted at rest")
_ERROR = OpenApiResponse(description="Error: {errcode, error, code}")


class MediaCollectionView(Endpoint):
    rate_limits = {"post": "upload"}
    serializer_class = MediaSerializer

    @extend_schema(
        summary="Upload media",
        description="The raw request body is the file (Content-Length or chunked). The media type "
        "is detected from the bytes.",
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[_FILENAME],
        responses={201: MediaSerializer, 400: _ERROR, 413: _ERROR},
    )
    def post(self, request):
        stream, length = request_body(request)
        media = upload.media_upload(
            uploader=request.user, stream=stream, declared_length=length,
            upload_name=request.GET.get("filename"),
        )
        return json_response(MediaSerializer(media).data, status=201)

    @extend_schema(summary="List your own media", responses={200: MediaSerializer(many=True)})
    def get(self, request):
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(media_list_for_user(user=request.user), drf_request(request), view=self)
        return paginator.get_paginated_response(MediaSerializer(page, many=True).data).data


class MediaDetailView(Endpoint):
    serializer_class = MediaSerializer

    @extend_schema(summary="Media metadata", responses={200: MediaSerializer, 404: _ERROR})
    def get(self, request, server_name, media_id):
        media = download.media_get_metadata(server_name=server_name, media_id=media_id, user=request.user)
        return MediaSerializer(media).data


class MediaContentView(Endpoint):
    @extend_schema(
        summary="Media bytes",
        description="Supports HEAD, single byte ranges, ETag / If-None-Match.",
        parameters=[OpenApiParameter("timeout_ms", int, description="Wait this long for a pending upload")],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, 206: OpenApiTypes.BINARY,
                   404: _ERROR, 416: _ERROR, 504: _ERROR},
    )
    def get(self, request, server_name, media_id):
        return download_response(request, server_name, media_id)


class MediaThumbnailView(Endpoint):
    @extend_schema(
        summary="Media thumbnail",
        description="Matrix thumbnail semantics: the smallest configured size at least as large as "
        "asked, never upscaled, metadata stripped; animated WebP when animated=true.",
        parameters=[
            OpenApiParameter("width", int, required=True),
            OpenApiParameter("height", int, required=True),
            OpenApiParameter("method", str, enum=["crop", "scale"]),
            OpenApiParameter("animated", bool),
        ],
        responses={(200, "image/*"): OpenApiTypes.BINARY, 400: _ERROR, 404: _ERROR},
    )
    def get(self, request, server_name, media_id):
        return thumbnail_response(request, server_name, media_id)


class UsageView(Endpoint):
    @extend_schema(
        summary="Your quota and usage",
        description="Bytes and files you have stored (reservations count as files), your limits "
        "(0 = unlimited) and your open reservations.",
        responses={200: OpenApiResponse(description="{bytes_used, files_used, pending_uploads, max_bytes, "
                                        "max_files, max_pending_uploads}")},
    )
    def get(self, request):
        return asdict(quotas.quota_usage(user=request.user))
