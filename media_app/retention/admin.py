"""The retention page of the admin: the same preview as `purge_media --dry-run`, and a button
that hands the same run to a Celery worker. Views parse the request and call the services."""
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse

from .forms import PurgeForm
from .models import Purge
from .services import Kind, retention_policy, retention_preview


@admin.register(Purge)
class PurgeAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = PurgeForm(request.POST if request.method == "POST" else request.GET or None)
        cutoffs = form.cleaned_data if form.is_valid() else {}
        policy = retention_policy(remote_before=cutoffs.get("remote_before"),
                                  local_before=cutoffs.get("local_before"))
        if request.method == "POST" and form.is_valid():
            if not request.user.is_superuser:
                raise PermissionDenied
            from .tasks import run_retention

            run_retention.delay(
                remote_before=policy.remote_before.isoformat() if cutoffs.get("remote_before") else None,
                local_before=policy.local_created_before.isoformat() if cutoffs.get("local_before") else None,
                requested_by_id=request.user.pk,
            )
            messages.success(request, "The purge was handed to a worker; the event log shows each media.purged.")
            return HttpResponseRedirect(request.get_full_path())
        report = retention_preview(policy=policy)
        rows = [(Kind.LABELS[kind], report[kind].count, report[kind].bytes) for kind in Kind.ORDER]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Retention: what a purge would do now",
            "form": form,
            "policy": policy,
            "rows": rows,
            "freed_bytes": report.freed_bytes,
            "can_run": request.user.is_superuser,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/retention/preview.html", context)
