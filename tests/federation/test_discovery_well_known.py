"""`/.well-known/matrix/server` over real TLS on port 443: the server name `localhost` is
discovered as the spec says (no port, not an IP literal, so https://localhost/.well-known first),
its delegation followed to a TLS origin, with the certificate checked against a CA made here
(MEDIASITE_FEDERATION_TLS_CA_FILE). SRV lookups ask a DNS server on loopback that knows
nothing, so a refused delegation falls through to port 8448 quickly.

Port 443 needs root and a free port: in CI both are given (a failure there is a failure); on a
developer's machine without them the tests are skipped."""
import secrets
import ssl

import dns.resolver
import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.test import override_settings

from media_app.federation import blocklist
from tests.conftest import body_of, require_service
from tests.federation.origin import Origin
from tests.federation.test_discovery_dns import DnsServer
from tests.federation.test_remote_fetch import get
from tests.tls import self_signed_cert


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("well-known-tls"))


@pytest.fixture(scope="module")
def origins(certificate):
    """(the server answering https://localhost/.well-known/…, the TLS origin it delegates to)"""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*certificate)
    try:
        well_known = Origin("127.0.0.1", port=443, tls=tls)
    except OSError as exc:
        require_service("port 443 on 127.0.0.1", False, f"cannot listen there: {exc}")
    media = Origin("127.0.0.1", tls=tls)
    yield well_known, media
    well_known.stop()
    media.stop()


@pytest.fixture
def discovered(origins, certificate, transactional_db, monkeypatch):
    dns_server = DnsServer()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port
    monkeypatch.setattr(dns.resolver, "default_resolver", resolver)
    caches["federation"].clear()
    conf = {**django_settings.MEDIASITE, "FEDERATION_SERVER_MAP": {}, "OUTBOUND_ALLOWLIST": ["127.0.0.1/32"],
            "FEDERATION_TLS_CA_FILE": str(certificate[0]), "REMOTE_FETCH_IN_WORKER": False,
            "REMOTE_FETCH_DEADLINE_SECONDS": 5.0, "OUTBOUND_CONNECT_TIMEOUT_SECONDS": 2.0}
    with override_settings(MEDIASITE=conf):
        blocklist.clear_cache()
        yield origins
    blocklist.clear_cache()
    caches["federation"].clear()
    dns_server.stop()


def new_id() -> str:
    return "w" + secrets.token_hex(8)


def test_well_known_delegation_is_followed_over_tls_and_remembered(discovered, alice_client):
    well_known, media = discovered
    well_known.on("server", "json", 200, {"m.server": f"localhost:{media.port}"})
    asked_before = well_known.count("server")
    for _ in range(2):
        data = secrets.token_bytes(2000)
        media_id = media.on(new_id(), "federation_bytes", data)
        response = get(alice_client, "localhost", media_id)
        assert response.status_code == 200, response.content
        assert body_of(response) == data
        assert media.count(media_id) == 1
        # Signed for the server name; Host is the delegated name, port included (the spec's rule).
        assert 'destination="localhost"' in media.authorizations[-1]
        assert media.host_headers[-1] == f"localhost:{media.port}"
    assert well_known.count("server") == asked_before + 1  # cached after the first answer
    assert well_known.host_headers[-1] == "localhost"


def test_a_well_known_behind_an_untrusted_certificate_is_ignored(discovered, alice_client, tmp_path):
    well_known, media = discovered
    well_known.on("server", "json", 200, {"m.server": f"localhost:{media.port}"})
    other_ca, _key = self_signed_cert(tmp_path)  # same names, another key: not the origins' certificate
    asked_before = well_known.count("server")
    media_id = media.on(new_id(), "federation_bytes", b"never fetched")
    with override_settings(MEDIASITE={**django_settings.MEDIASITE, "FEDERATION_TLS_CA_FILE": str(other_ca)}):
        response = get(alice_client, "localhost", media_id)
    # No delegation and no SRV record: port 8448 on localhost, where nothing listens.
    assert response.status_code == 502, response.content
    assert media.count(media_id) == 0
    assert well_known.count("server") == asked_before  # the handshake failed before any request
