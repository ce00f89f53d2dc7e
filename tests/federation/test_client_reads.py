"""How the outbound client reads a response body."""
import io

import urllib3

from media_app.federation import client


class _RecordingBody(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.asked = []

    def read1(self, size=-1):
        self.asked.append(size)
        return super().read1(size)


def test_a_read_never_asks_the_connection_for_more_than_read_bytes():
    # read1 allocates what it is asked for before it learns how little has arrived: a fetch
    # reading 1 MiB at a time from a server sending 4 KiB TLS records paid for a 1 MiB buffer
    # per record.
    data = bytes(range(256)) * 4096  # 1 MiB
    body = _RecordingBody(data)
    raw = urllib3.HTTPResponse(body=body, headers={"Content-Length": str(len(data))}, status=200,
                               preload_content=False, decode_content=False)
    response = client.Response(raw, client.Deadline(30), "http://origin.test/")
    got = bytearray()
    while chunk := response.read(1 << 20):
        got += chunk
    assert bytes(got) == data
    assert body.asked and max(body.asked) <= client.READ_BYTES
