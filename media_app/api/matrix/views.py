"""The Matrix Content Repository API (client-server, v1.11+). Thin: parse, call a service,
render. Errors are raised as MediasiteError and rendered by media_app.errors."""
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from ... import errors
from ...conf import media_settings
from ...services import download, thumbnails, upload
from ..body import request_body
from ..serving import serve_media, serve_thumbnail


class MatrixView(APIView):
    # The spec's clients send raw bodies; nothing here goes through DRF's parsers.
    parser_classes = []


class UploadView(MatrixView):
    def post(self, request):
        stream, length = request_body(request)
        media = upload.media_upload(
            uploader=request.user, stream=stream, declared_length=length,
            upload_name=request.query_params.get("filename"),
        )
        return Response({"content_uri": media.content_uri})


class CreateView(MatrixView):
    def post(self, request):
        media = upload.media_create_pending(uploader=request.user)
        return Response({
            "content_uri": media.content_uri,
            "unused_expires_at": int(media.unused_expires_at.timestamp() * 1000),
        })


class UploadToReservationView(MatrixView):
    def put(self, request, server_name, media_id):
        stream, length = request_body(request)
        upload.media_upload_pending(
            uploader=request.user, server_name=server_name, media_id=media_id,
            stream=stream, declared_length=length, upload_name=request.query_params.get("filename"),
        )
        return Response({})


class DownloadView(MatrixView):
    def get(self, request, server_name, media_id, file_name=None):
        media = download.media_get_servable(
            server_name=server_name, media_id=media_id,
            timeout_ms=download.parse_timeout_ms(request.query_params.get("timeout_ms")),
        )
        # The spec's boolean: only an explicit "true" allows a redirect.
        allow_redirect = request.query_params.get("allow_redirect", "").lower() == "true"
        response = serve_media(request, media, filename=file_name, allow_redirect=allow_redirect)
        download.media_record_retrieval(media=media, downloader=request.user)
        return response


class ThumbnailView(MatrixView):
    def get(self, request, server_name, media_id):
        return thumbnail_response(request, server_name, media_id)


def thumbnail_response(request, server_name: str, media_id: str):
    """Shared by the Matrix and native thumbnail endpoints."""
    params = request.query_params
    width, height, method, animated = thumbnails.parse_request(
        params.get("width"), params.get("height"), params.get("method"), params.get("animated")
    )
    media = download.media_get_servable(
        server_name=server_name, media_id=media_id,
        timeout_ms=download.parse_timeout_ms(params.get("timeout_ms")),
    )
    thumb = thumbnails.thumbnail_get_or_render(
        media=media, width=width, height=height, method=method, animated=animated
    )
    response = serve_thumbnail(request, thumb)
    download.media_record_retrieval(media=media, downloader=request.user)
    return response


class ConfigView(MatrixView):
    def get(self, request):
        return Response({"m.upload.size": media_settings.MAX_UPLOAD_SIZE_BYTES})


class LegacyMixin:
    """The deprecated unauthenticated endpoints: off unless MEDIASITE_LEGACY_MEDIA is set."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def initial(self, request, *args, **kwargs):
        if not media_settings.LEGACY_MEDIA:
            raise errors.Unrecognized()
        super().initial(request, *args, **kwargs)


class LegacyDownloadView(LegacyMixin, DownloadView):
    pass


class LegacyConfigView(LegacyMixin, ConfigView):
    pass


class LegacyThumbnailView(LegacyMixin, ThumbnailView):
    pass
