import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from media_app.models import Media


def _raw_names():
    with connection.cursor() as cursor:
        cursor.execute("SELECT upload_name FROM media_app_media ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_rotation_re_encrypts_with_the_new_key_and_keeps_plaintext():
    old_key = settings.MEDIASITE["ENCRYPTION_KEYS"][0]
    for i in range(7):
        Media.objects.create(server_name="s", media_id=f"m{i}", upload_name=f"name-{i}.png")
    Media.objects.create(server_name="s", media_id="none", upload_name=None)
    new_key = Fernet.generate_key().decode()
    with override_settings(MEDIASITE={**settings.MEDIASITE, "ENCRYPTION_KEYS": [new_key, old_key]}):
        call_command("rotate_encryption_keys", "--batch-size", "3")
        raw = [value for value in _raw_names() if value]
        assert len(raw) == 7
        for token in raw:
            assert Fernet(new_key.encode()).decrypt(token.encode()).decode().startswith("name-")
    # Only the new key is needed from now on.
    with override_settings(MEDIASITE={**settings.MEDIASITE, "ENCRYPTION_KEYS": [new_key]}):
        assert sorted(Media.objects.exclude(upload_name=None).values_list("upload_name", flat=True)) == [
            f"name-{i}.png" for i in range(7)
        ]
