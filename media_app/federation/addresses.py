"""Which IP addresses an outbound connection may reach (SSRF guard).

Only globally routable unicast addresses are allowed, unless an operator's CIDR in
MEDIASITE_OUTBOUND_ALLOWLIST opens a range. IPv6 forms that carry an IPv4 address (IPv4-mapped,
IPv4-translated, IPv4-compatible, 6to4, well-known NAT64, Teredo) are judged by the IPv4
address they lead to, so `::ffff:127.0.0.1` or `64:ff9b::a9fe:a9fe` cannot reach what
`127.0.0.1` or `169.254.169.254` cannot. The local-use NAT64 prefix `64:ff9b:1::/48` is refused
whole: a translator may use any prefix length within it, so where its IPv4 address lies (and
whether the rest is a suffix the requester chose) cannot be known here. The check runs on the
address a socket actually connected to (see client.py), so a name that resolves differently
between check and use gains nothing.
"""
import functools
import ipaddress

from ..conf import media_settings

# Explicit, not only `is_global`: the standard library's tables have changed between Python
# versions, and these are the ranges this guard promises to refuse.
_BLOCKED_V4 = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
)]
_BLOCKED_V6 = [ipaddress.ip_network(n) for n in (
    "::/128", "::1/128", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10",
    "ff00::/8", "2001::/23", "64:ff9b:1::/48",
)]
# The IPv4 address in the last 32 bits: the well-known NAT64 prefix, and SIIT's IPv4-translated
# addresses (::ffff:0:a.b.c.d).
_V4_IN_LOW_BITS = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::ffff:0:0:0/96")]
_V4_COMPAT = ipaddress.ip_network("::/96")


class AddressBlocked(Exception):
    """An outbound connection would reach a forbidden address."""


@functools.lru_cache(maxsize=8)
def _allowlist(raw: tuple) -> tuple:
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in raw if cidr.strip())


def allowlist() -> tuple:
    return _allowlist(tuple(media_settings.OUTBOUND_ALLOWLIST))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the translation forms."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if any(ip in net for net in _V4_IN_LOW_BITS) or (ip in _V4_COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _normalise(ip):
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _globally_routable(ip) -> bool:
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in _BLOCKED_V4) and ip.is_global
    inner = embedded_ipv4(ip)
    if inner is not None:
        return _globally_routable(inner)
    return not any(ip in net for net in _BLOCKED_V6) and ip.is_global and not ip.is_multicast


def is_allowed(address: str) -> bool:
    ip = _normalise(ipaddress.ip_address(address.split("%", 1)[0]))
    if any(ip.version == net.version and ip in net for net in allowlist()):
        return True
    return _globally_routable(ip)


def check(address: str) -> None:
    if not is_allowed(address):
        raise AddressBlocked(address)
