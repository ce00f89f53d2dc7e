"""SRV discovery against a real DNS server on loopback: dnspython's resolver asks it over UDP,
so the query, the answer's parsing, the order of the records and the caching are the code's own.
(.well-known over real TLS: test_discovery_well_known.py.)"""
import collections
import secrets
import socket
import threading

import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
from django.core.cache import caches

from media_app.federation import discovery


class DnsServer:
    """Answers SRV queries from `records` (name → [(priority, weight, port, target)]), NXDOMAIN
    otherwise; counts the queries per name."""

    def __init__(self):
        self.records: dict[str, list[tuple]] = {}
        self.queries: collections.Counter = collections.Counter()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text().rstrip(".")
            self.queries[name] += 1
            response = dns.message.make_response(query)
            records = self.records.get(name) if question.rdtype == dns.rdatatype.SRV else None
            if records:
                rrset = response.find_rrset(response.answer, question.name, dns.rdataclass.IN, dns.rdatatype.SRV,
                                            create=True)
                for priority, weight, port, target in records:
                    rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV,
                                                  f"{priority} {weight} {port} {target}."), ttl=600)
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def stop(self):
        self.sock.close()


@pytest.fixture(scope="module")
def dns_server():
    server = DnsServer()
    yield server
    server.stop()


@pytest.fixture
def resolver(dns_server, monkeypatch):
    """This project's discovery asking the loopback DNS server (its address is the only substitute)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port
    monkeypatch.setattr(dns.resolver, "default_resolver", resolver)
    monkeypatch.setattr(discovery, "_well_known", lambda host: None)
    caches["federation"].clear()
    return dns_server


def host() -> str:
    return f"h{secrets.token_hex(6)}.example"


def where(target):
    return target.scheme, target.host, target.port, target.host_header, target.tls_name


def test_matrix_fed_srv_record_with_the_lowest_priority_is_used(resolver):
    name = host()
    resolver.records[f"_matrix-fed._tcp.{name}"] = [(20, 0, 9001, "backup.example"), (10, 5, 8443, "main.example")]
    assert where(discovery.resolve(name)) == ("https", "main.example", 8443, name, name)


def test_legacy_matrix_srv_record_is_used_when_matrix_fed_has_none(resolver):
    name = host()
    resolver.records[f"_matrix._tcp.{name}"] = [(10, 0, 8449, "old.example")]
    assert where(discovery.resolve(name)) == ("https", "old.example", 8449, name, name)
    assert resolver.queries[f"_matrix-fed._tcp.{name}"] == 1


def test_no_srv_record_means_port_8448_on_the_name_itself(resolver):
    name = host()
    assert where(discovery.resolve(name)) == ("https", name, 8448, name, name)
    assert resolver.queries[f"_matrix-fed._tcp.{name}"] == 1 and resolver.queries[f"_matrix._tcp.{name}"] == 1


def test_a_dot_target_says_there_is_no_service_there(resolver):
    name = host()
    resolver.records[f"_matrix-fed._tcp.{name}"] = [(0, 0, 0, "")]  # "." : explicitly none
    assert where(discovery.resolve(name)) == ("https", name, 8448, name, name)


def test_answers_are_cached_and_not_asked_again(resolver):
    name = host()
    resolver.records[f"_matrix-fed._tcp.{name}"] = [(10, 0, 8443, "cached.example")]
    first = where(discovery.resolve(name))
    resolver.records[f"_matrix-fed._tcp.{name}"] = [(10, 0, 1, "changed.example")]
    assert where(discovery.resolve(name)) == first
    assert resolver.queries[f"_matrix-fed._tcp.{name}"] == 1
