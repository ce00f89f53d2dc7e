"""The download and thumbnail responses, shared by the Matrix and the native REST views."""
from ..services import download, thumbnails
from .serving import serve_media, serve_thumbnail


def download_response(request, server_name: str, media_id: str, *, file_name: str | None = None):
    params = request.GET
    media = download.media_get_servable(
        server_name=server_name, media_id=media_id,
        timeout_ms=download.parse_timeout_ms(params.get("timeout_ms")),
    )
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
