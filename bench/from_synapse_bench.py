#!/usr/bin/env python3
"""First fetches of a Synapse's media by Mediasite: answered as they arrive, or checked whole.

Starts a Synapse (the pinned release the interop tests install, tests/interop/synapse.py) and a
Mediasite (A, embedded default), each behind an nginx TLS proxy, since Synapse speaks only
https to its peers. Synapse's multipart answers declare their total length, not the part's: A
infers the part's length from it (docs/FEDERATION.md). Each round uploads three fresh files of
the same size to Synapse: two that start as an MP4 does, one of random bytes. In an order that
alternates between rounds, it downloads one MP4 directly from Synapse through the proxy (a new
connection), and has A fetch the other MP4 (answered as it arrives) and the random bytes
(checked whole before the first byte) for the first time. Each is timed to its first body byte
and to its last. A first untimed fetch lets Synapse fetch A's key and A open its connection.

Prints one JSON object: medians over the rounds. Needs nginx and, the first time, the registry
that Synapse installs from.

Usage: bench/from_synapse_bench.py [--first 10] [--size-kb 8192]
"""
import argparse
import http.client
import json
import ssl
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.federation_bench import free_port, media_bytes, start, timed_download  # noqa: E402
from bench.federation_vs_synapse import stop  # noqa: E402
from tests.interop.synapse import SYNAPSE_FEDERATION_ON_LOOPBACK, start_synapse  # noqa: E402
from tests.interop.tlsproxy import TlsProxy  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--first", type=int, default=10)
    ap.add_argument("--size-kb", type=int, default=8192)
    a = ap.parse_args()
    size = a.size_kb << 10
    tmp = Path(tempfile.mkdtemp(prefix="fromsynapse-"))
    port_a, tls_a, port_s, tls_s = free_port(), free_port(), free_port(), free_port()
    procs, synapse, proxy = [], None, None
    try:
        proxy = TlsProxy(tmp / "nginx", {tls_a: port_a, tls_s: port_s})
        synapse = start_synapse(tmp / "synapse", port=port_s, extra_config=SYNAPSE_FEDERATION_ON_LOOPBACK,
                                server_name="synapse.bench")
        (tmp / "a").mkdir()
        # An IP literal with a port as A's name: Synapse connects straight to A's proxy.
        a_procs, _, token_a = start(f"127.0.0.1:{tls_a}", port_a, tmp / "a",
                                    {"synapse.bench": f"https://127.0.0.1:{tls_s}"}, workers=3,
                                    MEDIASITE_FEDERATION_TLS_CA_FILE=str(proxy.cert))
        procs += a_procs
        tls = ssl.create_default_context(cafile=str(proxy.cert))

        def to_synapse(data: bytes) -> str:
            conn = http.client.HTTPConnection("127.0.0.1", port_s, timeout=120)
            conn.request("POST", "/_matrix/media/v3/upload", body=data,
                         headers={"Authorization": f"Bearer {synapse.token}", "Content-Type": "application/octet-stream"})
            answer = conn.getresponse().read()
            conn.close()
            return json.loads(answer)["content_uri"].removeprefix("mxc://")

        def through_a(mxc: str):
            return timed_download(port_a, f"/_matrix/client/v1/media/download/{mxc}", token_a)

        def direct(mxc: str):
            conn = http.client.HTTPSConnection("127.0.0.1", tls_s, timeout=120, context=tls)
            return timed_download(None, f"/_matrix/client/v1/media/download/{mxc}", synapse.token, conn)

        through_a(to_synapse(media_bytes(size, True)))  # untimed: keys and connections
        times = {"direct": [], "streamed": [], "whole": []}
        for i in range(a.first):
            ways = [("direct", direct, True), ("streamed", through_a, True), ("whole", through_a, False)]
            if i % 2:
                ways.reverse()
            files = [(label, fetch, media_bytes(size, video)) for label, fetch, video in ways]
            mxcs = [to_synapse(data) for _, _, data in files]
            for (label, fetch, data), mxc in zip(files, mxcs):
                status, body, end, first, headers = fetch(mxc)
                assert status == 200 and body == data, (label, status, body[:300])
                if label != "direct":  # a streamed answer has no ETag: the hash is not known yet
                    assert ("ETag" in headers) == (label == "whole"), (label, headers)
                times[label].append((first * 1000, end * 1000))
        med = {label: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v))
               for label, v in times.items()}
        print(json.dumps({
            "what": f"{a.size_kb} KiB from Synapse", "rounds": a.first,
            **{f"{label}_first_byte_ms_median": round(m[0], 1) for label, m in med.items()},
            **{f"{label}_ms_median": round(m[1], 1) for label, m in med.items()},
            "streamed_over_direct": round(med["streamed"][1] / med["direct"][1], 2),
            "whole_over_direct": round(med["whole"][1] / med["direct"][1], 2),
        }))
    finally:
        stop(procs, synapse, proxy, tmp)


if __name__ == "__main__":
    main()
