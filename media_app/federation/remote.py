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
deduplication, hash-level quarantine. Media of a known length of at least STREAM_FROM_BYTES is
answered to the request that fetches it while it arrives (StreamedRemote).
"""
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
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
from ..services.blobs import BlobQuarantined, BodyReceiver, Received, blob_store_and_record, receive_body
from ..state import Actor, create
from . import blocklist, client, discovery, multipart, ratelimit, xmatrix

logger = logging.getLogger(__name__)

# The multipart framing and JSON part around the bytes, allowed on top of the size cap.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
ENQUEUED_MARKER_SECONDS = 10
FLIGHT_LEASE_SECONDS = 10
# A first fetch of media declared at least this long is answered while it arrives; a smaller
# one once it is received and checked (its answer then carries the hash as ETag).
STREAM_FROM_BYTES = 1 << 20
# What is read of such media before its answer starts: enough for a type's signature and an
# image's header (which are then decided on these bytes, see StreamedRemote).
HEAD_BYTES = 256 << 10
TAIL_READ_BYTES = 256 << 10


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
    FetchedRemote (complete and checked, answerable from its temp file) or a StreamedRemote
    (answerable as it arrives), stored (then announced to the waiters) when the caller calls
    `store()` or `store_soon()`.
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
    size = result.blob and result.blob.size if isinstance(result, Media) else result.size
    if size:
        try:
            ratelimit.charge_user_bytes(requester, size)
        except BaseException:
            if not isinstance(result, Media):
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
            fetched = _fetch_as_owner(flight, server_name, media_id, timeout_ms=timeout_ms, may_stream=defer_store)
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

    streamed = False

    server_name: str
    media_id: str
    received: Received
    media_type: str
    filename: str | None
    quarantined: bool
    flight: singleflight.Flight | None = None
    _media: Media | None = dataclasses.field(default=None, init=False, repr=False)

    @property
    def size(self) -> int:
        return self.received.size

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
        return _store_in_thread(self, then)


class StreamedRemote:
    """A first fetch answered to its requester while the bytes arrive: media of a declared
    length of at least STREAM_FROM_BYTES whose first HEAD_BYTES have been read.

    A length inferred from a multipart answer's total (`_Body.expected`) is answered the same
    way, but it is only a guess: the part is read to its delimiter, and a part of another length
    is cut short for this client and stored all the same. No quarantined content may lie within
    MULTIPART_OVERHEAD_BYTES of the guess, and until the whole is checked the answer also stays
    that far behind what has arrived: a part shorter than the guess by more than that (an
    epilogue of that size after the closing delimiter, which no server software writes) never
    reaches the client whole.

    Answering before the whole is received and checked is safe because each check's outcome is
    known first. The type comes from the head, for the types whose signature decides them
    (sniffing.HEAD_DECIDED_TYPES); an image's pixel count from the header in the head. Content
    under hash-level quarantine has a quarantined content's size, and no quarantined content has
    the declared length (checked before this exists); bytes short of or beyond that length fail
    the fetch, and the answer is cut short: its last byte is held back until the whole has been
    received and checked. (An origin could send a truncated copy of quarantined content under a
    true length: that no hash can catch, streamed or not.) The size cap applies to the declared
    length before a byte is read. At the end the hash and the pixels are checked again before the
    last byte goes out, and the media is recorded with the type its head told.

    `store_soon()` receives in a thread of its own into a temp file, which the answer (`tail()`)
    reads behind it: a slow client does not slow the fetch, and the waiters are released once
    the bytes are stored, not once that client has read them.
    """

    streamed = True
    quarantined = False

    def __init__(self, *, server_name: str, media_id: str, body: "_Body", media_type: str):
        self.server_name, self.media_id, self.media_type = server_name, media_id, media_type
        self.filename = body.filename
        self.size = body.length if body.length is not None else body.expected
        self._exact = body.length is not None
        self.flight: singleflight.Flight | None = None
        self.slot: str | None = None  # the origin slot, released when the receive ends
        self._body = body
        self._receiver = BodyReceiver(on_written=self._advance)
        self._written = 0
        self._whole = False  # all received, and the checks passed: the last byte may go
        self._ended = False
        self._changed = threading.Condition()
        self._media: Media | None = None

    def _advance(self, count: int) -> None:
        with self._changed:
            self._written += count
            self._changed.notify_all()

    def store(self) -> Media:
        """Receive the rest, check and store it; a failure ends the flight with it."""
        if self._media is not None:
            return self._media
        try:
            with _failures_published(self.flight, self.server_name, self.media_id,
                                     ttl=media_settings.REMOTE_FAILURE_CACHE_SECONDS):
                with _origin_errors(self.server_name, self.media_id):
                    received = _received(self._body, receiver=self._receiver)
                # The type told by the head is the one answered, and so the one recorded.
                fetched = _checked(self.server_name, self.media_id, received, self._body.filename,
                                   media_type=self.media_type)
            # Cut short: content quarantined since the fetch began, or a length inferred from the
            # framing that the part did not have (the media is stored all the same).
            self._whole = received.size == self.size and not fetched.quarantined
        finally:
            self._body.close()
            with self._changed:
                self._ended = True
                self._changed.notify_all()
            if self.slot is not None:
                ratelimit.release_origin_slot(self.server_name, self.slot)
                self.slot = None
        fetched.flight = self.flight
        self._media = fetched.store()
        return self._media

    def store_soon(self, then: Callable[[Media], None] | None = None) -> threading.Thread | None:
        """Receive and store in a thread of its own (see FetchedRemote.store_soon)."""
        return _store_in_thread(self, then)

    def tail(self) -> "_Tail":
        """The answer's body: the bytes as they are received. Taken before `store_soon()`, which
        may move the temp file away once it has it all."""
        return _Tail(self, os.open(self._receiver.path, os.O_RDONLY))

    def _sendable(self) -> int:
        if self._whole:
            return min(self._written, self.size)
        limit = min(self._written, self.size - 1)
        return limit if self._exact else max(0, min(limit, self._written - MULTIPART_OVERHEAD_BYTES))

    def _chunks(self, fd: int):
        sent = 0
        patience = media_settings.REMOTE_FETCH_DEADLINE_SECONDS + 30
        while sent < self.size:
            with self._changed:
                if not self._changed.wait_for(lambda: self._sendable() > sent or self._ended, timeout=patience):
                    raise errors.RemoteTimeout()
                available = self._sendable()
            if available <= sent:  # the receive ended short or failed its checks: so does the answer
                raise errors.RemoteFetchFailed("The remote media could not be fetched whole")
            data = os.pread(fd, min(available - sent, TAIL_READ_BYTES), sent)
            if not data:
                raise errors.RemoteFetchFailed("The received bytes are gone")
            sent += len(data)
            yield data


class _Tail:
    """A StreamedRemote's bytes for a streaming response. Its close() (the response's, once the
    server is done with it) also waits for the thread receiving and storing them, as
    api.serving._JoinOnClose does for a FetchedRemote: the worker thread takes no other request
    before the flight has ended on the handle it claimed it with."""

    thread: threading.Thread | None = None

    def __init__(self, remote: StreamedRemote, fd: int):
        self._fd = fd
        self._chunks = remote._chunks(fd)

    def __iter__(self):
        return self._chunks

    def close(self) -> None:
        try:
            self._chunks.close()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        finally:
            thread, self.thread = self.thread, None
            if thread is not None:
                thread.join()


def _store_in_thread(pending: "FetchedRemote | StreamedRemote", then: Callable[[Media], None] | None):
    def store():
        try:
            media = pending.store()
        except errors.MediasiteError:
            return  # logged and answered to the waiters by store()
        except Exception:
            logger.exception("Storing fetched remote media %s/%s failed", pending.server_name, pending.media_id)
            return
        if then is not None and not media.is_quarantined:
            try:
                then(media)
            except Exception:
                logger.exception("After storing fetched remote media %s/%s", pending.server_name, pending.media_id)

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
                    timeout_ms: int | None = None, may_stream: bool = False) -> "FetchedRemote | StreamedRemote":
    """Fetch as the flight's owner; on failure the flight ends with it. `timeout_ms` is the
    patience of the request doing the fetch (None: a worker's, the full deadline for all).
    With `may_stream`, large media may come back as a StreamedRemote, which holds the origin
    slot until it has received everything."""
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
                fetched = _fetch(server_name, media_id, deadline, may_stream=may_stream)
            except errors.RemoteTimeout:
                if not deadline.answered_yet:
                    # One impatient client's timeout says nothing about the origin: not cached.
                    singleflight.publish_failure(flight, errors.RemoteTimeout())
                raise
        if fetched.streamed:
            fetched.slot, slot = slot, None
    finally:
        if slot is not None:
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


def _fetch(server_name: str, media_id: str, deadline: client.Deadline, *,
           may_stream: bool = False) -> "FetchedRemote | StreamedRemote":
    identifiers.validate(server_name, media_id)
    if blocklist.is_blocked(server_name):
        raise errors.MediaServerBlocked()
    with _origin_errors(server_name, media_id):
        target = discovery.resolve(server_name, deadline=deadline)
        body = _open(target, server_name, media_id, deadline)
        streamed = None
        try:
            streamed = _streamed(server_name, media_id, body) if may_stream else None
            if streamed is not None:
                return streamed
            received = _received(body)
        finally:
            if streamed is None:
                body.close()
    return _checked(server_name, media_id, received, body.filename)


def _streamed(server_name: str, media_id: str, body: "_Body") -> StreamedRemote | None:
    """A StreamedRemote for this answer when every check can be decided before the bytes are all
    here (see StreamedRemote); else None, with the body as it was."""
    length = body.length if body.length is not None else body.expected
    if length is None or not STREAM_FROM_BYTES <= length <= media_settings.MAX_UPLOAD_SIZE_BYTES:
        return None
    # An inferred length may be off by what the framing holds beyond what was assumed: no
    # quarantined content may be near it either.
    slack = 0 if body.length is not None else MULTIPART_OVERHEAD_BYTES
    if selectors.quarantined_content_of_size(low=length - slack, high=length + slack):
        return None
    head = _read_up_to(body.stream, HEAD_BYTES)
    body.unread(head)
    media_type = sniffing.media_type_of_head(head)
    if media_type is None:
        return None
    if not sniffing.pixels_of_head_allowed(head, media_type, max_pixels=media_settings.MAX_IMAGE_PIXELS):
        return None
    return StreamedRemote(server_name=server_name, media_id=media_id, body=body, media_type=media_type)


def _read_up_to(stream, amount: int) -> bytes:
    parts, got = [], 0
    while got < amount and (data := stream.read(amount - got)):
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _checked(server_name: str, media_id: str, received: Received, filename: str | None, *,
             media_type: str | None = None) -> FetchedRemote:
    """What the received bytes are, from the bytes (the remote's Content-Type is never trusted,
    as for uploads), and whether they may be kept; the temp file is discarded if not. A
    `media_type` already decided from the head is not decided again (libmagic over the whole
    file is the slow part); the pixels are checked again all the same, which for the types a
    head decides reads only their header."""
    try:
        if media_type is None:
            media_type = sniffing.detect_media_type(received.path)
        sniffing.check_pixels(received.path, media_type, max_pixels=media_settings.MAX_IMAGE_PIXELS)
        quarantined = selectors.content_quarantined(sha256=received.sha256)
    except BaseException:
        received.discard()
        raise
    return FetchedRemote(server_name=server_name, media_id=media_id, received=received, media_type=media_type,
                         filename=filename, quarantined=quarantined)


@contextlib.contextmanager
def _origin_errors(server_name: str, media_id: str, what: str = "Remote fetch"):
    """The outbound client's failures as the errors a client is answered."""
    try:
        yield
    except client.OutboundTimeout as exc:
        raise errors.RemoteTimeout() from exc
    except (client.OutboundError, multipart.MultipartError) as exc:
        # The detail (addresses, hosts) is for the operator's log, never for the client: an
        # answer naming the address a name resolved to would make this an oracle for probing.
        logger.info("%s of %s/%s: %s", what, server_name, media_id, exc)
        raise errors.RemoteFetchFailed() from exc


class _Prefixed:
    """A stream with bytes already read from it put back in front."""

    def __init__(self, head: bytes, stream):
        self._head, self._stream = head, stream

    def read(self, amount: int) -> bytes:
        if self._head:
            out, self._head = self._head[:amount], self._head[amount:]
            return out
        return self._stream.read(amount)


@dataclasses.dataclass
class _Body:
    """An origin's answer, open at the first byte of the media."""

    stream: object  # read(n)
    length: int | None  # the media's own length, where the origin declared it (held to)
    filename: str | None
    response: client.Response
    # Else, for a multipart answer of a declared total: the length the part has if the body
    # ends with its closing delimiter alone, as Synapse's and this server's answers do. Only a
    # guess: the part is read to its delimiter whatever it is.
    expected: int | None = None

    def unread(self, head: bytes) -> None:
        if head:
            self.stream = _Prefixed(head, self.stream)

    def close(self) -> None:
        self.response.close()


def _received(body: _Body, *, receiver: BodyReceiver | None = None) -> Received:
    try:
        # Not synced here: the fetching request answers from the temp file first, and storing syncs it.
        received = receive_body(stream=body.stream, declared_length=body.length, durable=False, receiver=receiver)
    except errors.UploadIncomplete as exc:
        cause = exc.__cause__
        if isinstance(cause, client.OutboundTimeout):
            raise cause from None
        raise errors.RemoteFetchFailed("The remote server ended the transfer early") from None
    # A declared length is the whole of it: a multipart part must end there (a plain body's
    # Content-Length is held to by the HTTP client).
    if body.length is not None and body.stream.read(1):
        received.discard()
        raise errors.RemoteFetchFailed("The remote server sent more than it declared")
    return received


def _open(target: client.Target, server_name: str, media_id: str, deadline: client.Deadline,
          *, kind: str = "download", query: str = "") -> _Body:
    """The media's bytes, open, from the federation endpoint or the legacy one; `kind` is
    "download" or "thumbnail" (with its `query`). The caller closes it."""
    path = f"/_matrix/federation/v1/media/{kind}/{media_id}" + (f"?{query}" if query else "")
    auth = xmatrix.authorization_header(method="GET", uri=path, destination=server_name)
    response = client.request("GET", target, path, headers={"Authorization": auth}, deadline=deadline)
    location = None
    try:
        if response.status == 200:
            deadline.answered()
            declared = response.content_length
            if declared is not None and declared > media_settings.MAX_UPLOAD_SIZE_BYTES + MULTIPART_OVERHEAD_BYTES:
                raise errors.MediaTooLarge()
            _metadata, part = multipart.read_media_response(response, response.header("Content-Type"))
            location = part.headers.get("location")
            if not location:
                expected = None if declared is None else declared - part.offset - len(part.closing)
                return _Body(part.stream, client.parse_length(part.headers.get("content-length")),
                             _filename(part.headers.get("content-disposition")), response,
                             expected=expected if expected is not None and expected >= 0 else None)
        else:
            errcode = _errcode(response)
            if not (errcode == "M_UNRECOGNIZED" and response.status in (400, 404)
                    or errcode is None and response.status in (404, 405, 501)):
                _raise_for(response.status, errcode)
    except BaseException:
        response.close()
        raise
    response.close()
    if location:
        # Wherever the bytes are kept (a CDN, a bucket): its error bodies are not Matrix's.
        return _plain_body(client.get_url(location, deadline=deadline), matrix_errors=False)
    legacy = (f"/_matrix/media/v3/{kind}/{server_name}/{media_id}?"
              + (f"{query}&" if query else "") + "allow_remote=false&allow_redirect=true")
    return _plain_body(client.request("GET", target, legacy, deadline=deadline, follow_redirects=True))


def _plain_body(response: client.Response, *, matrix_errors: bool = True) -> _Body:
    try:
        if response.status != 200:
            _raise_for(response.status, _errcode(response) if matrix_errors else None)
    except BaseException:
        response.close()
        raise
    response.deadline.answered()
    return _Body(response, response.content_length, _filename(response.header("Content-Disposition")), response)


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
        with _origin_errors(server_name, media_id, "Remote thumbnail"):
            deadline = client.Deadline(min(media_settings.REMOTE_FETCH_DEADLINE_SECONDS, max(1.0, timeout_ms / 1000)))
            target = discovery.resolve(server_name, deadline=deadline)
            body = _open(target, server_name, media_id, deadline, kind="thumbnail", query=query)
            try:
                received = _received(body)
            finally:
                body.close()
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
