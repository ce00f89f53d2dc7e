"""The Matrix Content Repository API (client-server, v1.11+). Thin: parse, call a service,
render. Errors are raised as MediasiteError and rendered by media_app.errors."""
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from ... import errors
from ...conf import media_settings
from ...services import upload
from ..body import request_body
from ..negotiation import JSONOnlyNegotiation


class MatrixView(APIView):
    # The spec's clients send raw bodies; nothing here goes through DRF's parsers.
    parser_classes = []
    content_negotiation_class = JSONOnlyNegotiation


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


class LegacyConfigView(LegacyMixin, ConfigView):
    pass
