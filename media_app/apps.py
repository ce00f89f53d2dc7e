from django.apps import AppConfig


class MediaAppConfig(AppConfig):
    name = "media_app"
    verbose_name = "Media"

    def ready(self):
        from . import checks, conf  # noqa: F401  (checks registers itself)

        conf.check_settings()
        from . import quota_admin  # noqa: F401  (registers UserQuotaAdmin)
