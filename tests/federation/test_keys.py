"""The server identity: one ed25519 key made on first start, owner-only, served signed."""
import logging
import stat
from pathlib import Path

import pytest
from django.conf import settings
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from media_app.federation import keys


@pytest.fixture
def fresh_key(tmp_path, settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "DATA_DIR": str(tmp_path), "SERVER_NAME": "a.test"}
    keys._signing_key = keys._signed_response = None
    yield tmp_path
    keys._signing_key = keys._signed_response = None


def test_key_server_answers_json_signed_by_the_key_it_lists(fresh_key, client):
    response = client.get("/_matrix/key/v2/server")
    assert response.status_code == 200
    body = response.json()
    assert body["server_name"] == "a.test"
    [(kid, value)] = body["verify_keys"].items()
    assert kid.startswith("ed25519:")
    verify_key = decode_verify_key_bytes(kid, decode_base64(value["key"]))
    verify_signed_json(body, "a.test", verify_key)
    body["valid_until_ts"] += 1  # any change breaks the signature
    with pytest.raises(SignatureVerifyException):
        verify_signed_json(body, "a.test", verify_key)


def test_key_is_created_once_owner_only_and_reused(fresh_key, caplog):
    caplog.set_level(logging.DEBUG)
    first = keys.key_id()
    path = Path(fresh_key) / keys.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    seed = path.read_text().split()[2]
    assert seed not in caplog.text
    keys._signing_key = None  # a new process reads the same file
    assert keys.key_id() == first
    assert not list(Path(fresh_key).glob(".signing-*"))


def test_key_server_is_public_and_rejects_other_methods(fresh_key, client):
    assert client.post("/_matrix/key/v2/server").status_code == 405
    assert settings.MEDIASITE["SERVER_NAME"] == "a.test"
