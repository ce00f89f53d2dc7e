"""Which certificates outbound https trusts: the system's CAs, plus those named in
MEDIASITE_FEDERATION_TLS_CA_FILE, never one in place of the other. A TLS origin on loopback
with a certificate from a CA the test makes; "the system's CAs" are pointed at a file through
SSL_CERT_FILE, which OpenSSL reads when the client loads its default trust store."""
import secrets
import ssl

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from media_app.federation import blocklist, client
from tests.conftest import body_of
from tests.federation.origin import Origin
from tests.federation.test_remote_fetch import get
from tests.tls import self_signed_cert


def _origin_with(cert, key) -> Origin:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    return Origin("127.0.0.1", tls=tls)


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory):
    cert, key = self_signed_cert(tmp_path_factory.mktemp("origin-ca"))
    other_ca, _ = self_signed_cert(tmp_path_factory.mktemp("other-ca"))  # signs nothing here
    server = _origin_with(cert, key)
    yield server, cert, other_ca
    server.stop()


@pytest.fixture
def fetch(tls_origin, transactional_db, alice_client, monkeypatch):
    server, _, _ = tls_origin

    def fetch(*, extra_ca_file: str = "", system_ca_file: str | None = None, origin: Origin = server,
              fresh_process: bool = True):
        if system_ca_file is not None:
            monkeypatch.setenv("SSL_CERT_FILE", str(system_ca_file))
        if fresh_process:  # as a new process would start: no context, no connection kept from another case
            client.tls_context.cache_clear()
            client._forget_pools_after_fork()
        data = secrets.token_bytes(1000)
        media_id = origin.on("c" + secrets.token_hex(8), "bytes", data)
        conf = {**django_settings.MEDIASITE, "FEDERATION_SERVER_MAP": {"tls.test": origin.url},
                "OUTBOUND_ALLOWLIST": ["127.0.0.1/32"], "FEDERATION_TLS_CA_FILE": str(extra_ca_file),
                "REMOTE_FETCH_IN_WORKER": False, "REMOTE_FETCH_DEADLINE_SECONDS": 5.0}
        with override_settings(MEDIASITE=conf):
            blocklist.clear_cache()
            response = get(alice_client, "tls.test", media_id)
        blocklist.clear_cache()
        return response, data

    yield fetch
    client.tls_context.cache_clear()
    client._forget_pools_after_fork()


def test_a_certificate_from_the_extra_ca_file_is_trusted(fetch, tls_origin):
    response, data = fetch(extra_ca_file=tls_origin[1])
    assert response.status_code == 200, response.content
    assert body_of(response) == data


def test_the_extra_ca_file_adds_to_the_system_cas_rather_than_replacing_them(fetch, tls_origin):
    _, origin_ca, other_ca = tls_origin
    response, data = fetch(extra_ca_file=other_ca, system_ca_file=origin_ca)
    assert response.status_code == 200, response.content
    assert body_of(response) == data


def test_a_certificate_no_trusted_ca_signed_is_refused(fetch, tls_origin):
    _, _, other_ca = tls_origin
    response, _ = fetch(extra_ca_file=other_ca)
    assert response.status_code == 502 and response.json()["code"] == "REMOTE_FETCH_FAILED"


def test_a_trusted_certificate_for_another_name_is_refused(fetch, tmp_path):
    cert, key = self_signed_cert(tmp_path, dns_names=("elsewhere.test",), ip_addresses=())
    server = _origin_with(cert, key)
    try:
        response, _ = fetch(extra_ca_file=cert, origin=server)
    finally:
        server.stop()
    assert response.status_code == 502 and response.json()["code"] == "REMOTE_FETCH_FAILED"
    assert server.count(next(iter(server.behaviours))) == 0  # refused in the handshake


def test_a_ca_file_that_cannot_be_loaded_fails_the_check_and_answers_502_not_500(fetch, tmp_path):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    missing = tmp_path / "no-such-ca.pem"
    response, _ = fetch(extra_ca_file=missing)
    assert response.status_code == 502 and response.json()["code"] == "REMOTE_FETCH_FAILED"
    conf = {**django_settings.MEDIASITE, "FEDERATION_TLS_CA_FILE": str(missing)}
    with override_settings(MEDIASITE=conf), pytest.raises(SystemCheckError, match="mediasite.E002"):
        call_command("check")


def test_a_rewritten_ca_file_is_read_again_without_a_restart(fetch, tls_origin, tmp_path):
    origin_ca = tls_origin[1]
    # A CA of another name: two CAs of one subject in one file leave OpenSSL picking one of them.
    other_ca, _ = self_signed_cert(tmp_path, dns_names=("unrelated.test",), ip_addresses=())
    ca_file = tmp_path / "federation-ca.pem"
    ca_file.write_bytes(other_ca.read_bytes())
    response, _ = fetch(extra_ca_file=ca_file)
    assert response.status_code == 502  # the origin's CA is not in the file yet

    # The operator adds the origin's CA to the file (a renewal, a new private peer): the next
    # fetch trusts it, in the same process, with no cache cleared.
    ca_file.write_bytes(other_ca.read_bytes() + origin_ca.read_bytes())
    response, data = fetch(extra_ca_file=ca_file, fresh_process=False)
    assert response.status_code == 200, response.content
    assert body_of(response) == data
