"""Every text column of the project's apps is either encrypted at rest or on this list of
machine-made values. A new CharField/TextField/JSONField fails here until someone decides
which it is: a person's words (file names, reasons, notes) must be an EncryptedTextField."""
from django.apps import apps
from django.db import models

from media_app.crypto import EncryptedTextField


NOT_FREE_TEXT = {
    "media_app.Blob": {"sha256", "storage", "key", "previous_storage", "integrity"},
    "media_app.Media": {"server_name", "media_id", "media_type", "status", "origin"},
    # A label an operator gives a token on the command line ("laptop"), never user content.
    "media_app.AccessToken": {"token_hash", "name"},
    # Event payloads carry IDs, types, sizes and codes by contract; the attack test greps the
    # database after a full flow for a planted name.
    "media_app.MediaEvent": {"event_type", "server_name", "media_id", "payload"},
    "media_app.Thumbnail": {"method", "media_type"},
    "moderation.ModerationRequest": {"action", "targets", "status"},
    "moderation.BlockedServer": {"server_name"},
    "moderation.QuarantinedContent": {"sha256"},
    # A hash of the flight key, and the error (code, message) the owner of a flight raised.
    "media_app.FlightFailure": {"key", "payload"},
}


def test_every_text_column_is_encrypted_or_a_machine_value():
    unexplained = []
    for model in apps.get_models():
        if not model.__module__.startswith("media_app") or model._meta.proxy:  # the project's own tables
            continue
        if model._meta.proxy:  # no table of its own: its columns are its concrete model's, checked there
            continue
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedTextField):
                continue
            if isinstance(field, (models.CharField, models.TextField, models.JSONField)):
                if field.name not in NOT_FREE_TEXT.get(model._meta.label, set()):
                    unexplained.append(f"{model._meta.label}.{field.name}")
    assert not unexplained, f"text columns neither encrypted nor listed as machine values: {unexplained}"


def test_the_typed_fields_are_encrypted():
    from media_app.models import Media
    from media_app.moderation.models import ModerationRequest

    assert isinstance(Media._meta.get_field("upload_name"), EncryptedTextField)
    for name in ("reason", "decision_reason"):
        assert isinstance(ModerationRequest._meta.get_field(name), EncryptedTextField)
