"""Server name resolution (server-server spec). DNS and .well-known are the internet: the SRV
and .well-known answers are substituted here; the order of the rules is what is tested."""
import pytest

from media_app import errors
from media_app.federation import discovery


@pytest.fixture
def dns(monkeypatch, settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "FEDERATION_SERVER_MAP": {"mapped.test": "http://127.0.0.1:9000/"}}
    answers = {"srv": {}, "wk": {}}
    monkeypatch.setattr(discovery, "_srv_lookup", lambda name: answers["srv"].get(name))
    monkeypatch.setattr(discovery, "_well_known", lambda host: answers["wk"].get(host))
    return answers


def where(target):
    return target.scheme, target.host, target.port, target.host_header, target.tls_name


def test_server_map_overrides_everything(dns):
    assert where(discovery.resolve("mapped.test")) == ("http", "127.0.0.1", 9000, "mapped.test", "127.0.0.1")


@pytest.mark.parametrize("name, expected", [
    ("1.2.3.4", ("https", "1.2.3.4", 8448, "1.2.3.4", "1.2.3.4")),
    ("1.2.3.4:99", ("https", "1.2.3.4", 99, "1.2.3.4:99", "1.2.3.4")),
    ("[2001:db8::1]", ("https", "2001:db8::1", 8448, "[2001:db8::1]", "2001:db8::1")),
    ("[2001:db8::1]:443", ("https", "2001:db8::1", 443, "[2001:db8::1]:443", "2001:db8::1")),
    ("example.org:8000", ("https", "example.org", 8000, "example.org:8000", "example.org")),
])
def test_ip_literals_and_explicit_ports_connect_directly_without_well_known(dns, name, expected):
    dns["wk"]["example.org"] = "elsewhere.org"  # must not be consulted
    assert where(discovery.resolve(name)) == expected


def test_well_known_delegation_then_srv_of_the_delegated_name(dns):
    dns["wk"]["example.org"] = "matrix.example.org"
    dns["srv"]["_matrix-fed._tcp.matrix.example.org"] = [("host1.example.org", 8443)]
    assert where(discovery.resolve("example.org")) == (
        "https", "host1.example.org", 8443, "matrix.example.org", "matrix.example.org")


def test_well_known_delegation_with_port(dns):
    dns["wk"]["example.org"] = "matrix.example.org:443"
    assert where(discovery.resolve("example.org")) == (
        "https", "matrix.example.org", 443, "matrix.example.org:443", "matrix.example.org")


def test_srv_matrix_fed_before_deprecated_matrix(dns):
    dns["srv"]["_matrix-fed._tcp.example.org"] = [("new.example.org", 1)]
    dns["srv"]["_matrix._tcp.example.org"] = [("old.example.org", 2)]
    assert where(discovery.resolve("example.org"))[1:3] == ("new.example.org", 1)
    del dns["srv"]["_matrix-fed._tcp.example.org"]
    assert where(discovery.resolve("example.org")) == ("https", "old.example.org", 2, "example.org", "example.org")


def test_default_port_8448(dns):
    assert where(discovery.resolve("example.org")) == ("https", "example.org", 8448, "example.org", "example.org")


@pytest.mark.parametrize("name", ["example.org:0", "example.org:99999", "[::1", "example.org:x"])
def test_invalid_server_names_are_refused(dns, name):
    with pytest.raises(errors.InvalidParam):
        discovery.resolve(name)
