"""This server's ed25519 signing key and the published keys of other servers.

The key is created on first start in the data directory (owner-only, created atomically so
concurrent first starts agree on one key) in Synapse's file format, and is never logged.
Other servers' verify keys are fetched from their `/_matrix/key/v2/server`, checked to be
self-signed by the keys they list, cached until their `valid_until_ts` (capped), and not used
past it.

A request to the federation endpoints names its origin before anything is verified, so a key
fetch is something anyone can ask of us: each server's keys are fetched by one request at a
time (the single flight: the processes of a machine, and machines sharing Redis; the others
wait for it), a failed fetch is answered from memory for
KEY_FAILURE_CACHE_SECONDS, and the fetches one client address causes are rate-limited
(MEDIASITE_KEY_FETCH_RATE_PER_IP), so made-up origins cannot turn us into a load generator.
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

from .. import errors, ratelimit, singleflight
from ..conf import media_settings
from . import client, discovery

logger = logging.getLogger(__name__)

KEY_FILE = "signing.key"
# Our response says it stays valid this long; we re-sign well before.
KEY_RESPONSE_VALIDITY_MS = 24 * 3600 * 1000
MAX_REMOTE_KEY_CACHE_SECONDS = 7 * 24 * 3600
MIN_REMOTE_KEY_CACHE_SECONDS = 60
MAX_KEY_RESPONSE_BYTES = 64 * 1024
KEY_FAILURE_CACHE_SECONDS = 60

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


def _fetch_seconds() -> float:
    return media_settings.OUTBOUND_CONNECT_TIMEOUT_SECONDS + media_settings.OUTBOUND_READ_TIMEOUT_SECONDS


def _fetch_keys(server_name: str) -> dict:
    """Fetch, check and cache the server's keys; the cache entry."""
    deadline = client.Deadline(_fetch_seconds())
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
    entry = {"keys": keys, "valid_until_ms": valid_until_ms, "fetched": time.time()}
    caches["federation"].set(_cache_key(server_name), entry, ttl)
    return entry


def verify_key_for(server_name: str, kid: str, *, requester_ip: str = "") -> object:
    """The verify key `kid` of `server_name`, valid now, fetched from its key server when it is
    not known (or known only expired).

    A key ID not among those fetched, or keys past their `valid_until_ts`, refetch at most once
    a minute per server; a failed fetch is not retried for KEY_FAILURE_CACHE_SECONDS. Raises
    KeyFetchFailed, FederationUnauthorized (the fetch failed, now or lately), or RateLimited
    (`requester_ip` has caused too many fetches)."""
    asked_at = time.time()
    entry = caches["federation"].get(_cache_key(server_name))
    if entry is None or not _usable(entry, kid, asked_at):
        if entry is not None and asked_at - entry["fetched"] <= MIN_REMOTE_KEY_CACHE_SECONDS:
            raise KeyFetchFailed("the server does not publish that key, or its keys have expired")
        entry = _fetch_once(server_name, requester_ip, fetched_since=asked_at)
        if not _usable(entry, kid, time.time()):
            raise KeyFetchFailed("the server does not publish that key, or its keys have expired")
    return decode_verify_key_bytes(kid, decode_base64(entry["keys"][kid]))


def _usable(entry: dict, kid: str, now: float) -> bool:
    return kid in entry["keys"] and entry["valid_until_ms"] > now * 1000


def _fetch_once(server_name: str, requester_ip: str, *, fetched_since: float) -> dict:
    """A fetch of the server's keys made since `fetched_since`: this request's own, or the one
    another request (in any process) is making; its failure is remembered for a while."""
    flight = f"server-keys:{server_name}"

    def fresh() -> dict | None:
        entry = caches["federation"].get(_cache_key(server_name))
        return entry if entry is not None and entry["fetched"] >= fetched_since else None

    def fetch() -> dict:
        try:
            return _fetch_keys(server_name)
        except KeyFetchFailed as exc:
            logger.info("Fetching the signing keys of %s failed: %s", server_name, exc)
            raise errors.FederationUnauthorized("Could not fetch the origin's signing keys") from None

    try:
        singleflight.raise_if_failed(flight)
        # Counted before the flight is touched: a refused requester leaves no trace in the
        # flights' store, and no other requester is answered its refusal.
        ratelimit.hit(rule=media_settings.KEY_FETCH_RATE_PER_IP, scope="key-fetch-ip", key=requester_ip or "unknown",
                      message="Too many requests naming servers whose keys are not known")
        return singleflight.run_once(
            flight, lookup=fresh, compute=fetch, lease=_fetch_seconds() + 10, timeout=_fetch_seconds(),
            failure_ttl=KEY_FAILURE_CACHE_SECONDS,
        )
    except errors.FlightTimedOut:
        raise KeyFetchFailed("the server's keys are still being fetched") from None
