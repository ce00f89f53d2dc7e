"""Per-user quotas: bytes of stored media and number of media files (reservations included).

Usage is computed from the Media rows themselves, not kept in a counter, so deletions by any
path (moderation, retention, expiry of reservations) free quota with nothing to keep in step.

Race safety: the final check runs in the transaction that creates the Media row, after taking a
lock on the uploader's user row (SELECT … FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE
transactions already serialize writers). Two uploads by the same user therefore check one
after the other, each seeing the other's committed row: a quota is never exceeded, not even by
one file. The earlier, lock-free checks only refuse early (before the body is read, before the
bytes are stored) and cost nothing when no quota applies.
"""
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Sum

from .. import errors
from ..conf import media_settings
from ..models import Media, MediaOrigin, MediaStatus, UserQuota


@dataclass(frozen=True)
class Usage:
    bytes_used: int
    files_used: int
    pending_uploads: int
    max_bytes: int  # 0: unlimited
    max_files: int  # 0: unlimited
    max_pending_uploads: int


def _limits_for(user) -> tuple[int, int]:
    row = UserQuota.objects.filter(user_id=user.pk).values_list("max_bytes", "max_files").first()
    max_bytes, max_files = row or (None, None)
    return (
        media_settings.DEFAULT_QUOTA_BYTES if max_bytes is None else max_bytes,
        media_settings.DEFAULT_QUOTA_FILES if max_files is None else max_files,
    )


def _used(user) -> dict:
    return Media.objects.filter(uploader_id=user.pk, origin=MediaOrigin.LOCAL).exclude(
        status=MediaStatus.DELETED
    ).aggregate(
        bytes=Sum("media_length", default=0),
        files=Count("pk"),
        pending=Count("pk", filter=Q(status=MediaStatus.PENDING)),
    )


def quota_usage(*, user) -> Usage:
    max_bytes, max_files = _limits_for(user)
    used = _used(user)
    return Usage(
        bytes_used=used["bytes"], files_used=used["files"], pending_uploads=used["pending"],
        max_bytes=max_bytes, max_files=max_files,
        max_pending_uploads=media_settings.MAX_PENDING_UPLOADS_PER_USER,
    )


def user_lock(*, user) -> None:
    """Serialize this user's quota-relevant writes until the current transaction ends."""
    list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk"))


def quota_check(*, user, add_bytes: int = 0, add_files: int = 0, lock: bool = False) -> None:
    """QuotaExceeded if adding this much would go over the user's quota. With `lock`, call it
    inside the transaction that records the media: see the module docstring."""
    if user is None:
        return
    max_bytes, max_files = _limits_for(user)
    if not max_bytes and not max_files:
        return
    if lock:
        user_lock(user=user)
    used = _used(user)
    if max_bytes and used["bytes"] + add_bytes > max_bytes:
        raise errors.QuotaExceeded(f"Storage quota exceeded: {used['bytes']} of {max_bytes} bytes used")
    if max_files and used["files"] + add_files > max_files:
        raise errors.QuotaExceeded(f"File quota exceeded: {used['files']} of {max_files} files used")
