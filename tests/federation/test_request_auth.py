"""Verifying other servers' X-Matrix requests: a request names its origin before anything is
verified, so the key fetches it causes are bounded (one per server at a time, failures
remembered, a rate per client address), and a key is used only until its `valid_until_ts`."""
import secrets
import time
import types

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from media_app import ratelimit, singleflight
from media_app.federation import keys
from tests.federation.origin import Origin

URI = "/_matrix/federation/v1/media/download/nothing"


@pytest.fixture(scope="module")
def key_server():
    server = Origin("127.0.0.3")
    yield server
    server.stop()


def _names(count: int) -> list[str]:
    """Server names no other test has used (the key cache and remembered failures outlive a test)."""
    return [f"s{secrets.token_hex(4)}.test" for _ in range(count)]


def _configured(key_server, names, **extra):
    return override_settings(MEDIASITE={
        **django_settings.MEDIASITE, "OUTBOUND_ALLOWLIST": ["127.0.0.3/32"],
        "FEDERATION_SERVER_MAP": {name: key_server.url for name in names}, **extra,
    })


def _signed_get(client, key, origin: str):
    destination = django_settings.MEDIASITE["SERVER_NAME"]
    signed = sign_json({"method": "GET", "uri": URI, "origin": origin, "destination": destination}, origin, key)
    sig = signed["signatures"][origin][f"ed25519:{key.version}"]
    auth = f'X-Matrix origin="{origin}",destination="{destination}",key="ed25519:{key.version}",sig="{sig}"'
    return client.get(URI, HTTP_AUTHORIZATION=auth)


def _publish(key_server, name: str, key, valid_until_ms: int) -> None:
    """`key_server` answers every key request with `name`'s keys (the key server path's last
    segment is "server", the Origin's behaviour key)."""
    body = sign_json({"server_name": name, "valid_until_ts": valid_until_ms, "old_verify_keys": {},
                      "verify_keys": {f"ed25519:{key.version}": {"key": encode_verify_key_base64(get_verify_key(key))}}},
                     name, key)
    key_server.on("server", "json", 200, body)


def test_a_failed_key_fetch_is_remembered_not_repeated_per_request(key_server, db, client):
    [name] = _names(1)
    key_server.on("server", "error", 500)
    key = generate_signing_key("k1")
    before = key_server.count("server")
    with _configured(key_server, [name]):
        answers = [_signed_get(client, key, name) for _ in range(6)]
    assert [a.status_code for a in answers] == [401] * 6
    assert {a.json()["errcode"] for a in answers} == {"M_UNAUTHORIZED"}
    assert key_server.count("server") - before == 1


def test_the_key_fetches_one_client_address_causes_are_rate_limited(key_server, db, client):
    names = _names(5)
    key_server.on("server", "error", 500)
    key = generate_signing_key("k1")
    ratelimit.reset()
    before = key_server.count("server")
    try:
        with _configured(key_server, names, KEY_FETCH_RATE_PER_IP="3/minute"):
            answers = [_signed_get(client, key, name) for name in names]
    finally:
        ratelimit.reset()
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    assert answers[-1].json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert int(answers[-1]["Retry-After"]) > 0
    assert key_server.count("server") - before == 3
    # Refused before the single flight: nothing recorded there, for these servers' next requester.
    for name in names[3:]:
        singleflight.raise_if_failed(f"server-keys:{name}")


def test_keys_are_used_only_until_their_valid_until_ts(key_server, db, client, monkeypatch):
    expired, valid = _names(2)
    key = generate_signing_key("k1")
    now = time.time()
    with _configured(key_server, [expired, valid]):
        _publish(key_server, expired, key, int((now - 24 * 3600) * 1000))
        refused = _signed_get(client, key, expired)
        _publish(key_server, valid, key, int((now + 30) * 1000))
        accepted = _signed_get(client, key, valid)  # past the signature check: the media does not exist
        fetches = key_server.count("server")
        # keys.py's clock moved on: 40 s later the cached keys have lapsed, and are not fetched
        # again within the minute; 100 s later they are, and are still no longer valid.
        monkeypatch.setattr(keys, "time", types.SimpleNamespace(time=lambda: now + 40))
        lapsed = _signed_get(client, key, valid)
        refetches = key_server.count("server") - fetches
        monkeypatch.setattr(keys, "time", types.SimpleNamespace(time=lambda: now + 100))
        lapsed_later = _signed_get(client, key, valid)
    assert refused.status_code == 401, refused.content
    assert accepted.status_code == 404, accepted.content
    assert lapsed.status_code == 401 and refetches == 0, lapsed.content
    assert lapsed_later.status_code == 401 and key_server.count("server") - fetches == 1
