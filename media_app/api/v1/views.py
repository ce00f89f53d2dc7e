"""Native REST API (`/api/v1/`): the same services as the Matrix API, in REST shapes."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from ...selectors import media_list_for_user
from ...services import download, upload
from ..body import request_body
from ..negotiation import JSONOnlyNegotiation
from ..media_responses import download_response, thumbnail_response
from .serializers import MediaSerializer

_FILENAME = OpenApiParameter("filename", str, description="Original file name, kept encrypted at rest")
_ERROR = OpenApiResponse(description="Error: {errcode, error, code}")


class MediaCollectionView(generics.ListAPIView):
    content_negotiation_class = JSONOnlyNegotiation
    serializer_class = MediaSerializer
    parser_classes = []

    def get_queryset(self):
        return media_list_for_user(user=self.request.user)

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
            upload_name=request.query_params.get("filename"),
        )
        return Response(MediaSerializer(media).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="List your own media")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class MediaDetailView(APIView):
    content_negotiation_class = JSONOnlyNegotiation

    @extend_schema(summary="Media metadata", responses={200: MediaSerializer, 404: _ERROR})
    def get(self, request, server_name, media_id):
        media = download.media_get_metadata(server_name=server_name, media_id=media_id, user=request.user)
        return Response(MediaSerializer(media).data)


class MediaContentView(APIView):
    content_negotiation_class = JSONOnlyNegotiation

    @extend_schema(
        summary="Media bytes",
        description="Supports HEAD, single byte ranges, ETag / If-None-Match.",
        parameters=[OpenApiParameter("timeout_ms", int, description="Wait this long for a pending upload")],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, 206: OpenApiTypes.BINARY,
                   404: _ERROR, 416: _ERROR, 504: _ERROR},
    )
    def get(self, request, server_name, media_id):
        return download_response(request, server_name, media_id)




class MediaThumbnailView(APIView):
    content_negotiation_class = JSONOnlyNegotiation

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
