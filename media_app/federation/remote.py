"""Remote media: fetched once per (server, media ID) across every process, stored through the
upload pipeline, and served from the cache from then on.

Request side (`remote_media_get`): blocked servers are refused before anything else; a cached
failure is answered at once; otherwise the request that wins the flight fetches (in its own
process, or through a Celery task with REMOTE_FETCH_IN_WORKER) and every other requester waits
for the result (media_app.singleflight). The fetching request can answer its client from the
checked temp file while the bytes are stored beside the answer: only the waiters need the
stored copy.

The fetch (`_fetch`): the federation endpoint, signed with X-Matrix, answering multipart/mixed
(JSON, then the bytes or a Location); on M_UNRECOGNIZED, the legacy `/_matrix/media/v3/download`
endpoint. The bytes go through the upload pipeline: size cap, hashing, sniffing,
deduplication, hash-level quarantine.
"""
import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from email.message import Message
from urllib.parse import urlencode

from django.core.cache import caches
from django.db import IntegrityError, connections, transaction

from .. import errors, events, selectors, singleflight
from ..conf import media_settings
from ..models import Blob, Media, MediaOrigin, MediaStatus
from ..moderation.services import media_quarantine_on_arrival
from ..services import identifiers, sniffing
from ..services.blobs import BlobQuarantined, Received, blob_store_and_record, receive_body
from ..state import Actor, create
from . import blocklist, client, discovery, multipart, ratelimit, xmatrix

logger = logging.getLogger(__name__)

# The multipart framing and JSON part around the bytes, allowed on top of the size cap.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
ENQUEUED_MARKER_SECONDS = 10
FLIGHT_LEASE_SECONDS = 10


def flight_key(server_name: str, media_id: str) -> str:
    return f"remote-media:{server_name}/{media_id}"


def _enqueued_marker(key: str) -> str:
    return f"mediasite:fed:enqueued:{key}"


def _claim(key: str) -> singleflight.Flight | None:
    # A short lease renewed while the owner lives (where leases expire, on Redis): a crashed
    # fetching process frees its flight within FLIGHT_LEASE_SECONDS, a live one keeps it for up
    # to the fetch deadline + 30 s from its claim (room for the store after a fetch that used
    # the whole deadline).
    return singleflight.claim(key, lease=FLIGHT_LEASE_SECONDS,
                              renew_for=media_settings.REMOTE_FETCH_DEADLINE_SECONDS + 30)


def _lookup(server_name: str, media_id: str) -> Media | None:
    media = selectors.media_with_blob(server_name=server_name, media_id=media_id)
    return media if media is not None and media.status != MediaStatus.PENDING else None


# --- request side -----------------------------------------------------------------------------

def remote_media_get(*, server_name: str, media_id: str, timeout_ms: int, requester=None,
                     defer_store: bool = False) -> "Media | FetchedRemote":
    """The cached row of remote media, fetching it first if needed.

    The request that wins the flight fetches in its own process (with REMOTE_FETCH_IN_WORKER, it
    enqueues a Celery task instead); every other requester, in any process, waits for the result
    up to `timeout_ms`. With `defer_store`, a fetch made by this very request comes back as a
    FetchedRemote: complete and checked, answerable from its temp file, and stored (then
    announced to the waiters) when the caller calls `store()` or `store_soon()`.
    """
    if blocklist.is_blocked(server_name):
        raise errors.MediaServerBlocked()
    key = flight_key(server_name, media_id)
    singleflight.raise_if_failed(key)
    ratelimit.check_user_bytes(requester)
    if media_settings.REMOTE_FETCH_IN_WORKER:
        result = _get_through_worker(key, server_name, media_id, timeout_ms)
    else:
        result = _get_in_process(key, server_name, media_id, timeout_ms, defer_store)
    size = result.received.size if isinstance(result, FetchedRemote) else result.blob and result.blob.size
    if size:
        try:
            ratelimit.charge_user_bytes(requester, size)
        except BaseException:
            if isinstance(result, FetchedRemote):
                result.store()  # fetched all the same: the waiters must not be left hanging
            raise
    return result


def _get_in_process(key: str, server_name: str, media_id: str, timeout_ms: int, defer_store: bool):
    # The first requester does the work itself: a hop through the task queue would only add its
    # latency to the one request that has to wait for the origin anyway. This is run_once's loop
    # except for when the flight ends: run_once publishes as soon as compute returns, here the
    # owner's FetchedRemote publishes once stored, which its caller starts as it answers.
    # The caller has just looked the media up; it is looked up again only once this request owns
    # the flight, in case an owner before it stored it meanwhile.
    wait_until = time.monotonic() + timeout_ms / 1000
    while True:
        flight = _claim(key)
        if flight is not None:
            media = _stored_meanwhile(flight, server_name, media_id)
            if media is not None:
                return media
            fetched = _fetch_as_owner(flight, server_name, media_id, timeout_ms=timeout_ms)
            # Known quarantined content is recorded at once and never answered from the temp file.
            return fetched if defer_store and not fetched.quarantined else fetched.store()
        try:
            return singleflight.wait(key, lookup=lambda: _lookup(server_name, media_id),
                                     timeout=max(0.0, wait_until - time.monotonic()))
        except errors.FlightAbandoned:
            continue  # the owner went away without a result: take the flight over
        except errors.FlightTimedOut:
            raise errors.RemoteTimeout("The remote media is still being fetched; try again") from None


def _get_through_worker(key: str, server_name: str, media_id: str, timeout_ms: int) -> Media:
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
        return singleflight.wait(key, lookup=lambda: _lookup(server_name, media_id),
                                 timeout=timeout_ms / 1000, queued=True)
    except errors.FlightTimedOut:
        raise errors.RemoteTimeout("The remote media is still being fetched; try again") from None
    finally:
        if slot is not None:
            ratelimit.release_origin_slot(server_name, slot)


# --- the owner of a fetch ---------------------------------------------------------------------

def _stored_meanwhile(flight: singleflight.Flight, server_name: str, media_id: str) -> Media | None:
    """The media if an owner before this one stored it (the flight then ends at once), else None
    and the flight stays this owner's; a failed lookup abandons the flight."""
    try:
        media = _lookup(server_name, media_id)
    except BaseException:
        singleflight.abandon(flight)
        raise
    if media is not None:
        singleflight.publish_done(flight)
    return media


@dataclasses.dataclass(eq=False)
class FetchedRemote:
    """Remote bytes received and checked (size cap, type, pixels, quarantine), not stored yet.

    The owner of the fetch's flight holds it; `store()` (or `store_soon()`) records the media and
    ends the flight, waking every waiter. Until then the bytes are readable at `received.path`.
    """

    server_name: str
    media_id: str
    received: Received
    media_type: str
    filename: str | None
    quarantined: bool
    flight: singleflight.Flight | None = None
    _media: Media | None = dataclasses.field(default=None, init=False, repr=False)

    def store(self) -> Media:
        if self._media is not None:
            return self._media
        try:
            # Not the origin's fault: a failure to store is answered to the waiters, not cached.
            with _failures_published(self.flight, self.server_name, self.media_id, ttl=0):
                self._media = _store(self)
        finally:
            self.received.discard()
        singleflight.publish_done(self.flight)
        return self._media

    def store_soon(self, then: Callable[[Media], None] | None = None) -> threading.Thread | None:
        """Store in a thread of its own, starting now, then call `then(media)`; the thread is
        returned to be joined (None when no thread could be started and the store ran here).

        For the request that fetched: it answers its client from a file it has opened on
        `received.path` (still readable after the store has moved or removed the temp file),
        while the waiters are released as soon as the bytes are stored — not when that client
        has finished reading, which a slow client could put off for as long as it likes.
        """
        def store():
            try:
                media = self.store()
            except errors.MediasiteError:
                return  # logged and answered to the waiters by store()
            except Exception:
                logger.exception("Storing fetched remote media %s/%s failed", self.server_name, self.media_id)
                return
            if then is not None:
                try:
                    then(media)
                except Exception:
                    logger.exception("After storing fetched remote media %s/%s", self.server_name, self.media_id)

        def run():
            try:
                store()
            finally:
                connections.close_all()  # this thread's own database connections

        # Not a daemon: a worker shutting down lets the store finish rather than abandon the flight.
        thread = threading.Thread(target=run, name="remote-store")
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: store here, the flight must end either way
            store()
            return None
        return thread


@contextlib.contextmanager
def _failures_published(flight: singleflight.Flight, server_name: str, media_id: str, *, ttl: float):
    """End the flight with any failure of the block, answered to every waiter (and cached for
    `ttl` seconds); the block's exception goes on, a crash as RemoteFetchFailed."""
    try:
        yield
    except errors.MediasiteError as exc:
        logger.info("Remote fetch of %s/%s failed: %s", server_name, media_id, exc.code)
        singleflight.publish_failure(flight, exc, ttl=ttl)
        raise
    except Exception:
        # Logged here, answered as a 502: a bug must not become a 500 for the waiters, nor a
        # retry storm against the origin.
        logger.exception("Remote fetch of %s/%s crashed", server_name, media_id)
        singleflight.publish_failure(flight, errors.RemoteFetchFailed(), ttl=ttl)
        raise errors.RemoteFetchFailed() from None
    except BaseException:
        singleflight.abandon(flight)  # interrupted (shutdown): a waiter takes over
        raise


def _fetch_as_owner(flight: singleflight.Flight, server_name: str, media_id: str, *,
                    timeout_ms: int | None = None) -> FetchedRemote:
    """Fetch as the flight's owner; on failure the flight ends with it. `timeout_ms` is the
    patience of the request doing the fetch (None: a worker's, the full deadline for all)."""
    try:
        slot = ratelimit.acquire_origin_slot(server_name, hold_seconds=media_settings.REMOTE_FETCH_DEADLINE_SECONDS + 30)
    except BaseException:
        singleflight.abandon(flight)  # the origin is busy, not broken: nothing to remember
        raise
    # The client's timeout_ms bounds the wait for the origin to start answering, as the spec
    # words it; the transfer itself has the whole deadline.
    deadline = client.Deadline(media_settings.REMOTE_FETCH_DEADLINE_SECONDS,
                               first_answer_seconds=None if timeout_ms is None else max(1.0, timeout_ms / 1000))
    try:
        with _failures_published(flight, server_name, media_id, ttl=media_settings.REMOTE_FAILURE_CACHE_SECONDS):
            try:
                fetched = _fetch(server_name, media_id, deadline)
            except errors.RemoteTimeout:
                if not deadline.answered_yet:
                    # One impatient client's timeout says nothing about the origin: not cached.
                    singleflight.publish_failure(flight, errors.RemoteTimeout())
                raise
    finally:
        ratelimit.release_origin_slot(server_name, slot)
    fetched.flight = flight
    return fetched


# --- task side --------------------------------------------------------------------------------

def remote_media_fetch(*, server_name: str, media_id: str, slot: str | None = None) -> None:
    """Fetch and cache one remote media as the single owner of its flight (the Celery task's
    body, with REMOTE_FETCH_IN_WORKER)."""
    key = flight_key(server_name, media_id)
    try:
        flight = _claim(key)
        if flight is None:
            return  # another owner has it
        if _stored_meanwhile(flight, server_name, media_id) is not None:
            return
        if slot is not None:  # the requester's slot is this fetch's; the owner takes its own
            ratelimit.release_origin_slot(server_name, slot)
            slot = None
        _fetch_as_owner(flight, server_name, media_id).store()
    except errors.MediasiteError:
        return  # published to the waiters (and cached) by the owner
    finally:
        if slot is not None:
            ratelimit.release_origin_slot(server_name, slot)
        caches["federation"].delete(_enqueued_marker(key))


def _fetch(server_name: str, media_id: str, deadline: client.Deadline) -> FetchedRemote:
    identifiers.validate(server_name, media_id)
    if blocklist.is_blocked(server_name):
        raise errors.MediaServerBlocked()
    try:
        target = discovery.resolve(server_name, deadline=deadline)
        received, _content_type, filename = _download(target, server_name, media_id, deadline)
    except client.OutboundTimeout as exc:
        raise errors.RemoteTimeout() from exc
    except (client.OutboundError, multipart.MultipartError) as exc:
        # The detail (addresses, hosts) is for the operator's log, never for the client: an
        # answer naming the address a name resolved to would make this an oracle for probing.
        logger.info("Remote fetch of %s/%s: %s", server_name, media_id, exc)
        raise errors.RemoteFetchFailed() from exc
    try:
        # The remote's Content-Type is never trusted: the type comes from the bytes, as for uploads.
        media_type = sniffing.detect_media_type(received.path)
        sniffing.check_pixels(received.path, media_type, max_pixels=media_settings.MAX_IMAGE_PIXELS)
        quarantined = selectors.content_quarantined(sha256=received.sha256)
    except BaseException:
        received.discard()
        raise
    return FetchedRemote(server_name=server_name, media_id=media_id, received=received, media_type=media_type,
                         filename=filename, quarantined=quarantined)


def _received(stream, declared_length: int | None) -> Received:
    try:
        # Not synced here: the fetching request answers from the temp file first, and storing syncs it.
        return receive_body(stream=stream, declared_length=declared_length, durable=False)
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
            deadline.answered()
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
        deadline.answered()
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


def _store(fetched: FetchedRemote) -> Media:
    received = fetched.received

    def record(blob: Blob, created: bool = False) -> Media:
        try:
            with transaction.atomic():
                media = create(
                    to=MediaStatus.STORED, actor=Actor.SYSTEM, server_name=fetched.server_name,
                    media_id=fetched.media_id, blob=blob, media_type=fetched.media_type,
                    media_length=received.size, upload_name=fetched.filename, origin=MediaOrigin.REMOTE,
                )
        except IntegrityError:
            # Another owner stored it first: this one's lease lapsed mid-fetch (a Redis outage, a
            # pause longer than the lease) and a successor fetched too. Its row stands, answered
            # to this owner's requester as to everyone else's; a blob only this fetch made is
            # left unreferenced for the collector.
            stored = selectors.media_with_blob(server_name=fetched.server_name, media_id=fetched.media_id)
            if stored is None:
                raise  # not that constraint
            return stored
        events.emit(events.REMOTE_CACHED, {"media_id": fetched.media_id, "origin_server": fetched.server_name},
                    server_name=fetched.server_name)
        return media_quarantine_on_arrival(media=media, blob=blob)

    try:
        return blob_store_and_record(received=received, record=record)
    except BlobQuarantined:
        # Known, quarantined content: remember the ID against it (served as removed, never
        # fetched again) without storing the bytes a second time.
        blob = Blob.objects.get(sha256=received.sha256)
        return record(blob)


# --- thumbnails of media too large to cache ------------------------------------------------

# The origin's thumbnails are kept in the federation cache (Redis, or files in the data dir):
# small, and there is no stored original to render them from again.
ORIGIN_THUMBNAIL_CACHE_SECONDS = 24 * 3600
MAX_ORIGIN_THUMBNAIL_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class OriginThumbnail:
    data: bytes
    media_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def remote_thumbnail_get(*, server_name: str, media_id: str, width: int, height: int, method: str,
                         animated: bool, timeout_ms: int) -> OriginThumbnail:
    """The origin's own thumbnail of remote media whose original is over the size limit.

    Such media is never cached, so there is nothing to render here. The thumbnail is fetched once
    per size across every process (single flight; bounded by the same limits, counted against
    the origin's concurrent fetches), kept for ORIGIN_THUMBNAIL_CACHE_SECONDS, and what it is
    comes from its bytes: only the image types Mediasite itself produces are passed on. A
    failure is remembered like a failed fetch.
    """
    if blocklist.is_blocked(server_name):
        raise errors.MediaServerBlocked()
    key = f"remote-thumbnail:{server_name}/{media_id}/{width}x{height}/{method}/{int(animated)}"
    cache_key = "mediasite:fed:thumbnail:" + hashlib.sha256(key.encode()).hexdigest()

    def lookup() -> OriginThumbnail | None:
        cached = caches["federation"].get(cache_key)
        return OriginThumbnail(*cached) if cached is not None else None

    def compute() -> OriginThumbnail:
        thumbnail = _fetch_origin_thumbnail(server_name, media_id, width, height, method, animated, timeout_ms)
        caches["federation"].set(cache_key, (thumbnail.data, thumbnail.media_type), ORIGIN_THUMBNAIL_CACHE_SECONDS)
        return thumbnail

    patience = max(1.0, timeout_ms / 1000)
    try:
        return singleflight.run_once(key, lookup=lookup, compute=compute, timeout=patience,
                                     lease=media_settings.REMOTE_FETCH_DEADLINE_SECONDS + 30,
                                     failure_ttl=media_settings.REMOTE_FAILURE_CACHE_SECONDS)
    except errors.FlightTimedOut:
        raise errors.RemoteTimeout("The remote thumbnail is still being fetched; try again") from None


def _fetch_origin_thumbnail(server_name, media_id, width, height, method, animated, timeout_ms) -> OriginThumbnail:
    from ..services.thumbnails import THUMBNAILABLE_TYPES

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
        if received.size > MAX_ORIGIN_THUMBNAIL_BYTES:
            raise errors.RemoteFetchFailed("The remote server's thumbnail is too large")
        media_type = sniffing.detect_media_type(received.path)
        if media_type not in THUMBNAILABLE_TYPES:
            raise errors.RemoteFetchFailed("The remote server's thumbnail is not an image")
        sniffing.check_pixels(received.path, media_type, max_pixels=media_settings.MAX_IMAGE_PIXELS)
        with open(received.path, "rb") as fh:
            return OriginThumbnail(fh.read(), media_type)
    finally:
        received.discard()
