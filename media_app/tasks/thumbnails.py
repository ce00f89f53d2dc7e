from celery import shared_task

from ..models import Media, MediaStatus
from ..services.thumbnails import thumbnails_pregenerate


@shared_task(name="media_app.thumbnails.pregenerate", autoretry_for=(OSError,), retry_backoff=True, max_retries=3)
def pregenerate_thumbnails(media_pk: int) -> int:
    media = Media.objects.select_related("blob").filter(pk=media_pk, status=MediaStatus.STORED).first()
    if media is None or media.blob is None or media.blob.quarantined:
        return 0  # gone or removed since the upload: nothing to do
    return thumbnails_pregenerate(media=media)
