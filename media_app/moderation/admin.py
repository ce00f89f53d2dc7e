"""The review queue, the server block list and the quarantined hashes. Decisions are admin
actions calling the moderation services; nothing is edited or deleted through a form."""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from ..admin import ReadOnlyAdmin, ReasonActionForm, action_reason, preview_html, run_service
from .. import errors
from ..models import Media
from ..services import identifiers
from . import services
from .models import BlockedServer, ModerationAction, ModerationRequest, QuarantinedContent, RequestStatus


class QueueStatusFilter(admin.SimpleListFilter):
    """The queue opens on what waits for a decision."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [*RequestStatus.choices, ("all", "All")]

    def queryset(self, request, queryset):
        value = self.value() or RequestStatus.PENDING
        return queryset if value == "all" else queryset.filter(status=value)

    def choices(self, changelist):
        current = self.value() or RequestStatus.PENDING
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }


@admin.register(ModerationRequest)
class ModerationRequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "action", "target_list", "requested_by_name", "reason", "status", "decided_by",
                    "decision_reason", "created_ts"]
    list_filter = [QueueStatusFilter, "action"]
    list_select_related = ["requested_by", "decided_by"]
    fields = ["action", "target_list", "requested_by_name", "reason", "status", "decided_by", "decision_reason",
              "created_ts", "decided_ts", "executed_ts"]
    readonly_fields = fields
    action_form = ReasonActionForm
    actions = ["approve", "reject"]

    @admin.display(description="requested by")
    def requested_by_name(self, obj):
        if obj.requested_by_id is None:
            return "retention" if obj.retention else "system"
        name = obj.requested_by.get_username()
        return f"{name} (retention run)" if obj.retention else name

    SHOWN_TARGETS = 5

    def _shown_media(self, requests) -> dict:
        """The media the requests' shown targets name, by (server, media ID), in one query."""
        wanted = {identifiers.split_content_uri(uri) for obj in requests for uri in obj.targets[:self.SHOWN_TARGETS]}
        found = Media.objects.select_related("blob").filter(media_id__in={media_id for _server, media_id in wanted})
        return {(m.server_name, m.media_id): m for m in found}

    def get_changelist_instance(self, request):
        # The targets of every row on the page in one query, not one per target.
        changelist = super().get_changelist_instance(request)
        rows = [obj for obj in changelist.result_list if obj.action != ModerationAction.BLOCK_SERVER]
        shown = self._shown_media(rows)
        for obj in rows:
            obj.shown_media = shown
        return changelist

    @admin.display(description="targets")
    def target_list(self, obj):
        if obj.action == ModerationAction.BLOCK_SERVER:
            return ", ".join(obj.targets)
        shown = getattr(obj, "shown_media", None)
        if shown is None:  # a request's own page
            shown = self._shown_media([obj])
        rows = []
        for uri in obj.targets[:self.SHOWN_TARGETS]:
            server_name, media_id = identifiers.split_content_uri(uri)
            media = shown.get((server_name, media_id))
            link = reverse("admin:media_app_media_changelist") + f"?q={media_id}"
            rows.append((preview_html(media) if media else "—", link, uri))
        more = (f" and {len(obj.targets) - self.SHOWN_TARGETS} more"
                if len(obj.targets) > self.SHOWN_TARGETS else "")
        return format_html("{}{}", format_html_join(" ", '{} <a href="{}">{}</a>', rows), more)

    @staticmethod
    def _chosen(request, queryset):
        """The rows the moderator ticked, decided ones included. The queue's list shows pending
        requests, and Django hands an action only the ticked rows still in that list: a request
        decided since the page was drawn would be passed over in silence, where the service
        answers "already decided"."""
        if request.POST.get("select_across") == "1":
            return queryset.order_by("pk")
        ticked = [pk for pk in request.POST.getlist(ACTION_CHECKBOX_NAME) if pk.isdigit()]
        return ModerationRequest.objects.filter(pk__in=ticked).order_by("pk")

    @admin.action(description="Approve and execute (four eyes: not your own request)", permissions=["moderate"])
    def approve(self, request, queryset):
        for item in self._chosen(request, queryset):
            run_service(self, request, lambda: services.moderation_request_approve(
                request_id=item.pk, moderator=request.user, reason=action_reason(request)),
                "Request #{result.pk} approved and executed.", about=f"Request #{item.pk}: ")

    @admin.action(description="Reject, or withdraw your own (give the reason in the box)", permissions=["moderate"])
    def reject(self, request, queryset):
        for item in self._chosen(request, queryset):
            run_service(self, request, lambda: services.moderation_request_reject(
                request_id=item.pk, moderator=request.user, reason=action_reason(request)),
                "Request #{result.pk} rejected.", about=f"Request #{item.pk}: ")


class BlockRequestForm(forms.ModelForm):
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    class Meta:
        model = BlockedServer
        fields = ["server_name"]

    def clean_server_name(self):
        name = self.cleaned_data["server_name"].strip().lower()
        try:
            identifiers.validate(name, "x")
        except errors.MediasiteError as exc:
            raise forms.ValidationError(exc.message) from exc
        if identifiers.is_local(name):
            raise forms.ValidationError("This server cannot block itself")
        return name


@admin.register(BlockedServer)
class BlockedServerAdmin(ReadOnlyAdmin):
    """The block list with its pending entries. "Add" files a block request through the service;
    the entry becomes active only when another moderator approves it in the queue."""

    list_display = ["server_name", "active", "request_link", "created_ts"]
    list_filter = ["active"]
    search_fields = ["server_name"]
    form = BlockRequestForm

    def has_add_permission(self, request, obj=None):
        return services.is_moderator(request.user)

    def get_fields(self, request, obj=None):
        return ["server_name", "reason"] if obj is None else ["server_name", "active", "request_link", "created_ts"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    @admin.display(description="request")
    def request_link(self, obj):
        if obj.request_id is None:
            return "—"
        url = reverse("admin:moderation_moderationrequest_change", args=[obj.request_id])
        return format_html('<a href="{}">#{} ({})</a>', url, obj.request_id, obj.request.status)

    def response_add(self, request, obj, post_url_continue=None):
        # Not Django's "was added successfully": nothing is blocked until a second moderator says so.
        self.message_user(request, f"Block of {obj.server_name} requested; another moderator must approve it "
                                   "in the moderation queue.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:moderation_blockedserver_changelist"))

    def save_model(self, request, obj, form, change):
        request_row = services.server_block_request(
            server_name=form.cleaned_data["server_name"], requested_by=request.user,
            reason=form.cleaned_data.get("reason", ""))
        # The service created the row; the admin only needs its key for the messages that follow.
        created = BlockedServer.objects.get(request=request_row)
        obj.pk, obj.server_name, obj._state.adding = created.pk, created.server_name, False


@admin.register(QuarantinedContent)
class QuarantinedContentAdmin(ReadOnlyAdmin):
    list_display = ["sha256", "quarantined_by", "created_ts"]
    search_fields = ["=sha256"]
