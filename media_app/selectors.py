"""Read-side queries, kept apart from the services that change state."""
from datetime import datetime

from .models import Media, MediaStatus


def media_list_for_user(*, user, media_type: str | None = None, status: str | None = None,
                        since: datetime | None = None):
    """A user's media, newest first. `media_type` is a type (`image/png`) or a family
    (`image/*` or `image`)."""
    queryset = Media.objects.select_related("blob").filter(uploader=user).exclude(status=MediaStatus.DELETED)
    if media_type:
        family = media_type.removesuffix("/*")
        if "/" in family:
            queryset = queryset.filter(media_type=family)
        else:
            queryset = queryset.filter(media_type__startswith=family + "/")
    if status:
        queryset = queryset.filter(status=status)
    if since is not None:
        queryset = queryset.filter(created_ts__gte=since)
    return queryset.order_by("-created_ts", "-pk")
