from django.apps import AppConfig


class ModerationConfig(AppConfig):
    name = "media_app.moderation"
    label = "moderation"
    verbose_name = "Moderation"
