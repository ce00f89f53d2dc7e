"""Moving blobs between storage backends while the server keeps serving them.

For each blob: copy the bytes to the target, read the copy back and check its SHA-256 and
size, then switch the row with a conditional UPDATE (only if it still names the source and is
not being collected), and only after that commits delete the source copy. Every state a kill
can leave is safe and is finished by the next run:

- killed before the switch: the row still names the source, which is intact; the next run
  copies again to the same content-addressed key (an overwrite with identical bytes);
- killed after the switch, before the delete: the row names the target (verified) and records
  `previous_storage`; the next run starts by deleting those leftover copies.

Readers that looked the row up before the switch and open the file after the delete are
retried by the serving code from the row's new location (see api.serving).
"""
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from .. import errors, storage
from ..models import Blob
from .progress import Progress


class CopyMismatch(Exception):
    """The copy read back does not hash to the blob's SHA-256 (the source bytes are bad)."""


@dataclass
class MigrationReport:
    moved: int = 0
    moved_bytes: int = 0
    skipped: int = 0  # moved or collected by someone else meanwhile
    leftovers_removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (sha256, reason)


def _check_alias(alias: str) -> None:
    if alias not in settings.STORAGES or alias in ("default", "staticfiles"):
        raise ImproperlyConfigured(f"{alias!r} is not a configured media storage backend")


def _drop_previous_copy(blob_id: int, alias: str, key: str) -> bool:
    """Delete the copy a switch left behind, then forget it. True if this call finished it.

    Under the row lock: while the row exists (naming another backend) no other row can come to
    point at this copy, so it is ours to delete; a collector that got there first already did.
    """
    with transaction.atomic():
        if not Blob.objects.select_for_update().filter(pk=blob_id, previous_storage=alias).exists():
            return False
        storage.backend(alias).delete(key)
        Blob.objects.filter(pk=blob_id).update(previous_storage="")
    return True


def _move_one(*, blob_id: int, sha256: str, size: int, source: str, key: str, target: str) -> bool:
    """Copy, verify, switch, delete. False if the row changed under us (nothing switched)."""
    storage.copy_blob(key, source=source, target=target)
    got_sha, got_size = storage.backend(target).hash(key)
    with transaction.atomic():
        blob = Blob.objects.select_for_update().filter(pk=blob_id, storage=source, gc_pending=False).first()
        if blob is None:
            # Collected or moved meanwhile; the copy, if unused, is an orphan for the collector.
            return False
        if (got_sha, got_size) != (sha256, size):
            storage.backend(target).delete(key)  # no row can point at it while we hold this one
            raise CopyMismatch(f"copy hashes to {got_sha[:12]}… ({got_size} B)")
        # The collector deletes stray copies under this same lock: checking here, not only
        # when hashing, means the row never switches to a copy removed in between.
        if not storage.backend(target).exists(key):
            return False
        Blob.objects.filter(pk=blob_id).update(storage=target, previous_storage=source)
    _drop_previous_copy(blob_id, source, key)
    return True


def blobs_migrate(*, target: str, source: str | None = None, limit: int | None = None,
                  progress: Progress | None = None) -> MigrationReport:
    """Move blobs (originals and thumbnails) to `target`, from `source` or from anywhere else."""
    progress = progress or Progress()
    _check_alias(target)
    if source is not None:
        _check_alias(source)
        if source == target:
            raise ImproperlyConfigured("source and target backends are the same")
    report = MigrationReport()

    # First finish what a killed run left: rows switched whose old copy was not yet deleted.
    for blob_id, previous, key in Blob.objects.exclude(previous_storage="").values_list(
        "pk", "previous_storage", "key"
    ):
        if _drop_previous_copy(blob_id, previous, key):
            report.leftovers_removed += 1

    todo = Blob.objects.filter(gc_pending=False).exclude(storage=target)
    if source is not None:
        todo = todo.filter(storage=source)
    todo = todo.order_by("pk")
    if limit is not None:
        todo = todo[:limit]
    rows = list(todo.values_list("pk", "sha256", "size", "storage", "key"))
    progress.start(total=len(rows), total_bytes=sum(row[2] for row in rows))
    try:
        for blob_id, sha256, size, from_alias, key in rows:
            try:
                if _move_one(blob_id=blob_id, sha256=sha256, size=size, source=from_alias, key=key, target=target):
                    report.moved += 1
                    report.moved_bytes += size
                else:
                    report.skipped += 1
            except errors.BlobMissing:
                report.failed.append((sha256, f"missing on {from_alias}"))
            except CopyMismatch as exc:
                report.failed.append((sha256, f"corrupt on {from_alias}: {exc}"))
            # StorageUnavailable / StorageFull end the run: every row is in a state the next
            # run resumes from, and retrying blob after blob against a dead backend helps no one.
            progress.advance(nbytes=size)
    finally:
        progress.finish()
    return report
