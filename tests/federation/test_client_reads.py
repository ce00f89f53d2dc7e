"""How the outbound client reads a response body."""
import io

import urllib3
from django.test import override_settings

from media_app.federation import client
from tests.federation.origin import Origin


class _Body(io.BytesIO):
    """A response body whose reads bring at most `piece` bytes (a TLS record at a time), and
    which records what each read asked for."""

    def __init__(self, data, piece=None):
        super().__init__(data)
        self.piece, self.asked = piece, []

    def read1(self, size=-1):
        self.asked.append(size)
        return super().read1(size if self.piece is None else min(size, self.piece))


def _read_all(body: _Body, size: int) -> bytes:
    raw = urllib3.HTTPResponse(body=body, headers={"Content-Length": str(size)}, status=200,
                               preload_content=False, decode_content=False)
    response = client.Response(raw, client.Deadline(30), "http://origin.test/")
    got = bytearray()
    while chunk := response.read(1 << 20):
        got += chunk
    return bytes(got)


def test_small_pieces_are_not_asked_for_in_large_reads():
    # read1 allocates what it is asked for before it learns how little has arrived: a fetch
    # reading 1 MiB at a time from a server sending 4 KiB TLS records paid for a 1 MiB buffer
    # per record.
    data = bytes(range(256)) * 4096  # 1 MiB
    body = _Body(data, piece=4096)
    assert _read_all(body, len(data)) == data
    assert len(body.asked) > 200 and max(body.asked) <= client.READ_BYTES


def test_a_body_that_is_all_there_is_read_in_large_pieces():
    # A plain connection with much waiting: asking 64 KiB at a time made a 32 MiB fetch slower.
    data = bytes(range(256)) * (16 << 10)  # 4 MiB
    body = _Body(data)
    assert _read_all(body, len(data)) == data
    assert max(body.asked) == client.MAX_READ_BYTES and len(body.asked) < 16


def test_a_length_is_plain_ascii_digits_or_none():
    assert client.parse_length(" 1234 ") == 1234
    # Headers are decoded as latin-1: "\xb2" is a digit to str.isdigit(), and not to int().
    assert client.parse_length("\xb2") is None
    assert client.parse_length("-1") is None and client.parse_length("") is None and client.parse_length(None) is None


def test_a_relative_redirect_keeps_the_server_name_of_a_discovered_target(settings):
    # As after SRV discovery: the connection goes to one host, Host names the server.
    origin = Origin("127.0.0.3")
    try:
        origin.on("first", "redirect", "/_matrix/media/v3/download/origin.test/second")
        origin.on("second", "bytes", b"moved")
        target = client.Target("http", "127.0.0.3", origin.port, "origin.test", "origin.test")
        with override_settings(MEDIASITE={**settings.MEDIASITE, "OUTBOUND_ALLOWLIST": ["127.0.0.3/32"]}):
            with client.request("GET", target, "/redirect/first", deadline=client.Deadline(10),
                                follow_redirects=True) as response:
                assert response.read_all(100) == b"moved"
        assert origin.count("second") == 1
        assert origin.host_headers == ["origin.test", "origin.test"]
    finally:
        origin.stop()
