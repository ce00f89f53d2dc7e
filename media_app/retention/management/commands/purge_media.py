"""`manage.py purge_media [--remote-before DATE] [--local-before DATE] [--dry-run]`.

Prints what would be purged (items and bytes, by kind), then, unless --dry-run, runs the purge
with a progress bar per kind on stderr and prints what it did. Safe to kill and run again.
"""
from datetime import datetime, time, timezone

from django.core.management.base import BaseCommand, CommandError

from media_app import errors
from media_app.management.commands._progress import ProgressBar
from media_app.services.progress import Progress
from media_app.retention.services import Kind, retention_policy, retention_preview, retention_run


def _parse_date(value: str) -> datetime:
    """An ISO date (midnight UTC) or date-time (UTC unless it says otherwise)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not an ISO date or date-time (e.g. 2026-01-31 or 2026-01-31T12:00)") from None
    if len(value) == 10:
        parsed = datetime.combine(parsed.date(), time.min)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _table(report) -> list[str]:
    lines = [f"{'kind':<62} {'items':>9} {'bytes':>14}"]
    for kind in Kind.ORDER:
        totals = report[kind]
        lines.append(f"{Kind.LABELS[kind]:<62} {totals.count:>9} {totals.bytes:>14}")
    lines.append(f"{'freed by this run':<62} {'':>9} {report.freed_bytes:>14}")
    return lines


# The run reports the remote media's thumbnails under the remote media's bar.
_BAR_KINDS = {Kind.REMOTE_MEDIA: (Kind.REMOTE_MEDIA, Kind.REMOTE_THUMBNAILS)}
_UNITS = {Kind.INTERRUPTED: "blobs", Kind.RESERVATIONS: "reservations", Kind.REMOTE_MEDIA: "media",
          Kind.THUMBNAILS: "thumbnails", Kind.LOCAL_PROPOSALS: "media"}


class Command(BaseCommand):
    help = ("Purge remote media and thumbnails not accessed within their lifetimes, expire "
            "reservations never filled, and propose old local media for deletion (moderator "
            "sign-off). Shows the counts and bytes first.")

    def add_arguments(self, parser):
        parser.add_argument("--remote-before", type=_parse_date,
                            help="purge remote media not accessed since DATE (default: MEDIASITE_REMOTE_MEDIA_LIFETIME ago)")
        parser.add_argument("--local-before", type=_parse_date,
                            help="propose local media uploaded before DATE (default: MEDIASITE_LOCAL_MEDIA_LIFETIME, off)")
        parser.add_argument("--dry-run", action="store_true", help="print what would be purged and stop")

    def handle(self, *args, remote_before, local_before, dry_run, **options):
        policy = retention_policy(remote_before=remote_before, local_before=local_before)
        preview = retention_preview(policy=policy)
        self.stdout.write("would purge:" if dry_run else "purging:")
        for line in _table(preview):
            self.stdout.write("  " + line)
        if dry_run:
            return

        def progress_for(kind):
            if not preview[kind].count:
                return Progress()  # nothing to show for an empty kind
            kinds = _BAR_KINDS.get(kind, (kind,))
            # The underlying stream: Django's wrapper would end the bar's "\r" redraws with newlines.
            bar = ProgressBar(kind, stream=self.stderr._out, unit=_UNITS[kind])
            # A proposal frees nothing until it is signed off: its bar counts media, not bytes.
            total_bytes = 0 if kind == Kind.LOCAL_PROPOSALS else sum(preview[k].bytes for k in kinds)
            bar.start(total=preview[kind].count, total_bytes=total_bytes)
            return bar

        try:
            report = retention_run(policy=policy, progress_for=progress_for)
        except errors.MediasiteError as exc:
            raise CommandError(f"{exc.code}: {exc.message}; run the command again to finish") from exc
        self.stdout.write("purged:")
        for line in _table(report):
            self.stdout.write("  " + line)
