"""This server's ed25519 signing key and the published keys of other servers.

The key is created on first start in the data directory (owner-only, created atomically so
concurrent first starts agree on one key) in Synapse's file format, and is never logged.
Other servers' verify keys are fetched from their `/_matrix/key/v2/server`, checked to be
self-signed by the keys they list, and cached until their `valid_until_ts` (capped).
"""
import io
import logging
import os
import threading
import time
from pathlib import Path

from django.core.cache import caches
from signedjson.key import (decode_verify_key_bytes, encode_verify_key_base64, generate_signing_key,
                            get_verify_key, read_signing_keys, write_signing_keys)
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from unpaddedbase64 import decode_base64

from mediasite import secret_files

from ..conf import media_settings
from . import client, discovery

logger = logging.getLogger(__name__)

KEY_FILE = "signing.key"
# Our response says it stays valid this long; we re-sign well before.
KEY_RESPONSE_VALIDITY_MS = 24 * 3600 * 1000
MAX_REMOTE_KEY_CACHE_SECONDS = 7 * 24 * 3600
MIN_REMOTE_KEY_CACHE_SECONDS = 60
MAX_KEY_RESPONSE_BYTES = 64 * 1024

_lock = threading.Lock()
_signing_key = None
_signed_response: tuple[float, dict] | None = None


class KeyFetchFailed(Exception):
    pass


def _key_path() -> Path:
    return Path(media_settings.DATA_DIR) / KEY_FILE


def _load_or_create():
    def make() -> bytes:
        text = io.StringIO()
        write_signing_keys(text, [generate_signing_key("a_" + os.urandom(3).hex())])
        return text.getvalue().encode()

    data, created = secret_files.read_or_create(_key_path(), make)
    key = read_signing_keys(io.StringIO(data.decode()))[0]
    if created:
        logger.info("Created the federation signing key ed25519:%s", key.version)
    return key


def signing_key():
    global _signing_key
    if _signing_key is None:
        with _lock:
            if _signing_key is None:
                _signing_key = _load_or_create()
    return _signing_key


def key_id() -> str:
    key = signing_key()
    return f"{key.alg}:{key.version}"


def sign(data: dict) -> dict:
    return sign_json(data, media_settings.SERVER_NAME, signing_key())


def server_keys_response() -> dict:
    """The signed body of `GET /_matrix/key/v2/server`, re-signed when half its validity passed."""
    global _signed_response
    now_ms = int(time.time() * 1000)
    cached = _signed_response
    if cached is None or cached[0] < now_ms or cached[1]["server_name"] != media_settings.SERVER_NAME:
        key = signing_key()
        body = sign({
            "server_name": media_settings.SERVER_NAME,
            "valid_until_ts": now_ms + KEY_RESPONSE_VALIDITY_MS,
            "verify_keys": {key_id(): {"key": encode_verify_key_base64(get_verify_key(key))}},
            "old_verify_keys": {},
        })
        _signed_response = cached = (now_ms + KEY_RESPONSE_VALIDITY_MS // 2, body)
    return cached[1]


# --- other servers' keys ---------------------------------------------------------------------

def _cache_key(server_name: str) -> str:
    return f"mediasite:fed:keys:{server_name}"


def _fetch_keys(server_name: str) -> dict:
    deadline = client.Deadline(media_settings.OUTBOUND_CONNECT_TIMEOUT_SECONDS + media_settings.OUTBOUND_READ_TIMEOUT_SECONDS)
    target = discovery.resolve(server_name, deadline=deadline)
    try:
        with client.request("GET", target, "/_matrix/key/v2/server", deadline=deadline) as response:
            if response.status != 200:
                raise KeyFetchFailed(f"key server answered {response.status}")
            raw = response.read_all(MAX_KEY_RESPONSE_BYTES)
    except client.OutboundError as exc:
        raise KeyFetchFailed(str(exc)) from exc
    import json

    try:
        body = json.loads(raw)
        if body.get("server_name") != server_name:
            raise KeyFetchFailed("key response names another server")
        keys = {}
        for kid, value in body.get("verify_keys", {}).items():
            verify_key = decode_verify_key_bytes(kid, decode_base64(value["key"]))
            verify_signed_json(body, server_name, verify_key)  # self-signed by every listed key
            keys[kid] = value["key"]
        valid_until_ms = int(body.get("valid_until_ts", 0))
    except (ValueError, KeyError, TypeError, AttributeError, SignatureVerifyException) as exc:
        raise KeyFetchFailed(f"unusable key response: {exc.__class__.__name__}") from exc
    if not keys:
        raise KeyFetchFailed("key response lists no keys")
    ttl = valid_until_ms / 1000 - time.time()
    ttl = int(min(max(ttl, MIN_REMOTE_KEY_CACHE_SECONDS), MAX_REMOTE_KEY_CACHE_SECONDS))
    caches["federation"].set(_cache_key(server_name), {"keys": keys, "valid_until_ms": valid_until_ms, "fetched": time.time()}, ttl)
    return keys


def verify_key_for(server_name: str, kid: str):
    """The verify key `kid` of `server_name`, fetched from its key server when unknown.

    An unknown key ID refetches at most once a minute per server, so a stream of requests
    with made-up key IDs cannot turn us into a load generator against the claimed origin."""
    entry = caches["federation"].get(_cache_key(server_name))
    keys = entry["keys"] if entry else None
    if keys is None or (kid not in keys and time.time() - entry["fetched"] > MIN_REMOTE_KEY_CACHE_SECONDS):
        keys = _fetch_keys(server_name)
    if kid not in keys:
        raise KeyFetchFailed("the server does not publish that key")
    return decode_verify_key_bytes(kid, decode_base64(keys[kid]))
