"""The data model: content (Blob) is separate from identity (Media); docs/ARCHITECTURE.md,
"Data model", draws it."""
from django.conf import settings
from django.db import models
from django.utils import timezone

from .crypto import EncryptedTextField


class BlobIntegrity(models.TextChoices):
    UNCHECKED = "unchecked"
    OK = "ok"
    MISSING = "missing"
    CORRUPT = "corrupt"


class Blob(models.Model):
    """One row per distinct content. No two rows share a sha256: that is deduplication."""

    sha256 = models.CharField(max_length=64, unique=True)
    size = models.BigIntegerField()
    storage = models.CharField(max_length=32, help_text="Storage backend alias holding the bytes")
    key = models.CharField(max_length=255, help_text="Content-addressed key inside the backend")
    created_ts = models.DateTimeField(default=timezone.now)
    # Hash-level quarantine: every Media sharing these bytes, and future uploads of them.
    quarantined = models.BooleanField(default=False)
    # Set (committed) by the garbage collector before it removes the file, so a crash between
    # removing the file and the row leaves a row every writer knows to re-store, not to trust.
    gc_pending = models.BooleanField(default=False, help_text="Unreferenced; being garbage-collected")
    # Set with the switch of `storage` by migrate_storage, cleared once the old copy is deleted:
    # a migration killed in between finds the copies it still has to remove.
    previous_storage = models.CharField(max_length=32, blank=True, default="")
    integrity = models.CharField(max_length=16, choices=BlobIntegrity.choices, default=BlobIntegrity.UNCHECKED,
                                 help_text="Result of the last re-hash by verify_media or the scrub task")
    verified_ts = models.DateTimeField(null=True, blank=True, help_text="When the bytes were last re-hashed")

    class Meta:
        indexes = [
            # Whether any quarantined content has a given size: asked before a first fetch of
            # remote media is answered while it arrives (federation.remote.StreamedRemote).
            models.Index(fields=["size"], condition=models.Q(quarantined=True), name="blob_quarantined_size"),
        ]

    def __str__(self):
        return f"{self.sha256[:12]}… ({self.size} B on {self.storage})"


class MediaStatus(models.TextChoices):
    PENDING = "pending"
    STORED = "stored"
    QUARANTINED = "quarantined"
    DELETED = "deleted"


class MediaOrigin(models.TextChoices):
    LOCAL = "local"
    REMOTE = "remote"


class Media(models.Model):
    """One row per media ID (`mxc://server_name/media_id`). Status changes only through
    `media_app.state.transition` (docs/ARCHITECTURE.md, "State machine")."""

    server_name = models.CharField(max_length=255)
    media_id = models.CharField(max_length=255)
    blob = models.ForeignKey(Blob, null=True, blank=True, on_delete=models.PROTECT, related_name="media")
    media_type = models.CharField(max_length=255, default="application/octet-stream")
    media_length = models.BigIntegerField(null=True, blank=True)
    upload_name = EncryptedTextField(null=True, blank=True)
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="uploads"
    )
    created_ts = models.DateTimeField(default=timezone.now)
    last_access_ts = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=MediaStatus.choices, default=MediaStatus.PENDING)
    quarantined_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    protected = models.BooleanField(default=False)
    origin = models.CharField(max_length=8, choices=MediaOrigin.choices, default=MediaOrigin.LOCAL)
    unused_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "media"
        constraints = [
            models.UniqueConstraint(fields=["server_name", "media_id"], name="media_unique_mxc"),
        ]
        indexes = [
            models.Index(fields=["uploader", "status"], name="media_uploader_status"),
            models.Index(fields=["origin", "last_access_ts"], name="media_origin_access"),
            models.Index(fields=["status", "unused_expires_at"], name="media_status_expiry"),
        ]

    def __str__(self):
        return self.content_uri

    @property
    def content_uri(self) -> str:
        return f"mxc://{self.server_name}/{self.media_id}"

    @property
    def is_quarantined(self) -> bool:
        return self.status == MediaStatus.QUARANTINED or bool(self.blob_id and self.blob.quarantined)


class AccessToken(models.Model):
    """An API token. Only its SHA-256 is stored: the token itself is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=100, blank=True)
    created_ts = models.DateTimeField(default=timezone.now)
    # Written at most once per TOKEN_LAST_USED_PRECISION_SECONDS per token (services.tokens).
    last_used_ts = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"token {self.name or self.pk} of {self.user}"


class MediaEvent(models.Model):
    """Append-only log of what happened to media (docs/ARCHITECTURE.md, "Events"); rows are never updated."""

    event_type = models.CharField(max_length=64, db_index=True)
    server_name = models.CharField(max_length=255, blank=True)
    media_id = models.CharField(max_length=255, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    # What a person typed for the event (a moderator's reason for a quarantine): encrypted, as
    # every typed reason is, where the payload is plain JSON.
    note = EncryptedTextField(blank=True, default="")
    # No database constraint: an audit row must never fail to be written because its actor
    # was deleted between the event and a batched write of it.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_constraint=False,
    )
    created_ts = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_ts", "-id"]

    def __str__(self):
        return f"{self.event_type} {self.media_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Media events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Media events are append-only")


class ThumbnailMethod(models.TextChoices):
    CROP = "crop"
    SCALE = "scale"


class Thumbnail(models.Model):
    """A cached rendition of a source Blob. Keyed by content, not by media ID, so every Media
    sharing deduplicated bytes shares its thumbnails. The rendered bytes are a Blob of their own
    (content-addressed, stored on the thumbnail backend, verified and migrated like originals)."""

    source = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="thumbnails")
    width = models.PositiveIntegerField(help_text="Requested box width (the cache key)")
    height = models.PositiveIntegerField(help_text="Requested box height (the cache key)")
    method = models.CharField(max_length=8, choices=ThumbnailMethod.choices)
    media_type = models.CharField(max_length=64)
    animated = models.BooleanField(default=False)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="renditions")
    rendered_width = models.PositiveIntegerField()
    rendered_height = models.PositiveIntegerField()
    created_ts = models.DateTimeField(default=timezone.now)
    # Written by the batched access flush (services.access), never on the serving path; null
    # until first served, when retention counts from created_ts.
    last_access_ts = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "width", "height", "method", "media_type", "animated"],
                name="thumbnail_unique_rendition",
            ),
        ]
        indexes = [models.Index(fields=["last_access_ts"], name="thumbnail_last_access")]

    def __str__(self):
        return f"{self.width}x{self.height} {self.method} of {self.source_id}"


class FlightFailure(models.Model):
    """A failed single flight (media_app.singleflight) on PostgreSQL without Redis: waiters read
    it to raise the owner's error, and while `cached_until` is ahead no one retries the work."""

    key = models.CharField(max_length=64, primary_key=True, help_text="sha256 of the flight key")
    payload = models.JSONField(help_text="The error: code, message, headers, extra attributes")
    cached_until = models.DateTimeField()
    visible_until = models.DateTimeField()


class UserQuota(models.Model):
    """Per-user limits set by an operator in the admin; a user without a row (or a field left
    empty) gets MEDIASITE_DEFAULT_QUOTA_BYTES / _FILES. 0 means unlimited."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="media_quota")
    max_bytes = models.BigIntegerField(null=True, blank=True,
                                       help_text="Bytes of stored media; empty: the default, 0: unlimited")
    max_files = models.IntegerField(null=True, blank=True,
                                    help_text="Media files, reservations included; empty: the default, 0: unlimited")

    def __str__(self):
        return f"quota of {self.user}"
