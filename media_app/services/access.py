"""Access tracking without a database write on the download path.

Each retrieval sends the `media.retrieved` signal at once and adds to an in-memory batch: the
newest access time per media row and the event rows. A background thread writes the batch every
ACCESS_FLUSH_SECONDS, and the process flushes once more when it exits — one UPDATE and one bulk
INSERT per batch, however many downloads it holds.
"""
import atexit
import logging
import os
import threading

from django.db import close_old_connections, transaction
from django.utils import timezone

from .. import events
from ..conf import media_settings
from ..models import Media, MediaEvent, Thumbnail

logger = logging.getLogger(__name__)


class AccessBatch:
    def __init__(self):
        self._lock = threading.Lock()
        self._touched: dict[int, object] = {}
        self._thumbnails_touched: dict[int, object] = {}
        # (server_name, media_id, payload, actor_id, ts): rows are built at flush time, off
        # the download path.
        self._events: list[tuple] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pid = None

    def record(self, *, media: Media, downloader, thumbnail_pk: int | None = None) -> None:
        payload = {"media_id": media.media_id, "downloader_id": downloader.username if downloader else None}
        events.send_signal(events.RETRIEVED, payload)
        now = timezone.now()
        row = (media.server_name, media.media_id, payload, downloader.pk if downloader else None, now)
        with self._lock:
            self._touched[media.pk] = now
            if thumbnail_pk is not None:
                self._thumbnails_touched[thumbnail_pk] = now
            self._events.append(row)
        self._ensure_thread()

    def discard(self) -> None:
        """Forget what has not been written (tests)."""
        with self._lock:
            self._touched, self._events, self._thumbnails_touched = {}, [], {}

    def pending(self) -> int:
        with self._lock:
            return len(self._events)

    def flush(self) -> int:
        """Write what has accumulated; returns the number of retrievals written."""
        with self._lock:
            touched, rows, thumbnails = self._touched, self._events, self._thumbnails_touched
            self._touched, self._events, self._thumbnails_touched = {}, [], {}
        if not rows:
            return 0
        try:
            with transaction.atomic():
                # One statement for the batch; precision to the flush interval is all retention needs.
                Media.objects.filter(pk__in=list(touched)).update(last_access_ts=max(touched.values()))
                if thumbnails:  # thumbnail retention counts from these
                    Thumbnail.objects.filter(pk__in=list(thumbnails)).update(last_access_ts=max(thumbnails.values()))
                MediaEvent.objects.bulk_create(
                    [
                        MediaEvent(event_type=events.RETRIEVED, server_name=server_name, media_id=media_id,
                                   payload=payload, actor_id=actor_id, created_ts=ts)
                        for server_name, media_id, payload, actor_id, ts in rows
                    ],
                    batch_size=1000,
                )
        except Exception:
            logger.exception("Could not write %d media accesses; they will be retried", len(rows))
            with self._lock:
                for pk, ts in touched.items():
                    self._touched[pk] = max(ts, self._touched.get(pk, ts))
                for pk, ts in thumbnails.items():
                    self._thumbnails_touched[pk] = max(ts, self._thumbnails_touched.get(pk, ts))
                self._events[:0] = rows
                # Bounded memory while the database is away: the oldest events go first.
                overflow = len(self._events) - media_settings.MAX_PENDING_ACCESS_EVENTS
                if overflow > 0:
                    del self._events[:overflow]
                    logger.error("Dropped %d unwritten media.retrieved events", overflow)
            return 0
        return len(rows)

    def _ensure_thread(self) -> None:
        if not media_settings.ACCESS_FLUSH_THREAD:
            return
        # After a fork (gunicorn workers) the parent's thread does not exist in the child.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="access-flusher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(media_settings.ACCESS_FLUSH_SECONDS):
            self.flush()
            close_old_connections()

    def shutdown(self) -> None:
        self._stop.set()
        self.flush()


access_batch = AccessBatch()
atexit.register(access_batch.shutdown)
