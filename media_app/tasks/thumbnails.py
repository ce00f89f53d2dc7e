from celery import shared_task
from django.db import DatabaseError

from .. import errors
from ..models import Media, MediaStatus
from ..services.thumbnails import thumbnails_pregenerate

# A database or storage that fails now (locked, restarting, full) may work in a moment: retry
# with exponential backoff (1 s, 2 s, 4 s, ... capped, jittered). A render that failed leaves
# no file behind (services.blobs), so a retry starts clean.
RETRY = {
    "autoretry_for": (OSError, DatabaseError, errors.StorageUnavailable, errors.StorageFull),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(name="media_app.thumbnails.pregenerate", **RETRY)
def pregenerate_thumbnails(media_pk: int) -> int:
    media = Media.objects.select_related("blob").filter(pk=media_pk, status=MediaStatus.STORED).first()
    if media is None or media.blob is None or media.blob.quarantined:
        return 0  # gone or removed since the upload: nothing to do
    return thumbnails_pregenerate(media=media)
