"""Admin for per-user quotas, kept apart from media_app/admin.py (registered from
MediaAppConfig.ready()). Operators set a user's limits here; usage is shown beside them."""
from django.contrib import admin

from .models import UserQuota
from .services.quotas import quota_usage


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = ["user", "max_bytes", "max_files", "bytes_used", "files_used"]
    search_fields = ["user__username"]
    raw_id_fields = ["user"]

    @admin.display(description="bytes used")
    def bytes_used(self, obj):
        return quota_usage(user=obj.user).bytes_used

    @admin.display(description="files used")
    def files_used(self, obj):
        return quota_usage(user=obj.user).files_used
