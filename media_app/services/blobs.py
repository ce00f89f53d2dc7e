"""Content-addressed bytes: receiving a body to a temp file, and storing it once per SHA-256.

Shared by uploads (originals) and thumbnails (renditions). Order of durability
(docs/ARCHITECTURE.md, "Data model"):
the bytes are fsync'd and renamed into place before the rows that point at them commit, so a
crash leaves at worst an orphan file for the garbage collector, never a row without a file.
"""
import hashlib
import logging
import os
import queue
import threading
from dataclasses import dataclass

from django.db import DatabaseError, IntegrityError, connection, transaction

from .. import errors, storage
from ..conf import media_settings
from ..models import Blob, BlobIntegrity
from ..moderation.services import content_is_quarantined

logger = logging.getLogger(__name__)


class BlobQuarantined(Exception):
    """A rendition's bytes match quarantined content: it is not stored. (Media whose bytes are
    quarantined is recorded, and arrives quarantined: see blob_store_and_record.)"""


@dataclass
class Received:
    path: str
    sha256: str
    size: int
    temp: object = None  # the storage temp file, locked (in use) until discarded
    durable: bool = True  # fsync'd; blob_store_and_record syncs it first otherwise

    def discard(self) -> None:
        if self.temp is not None:
            self.temp.discard()
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _PipelinedSha256:
    """SHA-256 on another core while the request thread receives and writes the body.

    SHA-256 is slower than receiving or writing the same bytes, so on one thread it would set
    the pace of a big upload; hashlib releases the GIL, so a second thread takes it off the
    critical path. The first INLINE_BYTES are hashed in the calling thread: for a small body
    (one arriving in many small reads, as from a socket) a thread and its hand-offs cost more
    than the hashing. At most QUEUE_DEPTH chunks wait, so memory stays bounded (see
    receive_body for the total).
    """

    QUEUE_DEPTH = 4
    INLINE_BYTES = 1 << 20

    def __init__(self):
        self._digest = hashlib.sha256()
        self._inline = 0
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        if self._thread is None:
            if self._inline + len(data) <= self.INLINE_BYTES:
                self._inline += len(data)
                self._digest.update(data)
                return
            self._queue = queue.Queue(self.QUEUE_DEPTH)
            self._thread = threading.Thread(target=self._run, name="upload-sha256", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._digest.update(chunk)

    def hexdigest(self) -> str:
        self.close()
        return self._digest.hexdigest()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class BodyReceiver:
    """One incoming file: the size cut-off, hashing and the temp file, fed chunk by chunk.

    A raw body and each `file` part of a multipart body go through this same receiver, so both
    kinds of upload are cut off, hashed and stored alike.

    Chunks smaller than COALESCE_BYTES are gathered up to that size before they are hashed and
    written: a body that arrives in many small reads (a remote server's answer over TLS comes
    a record of a few KiB at a time) would otherwise pay a write and a hand-off to the hashing
    thread per record, which cost more than the bytes themselves. What is being gathered stays
    under COALESCE_BYTES plus one read; _PipelinedSha256 bounds the chunks waiting to be hashed.
    """

    COALESCE_BYTES = 256 << 10

    def __init__(self, *, on_written=None):
        """`on_written(n)` is called each time the temp file holds n more bytes (its writes
        are unbuffered: a reader of `path` can read them at once)."""
        self._limit = media_settings.MAX_UPLOAD_SIZE_BYTES
        self._digest = _PipelinedSha256()
        self._tmp = storage.new_temp_file()
        self._gathered = bytearray()
        self._on_written = on_written
        self.size = 0

    @property
    def path(self) -> str:
        return self._tmp.name

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            raise errors.MediaTooLarge()
        if self._gathered or len(data) < self.COALESCE_BYTES:
            self._gathered += data
            if len(self._gathered) < self.COALESCE_BYTES:
                return
            # A new buffer rather than clearing this one: the hashing thread may still read it.
            data, self._gathered = self._gathered, bytearray()
        self._put(data)

    def _put(self, data) -> None:
        self._digest.update(data)
        self._tmp.write(data)
        if self._on_written is not None:
            self._on_written(len(data))

    def finish(self, *, durable: bool = True) -> Received:
        try:
            if self._gathered:
                data, self._gathered = self._gathered, bytearray()
                self._put(data)
            self._tmp.flush()
            if durable:
                os.fsync(self._tmp.fileno())
            self._tmp.close()
        except BaseException:
            self.abort()
            raise
        return Received(path=self._tmp.name, sha256=self._digest.hexdigest(), size=self.size, temp=self._tmp,
                        durable=durable)

    def abort(self) -> None:
        self._digest.close()
        self._tmp.discard()


def read_chunks(*, stream, declared_length: int | None):
    """The request body in chunks of at most UPLOAD_CHUNK_BYTES; UploadIncomplete if the client
    sends fewer bytes than it declared or goes away mid-body."""
    chunk_size = media_settings.UPLOAD_CHUNK_BYTES
    remaining = declared_length
    received = 0
    while remaining is None or remaining > 0:
        want = chunk_size if remaining is None else min(chunk_size, remaining)
        try:
            data = stream.read(want)
        except Exception as exc:  # the client went away mid-body (server-specific errors)
            raise errors.UploadIncomplete() from exc
        if not data:
            break
        received += len(data)
        if remaining is not None:
            remaining -= len(data)
        yield data
    if declared_length is not None and received < declared_length:
        raise errors.UploadIncomplete()


def receive_body(*, stream, declared_length: int | None, durable: bool = True,
                 receiver: BodyReceiver | None = None) -> Received:
    """Copy a raw request body to a temp file, hashing as it goes.

    A declared Content-Length over the limit is refused before a byte is read; a body without
    one (chunked) is cut off as soon as it passes the limit. With `durable=False` the fsync is
    left to blob_store_and_record, for bytes that may be used before they are stored.
    `receiver` is a BodyReceiver of the caller's (one that reports its writes), else a new one.
    """
    if declared_length is not None and declared_length > media_settings.MAX_UPLOAD_SIZE_BYTES:
        if receiver is not None:
            receiver.abort()
        raise errors.MediaTooLarge()
    receiver = receiver or BodyReceiver()
    try:
        for data in read_chunks(stream=stream, declared_length=declared_length):
            receiver.write(data)
    except BaseException:
        receiver.abort()
        raise
    return receiver.finish(durable=durable)


def received_from_bytes(data: bytes) -> Received:
    """A Received for bytes produced in this process (a rendered thumbnail)."""
    tmp = storage.new_temp_file()
    try:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
        tmp.close()
    except BaseException:
        tmp.discard()
        raise
    return Received(path=tmp.name, sha256=hashlib.sha256(data).hexdigest(), size=len(data), temp=tmp)


def blob_store_and_record(*, received: Received, record, thumbnail: bool = False):
    """Find or create the Blob for these bytes and return `record(blob, created)`, called in
    the same transaction.

    Bytes under hash-level quarantine are stored and recorded like any others, on a Blob that
    is (or, when the ban outlived the old row, is created) quarantined, so the serving path
    hides them; the caller turns the new media's status to quarantined
    (moderation.services.media_quarantine_on_arrival). Renditions of quarantined bytes raise
    BlobQuarantined instead.

    Deduplication is race-free: the Blob row is locked (so a garbage collector cannot delete it
    under us) or created under the UNIQUE sha256 constraint; a racer that loses the insert
    retries and reuses the winner's row. The file is written before the Blob row commits; a lost
    race leaves the same bytes at the same key, so nothing needs undoing.

    The collector (services.gc) deletes files only under the lock of a row for the same
    content. So: a row found locked but doomed (or flagged missing/corrupt by the scrub) gets
    our bytes stored again before reuse; a row that vanished means its file may be gone too, so
    we store afresh; and after inserting a new row we check our file is still there, because a
    collector may have removed that key just before our row existed. The temp file is kept
    (`keep_source`) until the caller discards it, so the bytes can be stored again.
    """
    key = storage.blob_key(received.sha256)
    if not received.durable:
        storage.fsync_path(received.path)
        received.durable = True
    stored_in = None
    try:
        for _attempt in range(5):
            existing = Blob.objects.filter(sha256=received.sha256).only("pk", "quarantined").first()
            if existing and existing.quarantined and thumbnail:
                raise BlobQuarantined()
            if existing is None and stored_in is None:
                stored_in = storage.backend_for_new_blobs(thumbnail=thumbnail)
                storage.backend(stored_in).put(key, received.path, keep_source=True)
            try:
                with transaction.atomic():
                    if existing is not None:
                        blob = Blob.objects.select_for_update().filter(pk=existing.pk).first()
                        if blob is None:  # collected between the two reads: store afresh
                            stored_in = None
                            continue
                        if blob.gc_pending or blob.integrity in (BlobIntegrity.MISSING, BlobIntegrity.CORRUPT):
                            storage.backend(blob.storage).put(blob.key, received.path, keep_source=True)
                            # Unchecked and never verified: first in line for the next scrub.
                            Blob.objects.filter(pk=blob.pk).update(
                                gc_pending=False, integrity=BlobIntegrity.UNCHECKED, verified_ts=None
                            )
                            blob.gc_pending, blob.integrity = False, BlobIntegrity.UNCHECKED
                        created = False
                    else:
                        blob = Blob.objects.create(
                            sha256=received.sha256,
                            size=received.size,
                            storage=stored_in,
                            key=key,
                            # Content quarantined earlier, whose bytes were since reclaimed: the
                            # ban outlives the row, so the new row is born quarantined.
                            quarantined=content_is_quarantined(sha256=received.sha256),
                        )
                        if not storage.backend(stored_in).exists(key):
                            storage.backend(stored_in).put(key, received.path, keep_source=True)
                        created = True
                    return record(blob, created)
            except IntegrityError:
                continue  # another writer of the same bytes created the Blob first
        raise errors.StorageUnavailable("Could not record the stored bytes; please retry")
    except BaseException:
        # The row for the file we stored did not commit (the database is full or failing, the
        # record was refused): the file must not stay behind without a row.
        if stored_in is not None:
            _remove_if_unrecorded(alias=stored_in, key=key, sha256=received.sha256, size=received.size)
        raise


def _remove_if_unrecorded(*, alias: str, key: str, sha256: str, size: int) -> None:
    """Delete a file just stored at `key` unless a row for the same content exists now (a
    concurrent upload of the same bytes may have recorded it)."""
    try:
        if connection.vendor == "sqlite":
            # BEGIN IMMEDIATE takes SQLite's one write lock, so no other writer is between its
            # insert and its commit while we look; and it needs no space, unlike an insert.
            with transaction.atomic():
                if not Blob.objects.filter(sha256=sha256).exists():
                    storage.backend(alias).delete(key)
        else:
            # The collector's protocol: a placeholder row under the UNIQUE sha256 makes a
            # concurrent insert of the same content wait while the file goes.
            from .gc import orphan_file_collect

            orphan_file_collect(alias=alias, key=key, sha256=sha256, size=size)
    except (DatabaseError, errors.MediasiteError):
        logger.warning("A stored file without a row is left for the garbage collector: %s", key)
