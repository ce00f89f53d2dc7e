"""Moderators' admin. Nothing here writes a row itself: lists and pages are read-only (no add, no
delete, no editable field), and every change is an action that calls a moderation service, so
it goes through the state machine and leaves events."""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404
from django.urls import path, reverse
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html

from . import errors
from .api import serving
from .models import AccessToken, Blob, Media, MediaEvent, MediaStatus
from .moderation import selectors as moderation_selectors
from .moderation import services as moderation


admin.site.site_header = "Mediasite moderation"
admin.site.site_title = "Mediasite"
admin.site.index_title = "Media, moderation and retention"


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: rows change through services (admin actions), never through a form."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_moderate_permission(self, request):
        return moderation.is_moderator(request.user)


class ReasonActionForm(ActionForm):
    reason = forms.CharField(required=False, max_length=moderation.MAX_REASON_CHARS,
                             widget=forms.TextInput(attrs={"placeholder": "reason", "size": 40}))


def action_reason(request) -> str:
    return request.POST.get("reason", "")


def run_service(modeladmin, request, call, success: str, *, about: str = "") -> None:
    """Call a service for an admin action and report its outcome as an admin message (a
    refusal prefixed with `about`, e.g. "Request #5: ", when an action runs it per row)."""
    try:
        result = call()
    except errors.MediasiteError as exc:
        modeladmin.message_user(request, about + exc.message, messages.ERROR)
        return
    modeladmin.message_user(request, success.format(result=result), messages.SUCCESS)


def preview_html(media: Media) -> str:
    """A small preview of `media` for moderators, blurred while the media is quarantined (a
    click reveals it). The image comes from MediaAdmin's staff-only preview view."""
    if media.blob_id is None or media.status == MediaStatus.DELETED:
        return "—"
    if not media.media_type.startswith("image/"):
        return media.media_type
    url = reverse("admin:media_app_media_preview", args=[media.pk])
    if media.is_quarantined:
        return format_html(
            '<img src="{}" width="64" height="64" alt="quarantined preview" class="mod-preview mod-blurred" '
            'style="filter: blur(12px); cursor: pointer" title="Quarantined: click to reveal" '
            "onclick=\"this.style.filter = this.style.filter ? '' : 'blur(12px)'\">",
            url,
        )
    return format_html('<img src="{}" width="64" height="64" alt="preview" class="mod-preview">', url)


class SizeFilter(admin.SimpleListFilter):
    title = "size"
    parameter_name = "size"
    BANDS = {
        "lt100k": ("< 100 KiB", Q(media_length__lt=100 << 10)),
        "100k-10m": ("100 KiB – 10 MiB", Q(media_length__gte=100 << 10, media_length__lt=10 << 20)),
        "gte10m": ("≥ 10 MiB", Q(media_length__gte=10 << 20)),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _q) in self.BANDS.items()]

    def queryset(self, request, queryset):
        band = self.BANDS.get(self.value())
        return queryset.filter(band[1]) if band else queryset


class TypeFilter(admin.SimpleListFilter):
    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        return [("image", "image"), ("video", "video"), ("audio", "audio"), ("text", "text"),
                ("other", "other")]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == "other":
            return queryset.exclude(media_type__regex=r"^(image|video|audio|text)/")
        return queryset.filter(media_type__startswith=value + "/")


class ServerFilter(admin.SimpleListFilter):
    title = "server"
    parameter_name = "server"

    def lookups(self, request, model_admin):
        names = Media.objects.order_by().values_list("server_name", flat=True).distinct()[:50]
        return [(name, name) for name in sorted(names)]

    def queryset(self, request, queryset):
        return queryset.filter(server_name=self.value()) if self.value() else queryset


@admin.register(Media)
class MediaAdmin(ReadOnlyAdmin):
    list_display = ["preview", "media_id", "server_name", "media_type", "size", "uploader", "status",
                    "origin", "protected", "created_ts"]
    list_display_links = ["media_id"]
    list_filter = ["status", "origin", TypeFilter, ("uploader", admin.RelatedOnlyFieldListFilter), ServerFilter,
                   SizeFilter, "protected", "created_ts"]
    date_hierarchy = "created_ts"
    # "=": exact matches, so a SHA-256 or a media ID finds its row through an index.
    search_fields = ["=media_id", "=blob__sha256"]
    # File names are encrypted at rest: no search can read them. The uploader is a filter.
    search_help_text = "A whole media ID or SHA-256 of the content (for an uploader, use the filter)"
    list_select_related = ["uploader", "blob"]
    list_per_page = 50
    fields = ["preview", "server_name", "media_id", "content_sha256", "media_type", "media_length", "upload_name",
              "uploader_name", "created_ts", "last_access_ts", "status", "quarantined_by_name", "quarantine_reason",
              "protected", "origin", "unused_expires_at"]
    readonly_fields = fields
    action_form = ReasonActionForm
    actions = ["quarantine_now", "request_deletion", "request_release", "protect", "unprotect"]

    @admin.display(description="preview")
    def preview(self, obj):
        return preview_html(obj)

    @admin.display(description="size", ordering="media_length")
    def size(self, obj):
        return filesizeformat(obj.media_length) if obj.media_length is not None else "—"

    @admin.display(description="SHA-256")
    def content_sha256(self, obj):
        return obj.blob.sha256 if obj.blob_id else "—"

    # Names, not links: the user pages are the operator's (a superuser's), and a moderator
    # following a link there would only be refused.
    @admin.display(description="uploader")
    def uploader_name(self, obj):
        return obj.uploader.get_username() if obj.uploader_id else "—"

    @admin.display(description="quarantined by")
    def quarantined_by_name(self, obj):
        return obj.quarantined_by.get_username() if obj.quarantined_by_id else "—"

    @admin.display(description="quarantine reason")
    def quarantine_reason(self, obj):
        """What the moderator typed when the media was quarantined (its event's encrypted note)."""
        if not obj.is_quarantined:
            return "—"
        note = moderation_selectors.quarantine_note(server_name=obj.server_name, media_id=obj.media_id)
        return note or ("(none given)" if note is not None else "—")

    @admin.action(description="Quarantine now (content-level)", permissions=["moderate"])
    def quarantine_now(self, request, queryset):
        def call():
            done, skipped = moderation.media_quarantine_many(
                media=list(queryset.select_related("blob")), moderator=request.user, reason=action_reason(request))
            return (f"{done} media quarantined, every media sharing their content included"
                    + (f"; {skipped} protected or without content skipped" if skipped else ""))

        run_service(self, request, call, "{result}.")

    @admin.action(description="Request deletion (needs a second moderator)", permissions=["moderate"])
    def request_deletion(self, request, queryset):
        run_service(self, request, lambda: moderation.media_deletion_request(
            media=list(queryset), requested_by=request.user, reason=action_reason(request)),
            "Deletion requested ({result}); another moderator must approve it.")

    @admin.action(description="Request release from quarantine (needs a second moderator)", permissions=["moderate"])
    def request_release(self, request, queryset):
        run_service(self, request, lambda: moderation.media_release_request(
            media=list(queryset), requested_by=request.user, reason=action_reason(request)),
            "Release requested ({result}); another moderator must approve it.")

    @admin.action(description="Protect from quarantine", permissions=["moderate"])
    def protect(self, request, queryset):
        self._protect(request, queryset, True)

    @admin.action(description="Remove protection", permissions=["moderate"])
    def unprotect(self, request, queryset):
        self._protect(request, queryset, False)

    def _protect(self, request, queryset, protected: bool):
        for media in queryset:
            run_service(self, request, lambda: moderation.media_protect(
                media_id=media.media_id, server_name=media.server_name, moderator=request.user, protected=protected),
                "{result.content_uri} " + ("protected." if protected else "unprotected."),
                about=f"{media.content_uri}: ")

    def get_urls(self):
        return [
            path("<int:pk>/preview/", self.admin_site.admin_view(self.preview_view), name="media_app_media_preview"),
            *super().get_urls(),
        ]

    def preview_view(self, request, pk):
        """A thumbnail of any media (quarantined included) for a moderator's eyes only."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        media = Media.objects.select_related("blob").filter(pk=pk).first()
        if media is None:
            raise Http404
        try:
            thumb = moderation.media_preview_thumbnail(media=media, moderator=request.user)
        except errors.MediasiteError as exc:
            raise Http404 from exc
        response = serving.serve_thumbnail(request, thumb)
        response["Cache-Control"] = "private, no-store"
        return response


@admin.register(Blob)
class BlobAdmin(ReadOnlyAdmin):
    # integrity/verified_ts are written by verify_media and the scrub task: moderators filter
    # on "missing"/"corrupt" to find damaged media.
    list_display = ["sha256", "size", "storage", "integrity", "verified_ts", "quarantined", "created_ts"]
    list_filter = ["storage", "integrity", "quarantined", "gc_pending"]
    search_fields = ["=sha256"]


@admin.register(AccessToken)
class AccessTokenAdmin(ReadOnlyAdmin):
    # Tokens are shown once, by `manage.py create_token`; the hash is never displayed.
    list_display = ["user", "name", "created_ts"]
    fields = ["user", "name", "created_ts"]


@admin.register(MediaEvent)
class MediaEventAdmin(ReadOnlyAdmin):
    list_display = ["created_ts", "event_type", "server_name", "media_id", "actor", "payload", "note"]
    list_filter = ["event_type", "created_ts"]
    search_fields = ["=media_id"]
    list_select_related = ["actor"]
