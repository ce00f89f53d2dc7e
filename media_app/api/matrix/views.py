"""The Matrix Content Repository API (client-server, v1.11+), including the deprecated
unauthenticated `/_matrix/media/v3/` reads behind MEDIASITE_LEGACY_MEDIA."""
from ...conf import media_settings
from ...services import upload
from ..body import request_body
from ..endpoint import Access, Endpoint
from ..serving import download_response, thumbnail_response


class UploadView(Endpoint):
    rate_limits = {"post": "upload"}

    def post(self, request):
        stream, length = request_body(request)
        media = upload.media_upload(
            uploader=request.user, stream=stream, declared_length=length,
            upload_name=request.GET.get("filename"),
        )
        return {"content_uri": media.content_uri}


class CreateView(Endpoint):
    rate_limits = {"post": "upload"}

    def post(self, request):
        media = upload.media_create_pending(uploader=request.user)
        return {
            "content_uri": media.content_uri,
            "unused_expires_at": int(media.unused_expires_at.timestamp() * 1000),
        }


class UploadToReservationView(Endpoint):
    def put(self, request, server_name, media_id):
        stream, length = request_body(request)
        upload.media_upload_pending(
            uploader=request.user, server_name=server_name, media_id=media_id,
            stream=stream, declared_length=length, upload_name=request.GET.get("filename"),
        )
        return {}


class DownloadView(Endpoint):
    def get(self, request, server_name, media_id, file_name=None):
        return download_response(request, server_name, media_id, file_name=file_name)


class ThumbnailView(Endpoint):
    def get(self, request, server_name, media_id):
        return thumbnail_response(request, server_name, media_id)


class ConfigView(Endpoint):
    def get(self, request):
        return {"m.upload.size": media_settings.MAX_UPLOAD_SIZE_BYTES}


class LegacyDownloadView(DownloadView):
    access = Access.LEGACY


class LegacyThumbnailView(ThumbnailView):
    access = Access.LEGACY


class LegacyConfigView(ConfigView):
    access = Access.LEGACY



