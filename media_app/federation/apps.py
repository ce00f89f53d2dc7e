from django.apps import AppConfig


class FederationConfig(AppConfig):
    name = "media_app.federation"
    label = "federation"
    verbose_name = "Federation"
