"""The SSRF guard: which addresses an outbound connection may reach."""
import pytest

from media_app.federation import addresses


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "2002:7f00:0001::1", "2002:a9fe:a9fe::",  # 6to4 of 127.0.0.1 and 169.254.169.254
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1",  # NAT64
    # Local-use NAT64 (/48 to /64 translators put the IPv4 address mid-address), public-looking
    # low bits included: refused whole.
    "64:ff9b:1:a9fe:a9:fe00:808:808", "64:ff9b:1:7f00:0:100:808:808", "64:ff9b:1::808:808",
    "::ffff:0:7f00:1", "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT)
    "::127.0.0.1",  # IPv4-compatible
    "fe80::1%eth0",
])
def test_non_public_addresses_are_refused(address, settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "OUTBOUND_ALLOWLIST": []}
    assert not addresses.is_allowed(address)
    with pytest.raises(addresses.AddressBlocked):
        addresses.check(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "2002:0808:0808::1", "64:ff9b::808:808", "::ffff:0:808:808"])
def test_public_addresses_are_allowed(address, settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "OUTBOUND_ALLOWLIST": []}
    assert addresses.is_allowed(address)


def test_allowlist_opens_exactly_its_ranges(settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "OUTBOUND_ALLOWLIST": ["127.0.0.2/32", "fd00::/8"]}
    assert addresses.is_allowed("127.0.0.2")
    assert addresses.is_allowed("::ffff:127.0.0.2")  # the same host, mapped
    assert addresses.is_allowed("fd00::5")
    assert not addresses.is_allowed("127.0.0.1")
    assert not addresses.is_allowed("::ffff:127.0.0.1")
    assert not addresses.is_allowed("169.254.169.254")
