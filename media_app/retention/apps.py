from django.apps import AppConfig


class RetentionConfig(AppConfig):
    name = "media_app.retention"
    label = "retention"
    verbose_name = "Retention"
