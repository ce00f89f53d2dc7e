"""The default Celery beat schedule, written to django-celery-beat's tables by a migration.

Entries live in the database, so operators change intervals, disable or add entries in the admin
("Periodic tasks") without a deploy; beat (DatabaseScheduler) picks changes up while it runs. A
schedule in code would be written over the database's on every beat start, undoing those edits.
"""
from ..conf import media_settings

# (entry name, task name, interval in seconds, description)
def default_entries() -> list[tuple[str, str, int, str]]:
    return [
        ("media_app.storage.scrub", "media_app.storage.scrub", media_settings.SCRUB_INTERVAL_SECONDS,
         "Re-hash a sample of blobs, least recently verified first"),
        ("media_app.storage.collect_garbage", "media_app.storage.collect_garbage",
         media_settings.GC_INTERVAL_SECONDS, "Remove unreferenced blobs, stray files and temp files"),
        ("media_app.storage.sweep_temp_files", "media_app.storage.sweep_temp_files",
         media_settings.TEMP_SWEEP_INTERVAL_SECONDS, "Remove temp files of processes that died mid-upload"),
        ("retention.expire_reservations", "media_app.retention.expire_reservations", 15 * 60,
         "Expire reservations (create) never filled by unused_expires_at"),
        ("retention.purge_remote_media", "media_app.retention.purge_remote_media", 3600,
         "Purge remote media not accessed within MEDIASITE_REMOTE_MEDIA_LIFETIME, with its thumbnails"),
        ("retention.purge_thumbnails", "media_app.retention.purge_thumbnails", 6 * 3600,
         "Purge thumbnails not served within MEDIASITE_THUMBNAIL_LIFETIME"),
        ("retention.propose_local_media", "media_app.retention.propose_local_media", 24 * 3600,
         "Propose local media past MEDIASITE_LOCAL_MEDIA_LIFETIME / _IDLE for deletion (sign-off)"),
    ]


def install_default_entries(PeriodicTask, IntervalSchedule) -> int:
    """Create the entries that do not exist yet (by name); existing ones, possibly edited by an
    operator, are left as they are. Takes the model classes so a migration can pass its
    historical models. Returns how many were created."""
    created = 0
    for name, task, every, description in default_entries():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        PeriodicTask.objects.create(name=name, task=task, interval=interval, description=description)
        created += 1
    return created
