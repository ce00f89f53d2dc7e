"""X-Matrix request authentication (server-server spec, "Request Authentication"):
signing our outbound requests and verifying other servers' requests to us."""
import re

from signedjson.sign import SignatureVerifyException, verify_signed_json

from .. import errors
from ..conf import media_settings
from ..services import identifiers
from . import blocklist, keys

_PARAM = re.compile(r'\s*([A-Za-z0-9_]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,]*)\s*(?:,|$)')


def authorization_header(*, method: str, uri: str, destination: str, content=None) -> str:
    """The `Authorization` value for a request from this server to `destination`."""
    request = {"method": method, "uri": uri, "origin": media_settings.SERVER_NAME, "destination": destination}
    if content is not None:
        request["content"] = content
    signed = keys.sign(request)
    kid = keys.key_id()
    sig = signed["signatures"][media_settings.SERVER_NAME][kid]
    return (f'X-Matrix origin="{media_settings.SERVER_NAME}",destination="{destination}",'
            f'key="{kid}",sig="{sig}"')


def parse_header(value: str) -> dict:
    scheme, _, params = value.strip().partition(" ")
    if scheme != "X-Matrix":
        raise errors.FederationUnauthorized()
    parsed = {}
    position = 0
    params = params.strip()
    while position < len(params):
        match = _PARAM.match(params, position)
        if not match or match.end() == position:
            raise errors.FederationUnauthorized("Malformed X-Matrix header")
        name, raw = match.groups()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        parsed[name] = raw
        position = match.end()
    return parsed


def verify_request(*, method: str, uri: str, authorization: str | None, content=None, requester_ip: str = "") -> str:
    """The origin server name of a correctly signed request to us, or raise (401/403; 429 when
    `requester_ip` has made us fetch too many servers' keys)."""
    if not authorization:
        raise errors.FederationUnauthorized("Missing X-Matrix signature")
    params = parse_header(authorization)
    origin, kid, sig = params.get("origin"), params.get("key"), params.get("sig")
    if not (origin and kid and sig):
        raise errors.FederationUnauthorized("Incomplete X-Matrix header")
    try:
        identifiers.validate(origin, "x")
    except errors.InvalidParam:
        raise errors.FederationUnauthorized("Invalid origin server name") from None
    destination = params.get("destination")
    if destination is not None and destination != media_settings.SERVER_NAME:
        raise errors.FederationUnauthorized("Request addressed to another server")
    if blocklist.is_blocked(origin):
        raise errors.MediaServerBlocked()
    request = {"method": method, "uri": uri, "origin": origin,
               "destination": destination or media_settings.SERVER_NAME,
               "signatures": {origin: {kid: sig}}}
    if destination is None:
        del request["destination"]
    if content is not None:
        request["content"] = content
    try:
        verify_key = keys.verify_key_for(origin, kid, requester_ip=requester_ip)
    except keys.KeyFetchFailed:
        raise errors.FederationUnauthorized("Could not fetch the origin's signing keys") from None
    try:
        verify_signed_json(request, origin, verify_key)
    except SignatureVerifyException:
        raise errors.FederationUnauthorized("Signature does not verify") from None
    return origin
