"""Garbage collection: unreferenced blobs, files without a row, abandoned temp files.

The hazard is the upload that is reusing a blob at the moment it is collected, or that is
storing the same content again right after. Content-addressed keys mean the collector and the
uploader touch the *same* file, so "delete the row, then the file" alone would let a fresh
upload's file be deleted under its new row. The protocol, with its counterpart in
`services.blobs.blob_store_and_record`:

1. Doom: under the row lock, with the references counted by fresh queries (which see every
   upload that committed before the lock was granted; later ones wait for it), mark the blob
   `gc_pending` and commit. Rows first: from here on no writer trusts this row's file.
2. Remove: under the row lock again, re-count the references (a writer may have reused the
   row meanwhile, re-storing its bytes and clearing the mark), delete the file, delete the row,
   commit. A writer that wanted the row waits for the lock and then finds it gone, so it stores
   the bytes afresh. A crash between the file and the row leaves a doomed row without a file,
   which writers re-store before reuse and the next collection finishes.

A file with no row is collected the same way, with a doomed placeholder row inserted for the
duration (the UNIQUE sha256 makes a concurrent insert for the same content wait, and the
uploader checks its file after its insert). Nothing younger than the grace period is touched.
"""
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .. import storage
from ..conf import media_settings
from ..models import Blob, Media, Thumbnail
from .progress import Progress


@dataclass
class GcReport:
    blobs_removed: int = 0
    blobs_removed_bytes: int = 0
    orphan_files_removed: int = 0
    orphan_files_removed_bytes: int = 0
    temp_files_removed: int = 0


def _referenced(blob_id: int) -> bool:
    return (
        Media.objects.filter(blob_id=blob_id).exists()
        or Thumbnail.objects.filter(Q(source_id=blob_id) | Q(blob_id=blob_id)).exists()
    )


def _doom(blob_id: int) -> bool:
    with transaction.atomic():
        blob = Blob.objects.select_for_update().filter(pk=blob_id).first()
        if blob is None or blob.quarantined:
            return False
        if _referenced(blob_id):
            if blob.gc_pending:  # reused since an earlier run doomed it
                Blob.objects.filter(pk=blob_id).update(gc_pending=False)
            return False
        if not blob.gc_pending:
            Blob.objects.filter(pk=blob_id).update(gc_pending=True)
    return True


def _remove(blob_id: int) -> int | None:
    """Delete a doomed blob's file(s) and row; its size, or None if it was reused meanwhile."""
    with transaction.atomic():
        blob = Blob.objects.select_for_update().filter(pk=blob_id, gc_pending=True).first()
        if blob is None:
            return None
        if _referenced(blob_id):
            Blob.objects.filter(pk=blob_id).update(gc_pending=False)
            return None
        storage.backend(blob.storage).delete(blob.key)
        if blob.previous_storage:
            storage.backend(blob.previous_storage).delete(blob.key)
        blob.delete()
        return blob.size


def blob_collect(*, blob_id: int) -> int | None:
    """Collect one blob if nothing refers to it. Returns the bytes freed, or None."""
    if not _doom(blob_id):
        return None
    return _remove(blob_id)


def _referenced_among(blob_ids: list[int]) -> set[int]:
    """Which of these blobs some Media or Thumbnail refers to (one query per relation)."""
    referenced = set(Media.objects.filter(blob_id__in=blob_ids).values_list("blob_id", flat=True).distinct())
    referenced |= set(Thumbnail.objects.filter(source_id__in=blob_ids).values_list("source_id", flat=True).distinct())
    referenced |= set(Thumbnail.objects.filter(blob_id__in=blob_ids).values_list("blob_id", flat=True).distinct())
    return referenced


def blobs_doom_unreferenced(*, blob_ids) -> list[tuple[int, int]]:
    """Step 1 of the protocol for a batch, inside the caller's transaction: the purge jobs
    remove their rows and doom the blobs those rows held in one commit, so a kill after it
    leaves marked blobs (finished by `blobs_remove_doomed` or the next collection), never
    unmarked garbage. Returns (pk, size) of the blobs marked."""
    ids = sorted(set(blob_ids))
    if not ids:
        return []
    # Locked in key order: two jobs dooming overlapping batches cannot deadlock. NO KEY UPDATE
    # lets a thumbnail being rendered meanwhile insert its row (a foreign-key share lock)
    # instead of deadlocking against this batch; such a late reference is seen by the re-check
    # in blobs_remove_doomed, which keeps the blob. Writers that reuse a blob lock it FOR
    # UPDATE, which still waits for this transaction.
    locked = list(Blob.objects.select_for_update(no_key=True).filter(pk__in=ids, quarantined=False)
                  .order_by("pk").values_list("pk", "size"))
    referenced = _referenced_among([pk for pk, _size in locked])
    doomed = [(pk, size) for pk, size in locked if pk not in referenced]
    Blob.objects.filter(pk__in=[pk for pk, _size in doomed], gc_pending=False).update(gc_pending=True)
    return doomed


def blobs_remove_doomed(*, blob_ids) -> tuple[int, int]:
    """Step 2 for a batch: under the rows' locks, re-check, delete files, then rows. Returns
    (blobs removed, bytes freed); blobs reused since they were doomed are kept and unmarked."""
    ids = sorted(set(blob_ids))
    if not ids:
        return 0, 0
    with transaction.atomic():
        locked = list(Blob.objects.select_for_update().filter(pk__in=ids, gc_pending=True).order_by("pk"))
        referenced = _referenced_among([blob.pk for blob in locked])
        if referenced:
            Blob.objects.filter(pk__in=referenced).update(gc_pending=False)
        removed = [blob for blob in locked if blob.pk not in referenced]
        for blob in removed:
            storage.backend(blob.storage).delete(blob.key)
            if blob.previous_storage:
                storage.backend(blob.previous_storage).delete(blob.key)
        Blob.objects.filter(pk__in=[blob.pk for blob in removed]).delete()
    return len(removed), sum(blob.size for blob in removed)


def _collect_orphan_file(alias: str, key: str, sha256: str, size: int) -> bool:
    with transaction.atomic():
        blob = Blob.objects.select_for_update().filter(sha256=sha256).first()
        if blob is not None:
            if blob.storage == alias and blob.key == key:
                return False  # the live copy
            # A stale copy (a migration's leftover, or the file of an upload that lost its
            # insert race): the row is elsewhere and locked, so no row can come to point here.
            storage.backend(alias).delete(key)
            if blob.previous_storage == alias:
                Blob.objects.filter(pk=blob.pk).update(previous_storage="")
            return True
        try:
            with transaction.atomic():
                placeholder = Blob.objects.create(sha256=sha256, size=size, storage=alias, key=key, gc_pending=True)
        except IntegrityError:
            return False  # an upload of this content just recorded it
        storage.backend(alias).delete(key)
        placeholder.delete()
        return True


def orphan_file_collect(*, alias: str, key: str, sha256: str, size: int) -> bool:
    """Delete the file at `key` unless a row records it (an upload whose row did not commit)."""
    return _collect_orphan_file(alias, key, sha256, size)


def media_backends() -> list[str]:
    """The configured backends that hold blobs (not Django's `default` or static files)."""
    return [alias for alias in settings.STORAGES if alias not in ("default", "staticfiles")]


def blobs_collect_garbage(*, grace_seconds: int | None = None, progress: Progress | None = None) -> GcReport:
    progress = progress or Progress()
    grace = media_settings.GC_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timedelta(seconds=grace)
    report = GcReport()

    unreferenced = (
        Blob.objects.filter(quarantined=False)
        .filter(Q(created_ts__lt=cutoff) | Q(gc_pending=True))
        .filter(~Exists(Media.objects.filter(blob=OuterRef("pk"))))
        .filter(~Exists(Thumbnail.objects.filter(source=OuterRef("pk"))))
        .filter(~Exists(Thumbnail.objects.filter(blob=OuterRef("pk"))))
        .order_by("pk")
        .values_list("pk", "size")
    )
    candidates = list(unreferenced)
    progress.start(total=len(candidates), total_bytes=sum(size for _pk, size in candidates))
    try:
        for blob_id, size in candidates:
            freed = blob_collect(blob_id=blob_id)
            if freed is not None:
                report.blobs_removed += 1
                report.blobs_removed_bytes += freed
            progress.advance(nbytes=size)
    finally:
        progress.finish()

    seen = set()
    for alias in media_backends():
        for stored in storage.backend(alias).list_files():
            location = (alias_identity(alias), stored.key)
            if location in seen or stored.modified >= cutoff:
                continue
            seen.add(location)
            sha256 = storage.sha256_of_key(stored.key)
            if sha256 is None:
                # Debris of an interrupted local write; anything else is not ours to delete.
                if stored.key.endswith(".part"):
                    storage.backend(alias).delete(stored.key)
                    report.orphan_files_removed += 1
                continue
            if _collect_orphan_file(alias, stored.key, sha256, stored.size):
                report.orphan_files_removed += 1
                report.orphan_files_removed_bytes += stored.size
    report.temp_files_removed = storage.temp_files_sweep()
    return report


def alias_identity(alias: str) -> tuple:
    """Two aliases over the same directory or bucket hold the same files: visit them once."""
    options = settings.STORAGES[alias].get("OPTIONS", {})
    return (settings.STORAGES[alias]["BACKEND"], options.get("location"), options.get("bucket_name"))
