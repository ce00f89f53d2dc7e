"""`manage.py collect_garbage [--grace-seconds S]`: remove unreferenced blobs and stray files."""
from django.core.management.base import BaseCommand, CommandError

from media_app import errors
from media_app.services.gc import blobs_collect_garbage

from ._progress import ProgressBar


class Command(BaseCommand):
    help = ("Remove blobs no Media or Thumbnail refers to, and stored files without a row, "
            "older than the grace period.")

    def add_arguments(self, parser):
        parser.add_argument("--grace-seconds", type=int,
                            help="leave anything younger than this alone (default MEDIASITE_GC_GRACE_SECONDS)")

    def handle(self, *args, grace_seconds, **options):
        if grace_seconds is not None and grace_seconds < 0:
            raise CommandError("--grace-seconds must not be negative")
        try:
            report = blobs_collect_garbage(grace_seconds=grace_seconds, progress=ProgressBar("collect"))
        except errors.MediasiteError as exc:
            raise CommandError(f"{exc.code}: {exc.message}; run the command again") from exc
        self.stdout.write(
            f"removed {report.blobs_removed} blobs ({report.blobs_removed_bytes} bytes), "
            f"{report.orphan_files_removed} files without a row ({report.orphan_files_removed_bytes} bytes), "
            f"{report.temp_files_removed} abandoned temp files"
        )
