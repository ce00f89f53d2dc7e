"""Integrity scrub: re-hash stored bytes and flag the blobs whose bytes are missing or corrupt.

Thumbnail renditions are Blobs too, so they are checked by the same pass. Results are written
to the Blob row (`integrity`, `verified_ts`) where moderators see and filter them in the admin,
and where an upload of the same content heals the blob by storing the good bytes again.
"""
from dataclasses import dataclass, field

from django.db.models import F
from django.utils import timezone

from .. import errors, storage
from ..models import Blob, BlobIntegrity, Thumbnail
from .progress import Progress


@dataclass
class Finding:
    sha256: str
    storage: str
    problem: str  # "missing" or "corrupt"
    is_thumbnail: bool


@dataclass
class VerifyReport:
    checked: int = 0
    checked_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _check(alias: str, key: str, sha256: str, size: int) -> str:
    try:
        got_sha, got_size = storage.backend(alias).hash(key)
    except errors.BlobMissing:
        return BlobIntegrity.MISSING
    return BlobIntegrity.OK if (got_sha, got_size) == (sha256, size) else BlobIntegrity.CORRUPT


def blob_verify(*, blob: Blob) -> str:
    """Re-hash one blob, record the result on its row and return it.

    A bad result is re-checked against the row as it is now: a migration may have moved the
    bytes (and deleted the copy we were reading) while we hashed.
    """
    result = _check(blob.storage, blob.key, blob.sha256, blob.size)
    alias, key = blob.storage, blob.key
    if result != BlobIntegrity.OK:
        current = Blob.objects.filter(pk=blob.pk).values_list("storage", "key").first()
        if current is None:
            return result  # collected meanwhile: nothing left to flag
        if current != (alias, key):
            alias, key = current
            result = _check(alias, key, blob.sha256, blob.size)
    Blob.objects.filter(pk=blob.pk, storage=alias, key=key).update(integrity=result, verified_ts=timezone.now())
    return result


def blobs_verify(*, sample: int | None = None, progress: Progress | None = None) -> VerifyReport:
    """Re-hash every blob, or the `sample` least recently verified ones (never verified first).

    Backend outages (StorageUnavailable) propagate: an unreachable backend says nothing about
    the bytes, so no blob is flagged because of one.
    """
    progress = progress or Progress()
    blobs = Blob.objects.filter(gc_pending=False).only("pk", "sha256", "size", "storage", "key")
    if sample is not None:
        blobs = blobs.order_by(F("verified_ts").asc(nulls_first=True), "pk")[:sample]
    else:
        blobs = blobs.order_by("pk")
    blobs = list(blobs)
    progress.start(total=len(blobs), total_bytes=sum(blob.size for blob in blobs))
    report = VerifyReport()
    try:
        for blob in blobs:
            result = blob_verify(blob=blob)
            report.checked += 1
            report.checked_bytes += blob.size
            if result != BlobIntegrity.OK:
                report.findings.append(Finding(
                    sha256=blob.sha256, storage=blob.storage, problem=result,
                    is_thumbnail=Thumbnail.objects.filter(blob_id=blob.pk).exists(),
                ))
            progress.advance(nbytes=blob.size)
    finally:
        progress.finish()
    return report
