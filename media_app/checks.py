"""System checks: those that need the database run with `manage.py check --database default`
and before `migrate`, which the container runs at start-up; the others with every command."""
from django.conf import settings
from django.core import checks
from django.db import DatabaseError


@checks.register()
def check_federation_ca_file(app_configs=None, **kwargs):
    """A CA file that cannot be loaded would fail every https connection to another server."""
    from .conf import media_settings
    from .federation.client import OutboundError, current_tls_context

    if not media_settings.FEDERATION_TLS_CA_FILE:
        return []
    try:
        current_tls_context()
    except OutboundError as exc:
        return [checks.Error(str(exc), hint="Point MEDIASITE_FEDERATION_TLS_CA_FILE at a PEM file of CA "
                                            "certificates, or unset it.", id="mediasite.E002")]
    return []


@checks.register(checks.Tags.database)
def check_blob_backends(app_configs=None, databases=None, **kwargs):
    """Every backend alias a blob row names must be configured, or its bytes cannot be served."""
    if not databases:
        return []
    from .models import Blob

    try:
        aliases = set(Blob.objects.values_list("storage", flat=True).distinct())
        aliases |= set(Blob.objects.exclude(previous_storage="").values_list("previous_storage", flat=True).distinct())
    except DatabaseError:
        return []  # not migrated yet: nothing can be stored anywhere
    return [
        checks.Error(
            f"Blobs are stored on backend {alias!r}, which settings.STORAGES does not configure.",
            hint="Restore that backend's settings (for 's3': AWS_STORAGE_BUCKET_NAME and the AWS_* "
                 "variables), or move the blobs off it with `manage.py migrate_storage` first.",
            id="mediasite.E001",
        )
        for alias in sorted(aliases - set(settings.STORAGES))
    ]
