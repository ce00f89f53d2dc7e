import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


class FederationConfig(AppConfig):
    name = "media_app.federation"
    label = "federation"
    verbose_name = "Federation"

    def ready(self):
        # The signing key exists from the first start, before any peer asks for it; making it
        # here (not on the first request) also means every process reads the same file.
        from . import keys

        try:
            keys.signing_key()
        except OSError as exc:
            logger.warning("Could not create or read the federation signing key: %s", exc.strerror)
