from django.apps import AppConfig


class MediaAppConfig(AppConfig):
    name = "media_app"
    verbose_name = "Media"

    def ready(self):
        from . import conf

        conf.check_settings()
        from . import quota_admin  # noqa: F401  (registers UserQuotaAdmin)
