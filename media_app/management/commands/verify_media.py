"""`manage.py verify_media [--sample N]`: re-hash stored blobs (originals and thumbnails),
flag the missing and corrupt ones in the admin. Exit status: 0 all sound, 1 some missing or
corrupt, 2 nothing checked (a bad argument, a storage backend that cannot be reached)."""
from django.core.management.base import BaseCommand, CommandError

from media_app import errors
from media_app.services.integrity import blobs_verify

from ._progress import ProgressBar


class Command(BaseCommand):
    help = ("Re-hash stored blobs and report missing or corrupt ones (exit status 1 if any; 2 when "
            "nothing could be checked).")

    def add_arguments(self, parser):
        parser.add_argument("--sample", type=int,
                            help="check only this many blobs, least recently verified first")

    def handle(self, *args, sample, **options):
        if sample is not None and sample < 1:
            raise CommandError("--sample must be at least 1", returncode=2)
        try:
            report = blobs_verify(sample=sample, progress=ProgressBar("verify"))
        except errors.MediasiteError as exc:
            raise CommandError(f"{exc.code}: {exc.message}; no blob was flagged", returncode=2) from exc
        for finding in report.findings:
            kind = "thumbnail" if finding.is_thumbnail else "media"
            self.stdout.write(f"{finding.problem.upper()} {kind} blob {finding.sha256} on {finding.storage}")
        self.stdout.write(f"checked {report.checked} blobs ({report.checked_bytes} bytes): "
                          f"{len(report.findings)} missing or corrupt")
        if not report.ok:
            raise CommandError(f"{len(report.findings)} blobs are missing or corrupt", returncode=1)
