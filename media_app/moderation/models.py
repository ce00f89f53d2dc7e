"""Four-eyes moderation: the irreversible steps wait here for a second person's sign-off."""
from django.conf import settings
from django.db import models
from django.utils import timezone

from ..crypto import EncryptedTextField


class ModerationAction(models.TextChoices):
    DELETE_MEDIA = "delete_media", "Delete media"
    RELEASE_MEDIA = "release_media", "Release from quarantine"
    BLOCK_SERVER = "block_server", "Block a server"
    # A user's report: approving it quarantines the reported media.
    REVIEW_REPORT = "review_report", "Review a user's report"


class RequestStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXECUTED = "executed"


class ModerationRequest(models.Model):
    """An irreversible step asked for by one person (or the system) and carried out only when a
    different staff member approves it. `targets` holds mxc URIs for media actions and server
    names for BLOCK_SERVER."""

    action = models.CharField(max_length=32, choices=ModerationAction.choices)
    targets = models.JSONField(default=list)
    # Null when the system proposed it (scheduled retention); any staff member may then decide.
    # A retention run started by hand (the admin's "run now") names the superuser who started it.
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A deletion proposed by retention: when approved, media protected since is kept.
    retention = models.BooleanField(default=False)
    reason = EncryptedTextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decision_reason = EncryptedTextField(blank=True, default="")
    created_ts = models.DateTimeField(default=timezone.now)
    decided_ts = models.DateTimeField(null=True, blank=True)
    executed_ts = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_ts", "-id"]
        indexes = [models.Index(fields=["status", "created_ts"], name="modreq_status_created")]
        # The one permission that lets a staff member act (quarantine, request, decide);
        # the `moderators` group holds it with the view permissions.
        permissions = [("moderate", "Can quarantine media, request and decide moderation steps")]

    def __str__(self):
        return f"{self.get_action_display()} ({self.status}) #{self.pk}"


class BlockedServer(models.Model):
    """A server whose media is refused with no network contact. Rows become effective only
    once their ModerationRequest executes (`active`); MEDIASITE_BLOCKED_SERVERS adds more."""

    server_name = models.CharField(max_length=255, unique=True)
    active = models.BooleanField(default=False)
    request = models.ForeignKey(ModerationRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_ts = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.server_name + ("" if self.active else " (pending)")


class QuarantinedContent(models.Model):
    """A SHA-256 under hash-level quarantine. Blob.quarantined is the flag the serving path
    reads; this row outlives the Blob, so content whose bytes were reclaimed after a signed-off
    deletion still arrives quarantined when someone uploads or fetches it again."""

    sha256 = models.CharField(max_length=64, unique=True)
    # Content of another size cannot have this hash: a first fetch of remote media whose
    # declared length no row has may be answered before its hash is known. Null only for rows
    # recorded before sizes were, whose bytes were gone by then (such a row disables that).
    size = models.BigIntegerField(null=True, blank=True, db_index=True)
    quarantined_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_ts = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "quarantined content"

    def __str__(self):
        return self.sha256
