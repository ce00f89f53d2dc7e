"""Encryption at rest: a value no key opens is an operator error, never None or ciphertext; a
raw dump of the database holds no file name or typed reason in plaintext."""
import logging
import os
import subprocess

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from media_app.crypto import Undecryptable
from media_app.models import Media, MediaEvent
from media_app.moderation.models import ModerationAction
from media_app.moderation.services import media_quarantine, moderation_request_create
from tests.conftest import body_of, download_url, png_bytes, require_service, upload

CANARY_NAME = "CanaryFileName-7f3a9c.png"
CANARY_REASON = "CanaryReasonText-5d21e0 typed by a moderator"


def _other_key_only():
    return override_settings(MEDIASITE={**settings.MEDIASITE, "ENCRYPTION_KEYS": [Fernet.generate_key().decode()]})


@pytest.mark.django_db
def test_a_value_no_key_opens_is_a_logged_operator_error_and_survives_a_save(caplog):
    Media.objects.create(server_name="s", media_id="m1", upload_name="holiday.png")
    with _other_key_only():
        with caplog.at_level(logging.ERROR, logger="media_app.crypto"):
            media = Media.objects.get(media_id="m1")
        assert isinstance(media.upload_name, Undecryptable)
        assert media.upload_name == Undecryptable.TEXT
        assert media.upload_name is not None and not media.upload_name.startswith("gAAAA")
        assert any("media_app_media.upload_name" in r.getMessage() for r in caplog.records)
        media.save()  # an admin or service saving the row must not destroy the stored value
        call_command("rotate_encryption_keys")  # nor may a rotation
    assert Media.objects.get(media_id="m1").upload_name == "holiday.png"


@pytest.mark.django_db
def test_api_and_admin_show_undecryptable_and_download_goes_out_without_a_name(alice_client, admin_client):
    path = upload(alice_client, png_bytes(), filename="holiday.png")
    with _other_key_only():
        meta = alice_client.get(f"/api/v1/media/{path}").json()
        assert meta["upload_name"] == Undecryptable.TEXT
        admin_page = admin_client.get(f"/admin/media_app/media/{Media.objects.get().pk}/change/")
        assert b"undecryptable" in admin_page.content
        response = alice_client.get(download_url(path))
        assert response.status_code == 200 and body_of(response) == png_bytes()
        assert "filename" not in response["Content-Disposition"]


def _sqlite_bytes() -> bytes:
    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(FULL)")
    data = b""
    for suffix in ("", "-wal", "-journal"):
        if os.path.exists(f"{name}{suffix}"):
            with open(f"{name}{suffix}", "rb") as fh:
                data += fh.read()
    return data


def _pg_dump() -> bytes:
    db = connection.settings_dict
    require_service("pg_dump", bool(subprocess.run(["which", "pg_dump"], capture_output=True).stdout))
    env = {**os.environ, "PGPASSWORD": db["PASSWORD"] or ""}
    result = subprocess.run(
        ["pg_dump", "-h", db["HOST"] or "127.0.0.1", "-p", str(db["PORT"] or 5432), "-U", db["USER"], db["NAME"]],
        capture_output=True, env=env, check=True,
    )
    return result.stdout


def database_dump() -> bytes:
    """Every byte the database holds, as an attacker with the file or a backup would read it."""
    if connection.vendor == "sqlite":
        return _sqlite_bytes()
    return _pg_dump()


@pytest.mark.django_db(transaction=True)
def test_a_raw_database_dump_holds_no_file_name_or_reason(alice_client, make_user):
    path = upload(alice_client, png_bytes(), filename=CANARY_NAME)
    alice_client.post("/_matrix/media/v3/upload?filename=" + CANARY_NAME, data=b"other bytes",
                      content_type="application/octet-stream")
    moderator = make_user("mod", admin=True)
    moderation_request_create(action=ModerationAction.DELETE_MEDIA, targets=[f"mxc://{path}"],
                              requested_by=moderator, reason=CANARY_REASON)
    # Quarantined at once with a typed reason: the reason is in no event's plain JSON.
    other = upload(alice_client, png_bytes(3, 3))
    media_quarantine(server_name=other.split("/")[0], media_id=other.split("/")[1], moderator=moderator,
                     reason="CanaryQuarantineReason-11aa")
    assert MediaEvent.objects.get(event_type="media.quarantined").note == "CanaryQuarantineReason-11aa"
    assert Media.objects.filter(upload_name=CANARY_NAME).exists() is False  # not even searchable
    dump = database_dump()
    assert len(dump) > 10_000
    assert path.split("/")[1].encode() in dump  # the dump is real: it holds the media ID
    for canary in (CANARY_NAME, "CanaryFileName", "CanaryReasonText", "CanaryQuarantineReason"):
        assert canary.encode() not in dump
        assert canary.encode("utf-16-le") not in dump
