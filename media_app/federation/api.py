"""Federation endpoints: this server's keys, and its local media served to other servers."""
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from .. import errors, ratelimit, storage
from ..api.endpoint import Access, Endpoint
from ..api.schema import DOWNLOAD_ERRORS, THUMBNAIL_PARAMETERS, TIMEOUT_MS, endpoint_schema
from ..api.serving import content_disposition
from ..conf import media_settings
from ..services import download, thumbnails
from . import keys, multipart, xmatrix


class KeyServerView(Endpoint):
    """`GET /_matrix/key/v2/server`: our verify keys, signed by themselves."""

    access = Access.PUBLIC
    for_servers = True

    @endpoint_schema(
        summary="This server's signing keys",
        description="Signed JSON of the server-server spec: server_name, valid_until_ts, verify_keys, "
        "old_verify_keys, signatures. Other servers verify X-Matrix requests and answers with it.",
        responses={200: OpenApiResponse(response={"type": "object"}, description="Signed key document")},
    )
    def get(self, request):
        return keys.server_keys_response()


class FederationEndpoint(Endpoint):
    """Base of the endpoints other servers call: public at the token level, and authenticated
    by the requester's X-Matrix signature instead (`request.federation_origin`)."""

    access = Access.PUBLIC
    for_servers = True

    def authenticate(self, request):
        request.federation_origin = xmatrix.verify_request(
            method=request.method,
            # The exact path and query the requester signed (gunicorn keeps it in RAW_URI).
            uri=request.META.get("RAW_URI") or request.get_full_path(),
            authorization=request.headers.get("Authorization"),
            requester_ip=ratelimit.client_ip(request),
        )
        return None


def _multipart_response(*, blob, media_type: str, filename: str | None) -> StreamingHttpResponse:
    boundary = multipart.new_boundary()
    head, body, tail = multipart.media_response_chunks(
        boundary, metadata={},
        # The part's own length lets the fetching server answer its client while the bytes
        # arrive (a part's length is otherwise known only at its closing delimiter).
        part_headers={"Content-Type": media_type, "Content-Disposition": content_disposition(media_type, filename),
                      "Content-Length": str(blob.size)},
        body_chunks=storage.backend(blob.storage).iter_chunks(blob.key),
    )

    def stream():
        yield head
        yield from body
        yield tail

    response = StreamingHttpResponse(stream(), content_type=f"multipart/mixed; boundary={boundary}")
    response["Content-Length"] = str(len(head) + blob.size + len(tail))
    return response


_MEDIA_ID = OpenApiParameter("media_id", str, OpenApiParameter.PATH, description="A media ID of this server")
_MULTIPART = {(200, "multipart/mixed"): OpenApiResponse(
    response={"type": "string", "format": "binary"},
    description="A JSON part (metadata, `{}`), then the bytes as the second part.",
)}
_FEDERATION_ERRORS = [errors.FederationUnauthorized, errors.MediaServerBlocked, *DOWNLOAD_ERRORS]


def _local_media(request, media_id):
    return download.media_get_servable(
        server_name=media_settings.SERVER_NAME, media_id=media_id,
        timeout_ms=download.parse_timeout_ms(request.GET.get("timeout_ms")), allow_remote=False,
    )


class FederationDownloadView(FederationEndpoint):
    @endpoint_schema(
        summary="Media of this server, for another server",
        description="Authenticated by the requester's X-Matrix signature; local media only.",
        parameters=[_MEDIA_ID, TIMEOUT_MS], responses=_MULTIPART, errors=_FEDERATION_ERRORS,
    )
    def get(self, request, media_id):
        media = _local_media(request, media_id)
        return _multipart_response(blob=media.blob, media_type=media.media_type, filename=media.upload_name)


class FederationThumbnailView(FederationEndpoint):
    @endpoint_schema(
        summary="A thumbnail of this server's media, for another server",
        description="Authenticated by the requester's X-Matrix signature; local media only.",
        parameters=[_MEDIA_ID, *THUMBNAIL_PARAMETERS, TIMEOUT_MS], responses=_MULTIPART,
        errors=[*_FEDERATION_ERRORS, errors.InvalidParam],
    )
    def get(self, request, media_id):
        params = request.GET
        width, height, method, animated = thumbnails.parse_request(
            params.get("width"), params.get("height"), params.get("method"), params.get("animated")
        )
        media = _local_media(request, media_id)
        thumb = thumbnails.thumbnail_get_or_render(media=media, width=width, height=height, method=method,
                                                   animated=animated)
        extension = thumb.media_type.rsplit("/", 1)[-1]
        return _multipart_response(blob=thumb.blob, media_type=thumb.media_type, filename=f"thumbnail.{extension}")
