"""Where a Matrix server name is reached (server-server spec, "Resolving server names").

1. MEDIASITE_FEDERATION_SERVER_MAP names a base URL: use it (private federations, tests).
2. An IP literal, or a hostname with an explicit port: connect there (port 8448 by default).
3. `https://<hostname>/.well-known/matrix/server` delegates to `m.server`, which is then
   resolved by the same rules (IP literal / explicit port / SRV / 8448), keeping its hostname
   for `Host` and the certificate.
4. SRV `_matrix-fed._tcp.<hostname>`, then the deprecated `_matrix._tcp.<hostname>`.
5. `<hostname>:8448`.

Results are cached (well-known answers for a day, failures for an hour, SRV by its TTL).
"""
import ipaddress
import json
import random

from django.core.cache import caches

from .. import errors
from ..conf import media_settings
from . import client

DEFAULT_PORT = 8448
WELL_KNOWN_CACHE_SECONDS = 24 * 3600
WELL_KNOWN_FAILURE_CACHE_SECONDS = 3600
MAX_WELL_KNOWN_BYTES = 50 * 1024
WELL_KNOWN_TIMEOUT_SECONDS = 10.0


def split_server_name(server_name: str) -> tuple[str, int | None]:
    """(host, port or None); an IPv6 literal keeps no brackets. Raises InvalidParam."""
    if server_name.startswith("["):
        end = server_name.find("]")
        if end < 0:
            raise errors.InvalidParam("Invalid server name")
        host, rest = server_name[1:end], server_name[end + 1:]
        if rest and not rest.startswith(":"):
            raise errors.InvalidParam("Invalid server name")
        port = rest[1:] or None
    else:
        host, _, port = server_name.partition(":")
        port = port or None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise errors.InvalidParam("Invalid server name")
        port = int(port)
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _srv_lookup(name: str) -> list[tuple[str, int]] | None:
    """SRV targets in the order to try them (priority, then weighted), or None."""
    import dns.exception
    import dns.resolver

    cached = caches["federation"].get(f"mediasite:fed:srv:{name}")
    if cached is not None:
        return cached or None
    try:
        answer = dns.resolver.resolve(name, "SRV", lifetime=5.0)
    except (dns.exception.DNSException, OSError):
        caches["federation"].set(f"mediasite:fed:srv:{name}", [], 300)
        return None
    records = sorted(answer, key=lambda r: (r.priority, -random.random() * (r.weight + 1)))
    targets = [(str(r.target).rstrip("."), r.port) for r in records if str(r.target) != "."]
    caches["federation"].set(f"mediasite:fed:srv:{name}", targets, max(60, min(answer.rrset.ttl, 24 * 3600)))
    return targets or None


def _well_known(hostname: str) -> str | None:
    key = f"mediasite:fed:wk:{hostname}"
    cached = caches["federation"].get(key)
    if cached is not None:
        return cached or None
    delegated = None
    try:
        deadline = client.Deadline(WELL_KNOWN_TIMEOUT_SECONDS)
        with client.get_url(f"https://{hostname}/.well-known/matrix/server", deadline=deadline) as response:
            if response.status == 200:
                body = json.loads(response.read_all(MAX_WELL_KNOWN_BYTES))
                value = body.get("m.server") if isinstance(body, dict) else None
                if isinstance(value, str) and value:
                    split_server_name(value)  # must itself be a valid server name
                    delegated = value
    except (client.OutboundError, ValueError, errors.InvalidParam):
        delegated = None
    caches["federation"].set(key, delegated or "", WELL_KNOWN_CACHE_SECONDS if delegated else WELL_KNOWN_FAILURE_CACHE_SECONDS)
    return delegated


def _direct_or_srv(hostname: str, port: int | None, host_header: str) -> client.Target:
    if _is_ip(hostname) or port is not None:
        return client.Target("https", hostname, port or DEFAULT_PORT, host_header, hostname)
    for service in ("_matrix-fed._tcp", "_matrix._tcp"):
        targets = _srv_lookup(f"{service}.{hostname}")
        if targets:
            target_host, target_port = targets[0]
            return client.Target("https", target_host, target_port, host_header, hostname)
    return client.Target("https", hostname, DEFAULT_PORT, host_header, hostname)


def resolve(server_name: str, *, deadline: client.Deadline | None = None) -> client.Target:
    mapped = media_settings.FEDERATION_SERVER_MAP.get(server_name)
    if mapped:
        target = client.Target.from_url(mapped.rstrip("/"))
        return client.Target(target.scheme, target.host, target.port, server_name, target.tls_name)
    hostname, port = split_server_name(server_name)
    if _is_ip(hostname) or port is not None:
        return _direct_or_srv(hostname, port, server_name)
    delegated = _well_known(hostname)
    if delegated:
        d_host, d_port = split_server_name(delegated)
        return _direct_or_srv(d_host, d_port, delegated)
    return _direct_or_srv(hostname, None, hostname)
