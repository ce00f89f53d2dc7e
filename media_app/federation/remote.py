"""Remote media: fetched once (a Celery task is the single owner of each fetch), stored through
the upload pipeline, and served from the cache from then on.

Request side (`remote_media_get`): blocked servers are refused before anything else; a cached
failure is answered at once; otherwise the request enqueues the fetch task unless one is in
flight and waits for the result with every other requester (media_app.singleflight).

Task side (`remote_media_fetch`): the federation endpoint, signed with X-Matrix, answering
multipart/mixed (JSON, then the bytes or a Location); on M_UNRECOGNIZED, the legacy
`/_matrix/media/v3/download` endpoint. The bytes go through the upload pipeline: size cap,
hashing, sniffing, deduplication, hash-level quarantine.
"""
import json
import logging
from email.message import Message
from urllib.parse import urlencode

from django.core.cache import caches

from .. import errors, events, singleflight
from ..conf import media_settings
from ..models import Blob, Media, MediaOrigin, MediaStatus
from ..services import identifiers, sniffing
from ..services.blobs import BlobQuarantined, Received, blob_store_and_record, receive_body
from ..state import Actor, create
from . import blocklist, client, discovery, multipart, ratelimit, xmatrix

logger = logging.getLogger(__name__)

# The multipart framing and JSON part around the bytes, allowed on top of the size cap.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
ENQUEUED_MARKER_SECONDS = 10


def flight_key(server_name: str, media_id: str) -> str:
    return f"remote-media:{server_name}/{media_id}"


def _enqueued_marker(key: str) -> str:
    return f"mediasite:fed:enqueued:{key}"


def _lookup(server_name: str, media_id: str) -> Media | None:
    media = Media.objects.select_related("blob").filter(server_name=server_name, media_id=media_id).first()
    return media if media is not None and media.status != MediaStatus.PENDING else None


# --- request side -----------------------------------------------------------------------------

def remote_media_get(*, server_name: str, media_id: str, timeout_ms: int, requester=None) -> Media:
    """The cached row of remote media, fetching it first if needed (waits up to timeout_ms)."""
    if blocklist.is_blocked(server_name):
        raise errors.MediaServerBlocked()
    key = flight_key(server_name, media_id)
    singleflight.raise_if_failed(key)
    ratelimit.check_user_bytes(requester)
    slot = None
    # One requester enqueues; the others see the marker (or the task's flight) and only wait.
    # The marker is short-lived: a task lost before it starts is enqueued again by the next
    # requester, and a duplicate task finds the flight taken or the media cached.
    if not singleflight.in_flight(key) and caches["federation"].add(_enqueued_marker(key), 1, ENQUEUED_MARKER_SECONDS):
        from .tasks import fetch_remote_media

        hold = media_settings.REMOTE_FETCH_DEADLINE_SECONDS + 30
        try:
            slot = ratelimit.acquire_origin_slot(server_name, hold_seconds=hold)
            fetch_remote_media.delay(server_name, media_id, slot)
        except Exception:
            caches["federation"].delete(_enqueued_marker(key))
            if slot is not None:
                ratelimit.release_origin_slot(server_name, slot)
            raise
    try:
        media = singleflight.wait(key, lookup=lambda: _lookup(server_name, media_id),
                                  timeout=timeout_ms / 1000, queued=True)
    except errors.FlightTimedOut:
        raise errors.RemoteTimeout("The remote media is still being fetched; try again") from None
    finally:
        if slot is not None:
            ratelimit.release_origin_slot(server_name, slot)
    if media.blob is not None:
        ratelimit.charge_user_bytes(requester, media.blob.size)
    return media


# --- task side --------------------------------------------------------------------------------

def remote_media_fetch(*, server_name: str, media_id: str, slot: str | None = None) -> None:
    """Fetch and cache one remote media, as the single owner of its flight."""
    key = flight_key(server_name, media_id)
    flight = singleflight.claim(key, lease=media_settings.REMOTE_FETCH_DEADLINE_SECONDS + 30)
    if flight is None:
        return  # another task owns it
    try:
        if _lookup(server_name, media_id) is None:
            _fetch_and_store(server_name, media_id)
    except errors.MediasiteError as exc:
        logger.info("Remote fetch of %s/%s failed: %s", server_name, media_id, exc.code)
        singleflight.publish_failure(flight, exc, ttl=media_settings.REMOTE_FAILURE_CACHE_SECONDS)
        return
    except Exception:
        # Logged here, answered to the waiters as a 502: a bug must not become a 500 for them,
        # nor a retry storm against the origin.
        logger.exception("Remote fetch of %s/%s crashed", server_name, media_id)
        singleflight.publish_failure(flight, errors.RemoteFetchFailed(), ttl=media_settings.REMOTE_FAILURE_CACHE_SECONDS)
        return
    finally:
        if slot is not None:
            ratelimit.release_origin_slot(server_name, slot)
        caches["federation"].delete(_enqueued_marker(key))
    singleflight.publish_done(flight)


def _fetch_and_store(server_name: str, media_id: str) -> Media:
    identifiers.validate(server_name, media_id)
    if blocklist.is_blocked(server_name):
        raise errors.MediaServerBlocked()
    deadline = client.Deadline(media_settings.REMOTE_FETCH_DEADLINE_SECONDS)
    try:
        target = discovery.resolve(server_name, deadline=deadline)
        received, content_type, filename = _download(target, server_name, media_id, deadline)
    except client.OutboundTimeout as exc:
        raise errors.RemoteTimeout() from exc
    except (client.OutboundError, multipart.MultipartError) as exc:
        # The detail (addresses, hosts) is for the operator's log, never for the client: an
        # answer naming the address a name resolved to would make this an oracle for probing.
        logger.info("Remote fetch of %s/%s: %s", server_name, media_id, exc)
        raise errors.RemoteFetchFailed() from exc
    try:
        return _store(server_name, media_id, received, filename)
    finally:
        received.discard()


def _received(stream, declared_length: int | None) -> Received:
    try:
        return receive_body(stream=stream, declared_length=declared_length)
    except errors.UploadIncomplete as exc:
        cause = exc.__cause__
        if isinstance(cause, client.OutboundTimeout):
            raise cause from None
        raise errors.RemoteFetchFailed("The remote server ended the transfer early") from None


def _download(target: client.Target, server_name: str, media_id: str, deadline: client.Deadline,
              *, kind: str = "download", query: str = ""):
    """(Received, content type, filename) from the federation endpoint or the legacy one;
    `kind` is "download" or "thumbnail" (with its `query`)."""
    path = f"/_matrix/federation/v1/media/{kind}/{media_id}" + (f"?{query}" if query else "")
    auth = xmatrix.authorization_header(method="GET", uri=path, destination=server_name)
    with client.request("GET", target, path, headers={"Authorization": auth}, deadline=deadline) as response:
        if response.status == 200:
            declared = response.content_length
            if declared is not None and declared > media_settings.MAX_UPLOAD_SIZE_BYTES + MULTIPART_OVERHEAD_BYTES:
                raise errors.MediaTooLarge()
            _metadata, part = multipart.read_media_response(response, response.header("Content-Type"))
            location = part.headers.get("location")
            if location:
                return _download_url(location, deadline)
            received = _received(part.stream, None)
            return received, part.headers.get("content-type"), _filename(part.headers.get("content-disposition"))
        errcode = _errcode(response)
        if not (errcode == "M_UNRECOGNIZED" and response.status in (400, 404)
                or errcode is None and response.status in (404, 405, 501)):
            _raise_for(response.status, errcode)
    legacy = (f"/_matrix/media/v3/{kind}/{server_name}/{media_id}?"
              + (f"{query}&" if query else "") + "allow_remote=false&allow_redirect=true")
    with client.request("GET", target, legacy, deadline=deadline, follow_redirects=True) as response:
        if response.status != 200:
            _raise_for(response.status, _errcode(response))
        return _body_of(response)


def _download_url(url: str, deadline: client.Deadline):
    with client.get_url(url, deadline=deadline) as response:
        if response.status != 200:
            _raise_for(response.status, None)
        return _body_of(response)


def _body_of(response: client.Response):
    received = _received(response, response.content_length)
    return received, response.header("Content-Type"), _filename(response.header("Content-Disposition"))


def _errcode(response: client.Response) -> str | None:
    try:
        body = json.loads(response.read_all(MAX_ERROR_BODY_BYTES))
    except (ValueError, client.OutboundError):
        return None
    return body.get("errcode") if isinstance(body, dict) else None


def _raise_for(status: int, errcode: str | None):
    if status == 404 or errcode == "M_NOT_FOUND":
        raise errors.MediaNotFound()
    if errcode == "M_TOO_LARGE" or status == 413:
        raise errors.MediaTooLarge()
    if status == 504:
        raise errors.RemoteTimeout()
    raise errors.RemoteFetchFailed(f"The remote server answered {status}")


def _filename(disposition: str | None) -> str | None:
    if not disposition:
        return None
    msg = Message()
    msg["Content-Disposition"] = disposition
    name = msg.get_filename()
    return identifiers.clean_upload_name(name) if name else None


def _store(server_name: str, media_id: str, received: Received, filename: str | None) -> Media:
    # The remote's Content-Type is never trusted: the type comes from the bytes, as for uploads.
    media_type = sniffing.detect_media_type(received.path)
    sniffing.check_pixels(received.path, media_type, max_pixels=media_settings.MAX_IMAGE_PIXELS)

    def record(blob: Blob, created: bool = False) -> Media:
        media = create(
            to=MediaStatus.STORED, actor=Actor.SYSTEM, server_name=server_name, media_id=media_id,
            blob=blob, media_type=media_type, media_length=received.size, upload_name=filename,
            origin=MediaOrigin.REMOTE,
        )
        events.emit(events.REMOTE_CACHED, {"media_id": media_id, "origin_server": server_name},
                    server_name=server_name)
        return media

    try:
        return blob_store_and_record(received=received, record=record)
    except BlobQuarantined:
        # Known, quarantined content: remember the ID against it (served as removed, never
        # fetched again) without storing the bytes a second time.
        blob = Blob.objects.get(sha256=received.sha256)
        return record(blob)


# --- thumbnails of media too large to cache ------------------------------------------------

def remote_thumbnail_open(*, server_name: str, media_id: str, width: int, height: int, method: str,
                          animated: bool, timeout_ms: int):
    """(open file, media type, size, sha256) of the origin's own thumbnail.

    Only for remote media whose original is over the size limit: such media is never cached, so
    there is nothing to render here. The thumbnail is fetched for this request (bounded by the
    same limits, counted against the origin's concurrent fetches) and not stored; what it is
    comes from its bytes, and only the image types Mediasite itself produces are passed on.
    """
    from ..services.thumbnails import THUMBNAILABLE_TYPES

    if blocklist.is_blocked(server_name):
        raise errors.MediaServerBlocked()
    slot = ratelimit.acquire_origin_slot(server_name, hold_seconds=media_settings.REMOTE_FETCH_DEADLINE_SECONDS)
    query = urlencode({"width": width, "height": height, "method": method, "animated": str(animated).lower()})
    try:
        deadline = client.Deadline(min(media_settings.REMOTE_FETCH_DEADLINE_SECONDS, max(1.0, timeout_ms / 1000)))
        target = discovery.resolve(server_name, deadline=deadline)
        received, _type, _name = _download(target, server_name, media_id, deadline, kind="thumbnail", query=query)
    except client.OutboundTimeout as exc:
        raise errors.RemoteTimeout() from exc
    except (client.OutboundError, multipart.MultipartError) as exc:
        logger.info("Remote thumbnail of %s/%s: %s", server_name, media_id, exc)
        raise errors.RemoteFetchFailed() from exc
    finally:
        ratelimit.release_origin_slot(server_name, slot)
    try:
        media_type = sniffing.detect_media_type(received.path)
        if media_type not in THUMBNAILABLE_TYPES:
            raise errors.RemoteFetchFailed("The remote server's thumbnail is not an image")
        sniffing.check_pixels(received.path, media_type, max_pixels=media_settings.MAX_IMAGE_PIXELS)
        fh = open(received.path, "rb")
    finally:
        received.discard()  # the open file stays readable until the response closes it
    return fh, media_type, received.size, received.sha256
