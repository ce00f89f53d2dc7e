"""Read-side queries, kept apart from the services that change state."""
from .models import Media, MediaStatus


def media_list_for_user(*, user):
    return (
        Media.objects.select_related("blob")
        .filter(uploader=user)
        .exclude(status=MediaStatus.DELETED)
        .order_by("-created_ts", "-pk")
    )
