"""Scheduled storage maintenance: the integrity scrub and the garbage collector.

Both are idempotent and safe to run beside the web servers (and beside each other); a run
that dies part-way is finished by the next one. Backend outages are retried by Celery rather
than reported as findings. Their schedule is in the database (media_app.retention.schedule).
"""
import logging

from celery import shared_task
from django.db import DatabaseError

from .. import errors, singleflight
from ..conf import media_settings
from ..services.gc import blobs_collect_garbage
from ..services.integrity import blobs_verify
from ..storage import temp_files_sweep

logger = logging.getLogger(__name__)

# The task names predate this module's name and stay: beat schedules and queued messages
# refer to tasks by name.


# Backend outages and database errors (locked, restarting, out of space) are retried.
_RETRY = {"autoretry_for": (errors.StorageUnavailable, DatabaseError), "retry_backoff": 60, "max_retries": 3}


@shared_task(name="media_app.storage.scrub", **_RETRY)
def scrub_blobs(sample: int | None = None) -> dict:
    report = blobs_verify(sample=sample or media_settings.SCRUB_SAMPLE_BLOBS)
    for finding in report.findings:
        # Hashes only: enough for an operator to find the blob in the admin, no user data.
        logger.error("Blob %s on %s is %s", finding.sha256, finding.storage, finding.problem)
    return {"checked": report.checked, "bad": len(report.findings)}


@shared_task(name="media_app.storage.collect_garbage", **_RETRY)
def collect_garbage() -> dict:
    report = blobs_collect_garbage()
    return {"blobs": report.blobs_removed, "files": report.orphan_files_removed, "temp": report.temp_files_removed}


@shared_task(name="media_app.storage.sweep_temp_files")
def sweep_temp_files() -> int:
    """Temp files of processes that died (a worker killed mid-upload), not those in use; and,
    on the embedded default, the single flight's files of keys idle for a day. Returns how
    many temp files were removed."""
    flights = singleflight.sweep_idle_files()
    if flights:
        logger.info("Removed the flight files of %d idle keys", flights)
    return temp_files_sweep()
