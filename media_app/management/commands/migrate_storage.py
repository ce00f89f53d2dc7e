"""`manage.py migrate_storage --to s3 [--from fs] [--limit N]`: move blobs between backends
online. Safe to interrupt and run again (see services.storage_migration)."""
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from media_app import errors
from media_app.services.storage_migration import blobs_migrate

from ._progress import ProgressBar


class Command(BaseCommand):
    help = "Copy blobs to another storage backend, verify each copy, switch the rows, delete the old copies."

    def add_arguments(self, parser):
        parser.add_argument("--to", required=True, dest="target", help="backend alias to move blobs to (e.g. s3)")
        parser.add_argument("--from", dest="source", help="only move blobs now on this backend (default: any other)")
        parser.add_argument("--limit", type=int, help="move at most this many blobs")

    def handle(self, *args, target, source, limit, **options):
        if limit is not None and limit < 0:
            raise CommandError("--limit must not be negative")
        try:
            report = blobs_migrate(target=target, source=source, limit=limit, progress=ProgressBar(f"to {target}"))
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        except errors.MediasiteError as exc:
            raise CommandError(f"{exc.code}: {exc.message}; nothing is lost, run the command again") from exc
        self.stdout.write(
            f"moved {report.moved} blobs ({report.moved_bytes} bytes), skipped {report.skipped}, "
            f"removed {report.leftovers_removed} leftover copies of an earlier run, failed {len(report.failed)}"
        )
        for sha256, reason in report.failed:
            self.stderr.write(f"not moved: {sha256}: {reason}")
        if report.failed:
            raise CommandError(f"{len(report.failed)} blobs could not be moved (run verify_media)")
