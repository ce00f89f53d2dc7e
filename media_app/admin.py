"""Moderators' admin. Media status is read-only here: it changes only through the state machine."""
from django.contrib import admin

from .models import AccessToken, Blob, Media, MediaEvent


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    # integrity/verified_ts are written by verify_media and the scrub task: moderators filter
    # on "missing"/"corrupt" to find damaged media.
    list_display = ["sha256", "size", "storage", "integrity", "verified_ts", "quarantined", "created_ts"]
    list_filter = ["storage", "integrity", "quarantined", "gc_pending"]
    search_fields = ["sha256"]
    readonly_fields = ["sha256", "size", "storage", "key", "created_ts", "quarantined", "integrity",
                       "verified_ts", "gc_pending", "previous_storage"]


@admin.register(Media)
class MediaAdmin(admin.ModelAdmin):
    list_display = ["media_id", "server_name", "media_type", "media_length", "uploader", "status", "origin", "created_ts"]
    list_filter = ["status", "origin", "protected"]
    search_fields = ["media_id", "server_name", "uploader__username"]
    list_select_related = ["uploader", "blob"]
    readonly_fields = ["server_name", "media_id", "blob", "media_type", "media_length", "upload_name", "uploader",
                       "created_ts", "last_access_ts", "status", "quarantined_by", "origin", "unused_expires_at"]


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "created_ts"]
    readonly_fields = ["user", "token_hash", "name", "created_ts"]

    def has_add_permission(self, request):
        return False  # tokens are shown once: `manage.py create_token`


@admin.register(MediaEvent)
class MediaEventAdmin(admin.ModelAdmin):
    list_display = ["created_ts", "event_type", "server_name", "media_id", "actor"]
    list_filter = ["event_type"]
    search_fields = ["media_id"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
