#!/usr/bin/env python3
"""First fetches of remote media: Mediasite against Synapse, from the same origin, in one run.

Starts an origin (Mediasite, embedded default) behind an nginx TLS proxy, since Synapse speaks
only https to its peers; a second Mediasite (A, embedded default) and a Synapse (the pinned
release the interop tests install, tests/interop/synapse.py), both fetching from the origin over
signed federation through that proxy. Each round uploads three fresh files of the same size to
the origin, then, in an order that alternates between rounds, downloads one directly from the
origin through the proxy (a new connection, as a client that has never talked to it), has A
fetch the second and Synapse the third for the first time. A first untimed fetch through each
lets the origin fetch their keys and them open their connections, as any later fetch finds.

With --thumbnail, each file is a JPEG photo of its own (1024x768, about 100 KiB) and each
request is for its 320x240 thumbnail instead: the first thing a client shows of an image sent
from another server. With --video, each file starts as an MP4 does (federation_bench.media_bytes).

Prints one JSON object: medians over the rounds and the ratios. Needs nginx and, the first time,
the registry that Synapse installs from.

Usage: bench/federation_vs_synapse.py [--first 30] [--size-kb 256] [--thumbnail | --video]
"""
import argparse
import functools
import http.client
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.federation_bench import free_port, media_bytes, request, start, upload  # noqa: E402
from tests.interop.synapse import SYNAPSE_FEDERATION_ON_LOOPBACK, start_synapse  # noqa: E402
from tests.interop.tlsproxy import TlsProxy  # noqa: E402


def photo() -> bytes:
    """A JPEG of its own, smooth like a photo: random colours blown up from 32x24."""
    from io import BytesIO

    from PIL import Image

    small = Image.frombytes("RGB", (32, 24), os.urandom(32 * 24 * 3))
    out = BytesIO()
    small.resize((1024, 768), Image.BICUBIC).save(out, "JPEG", quality=85)
    return out.getvalue()


def stop(procs: list, synapse, proxy, tmp: Path) -> None:
    """Stop what a run started (whatever of it had started) and remove its files."""
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)
    if synapse is not None:
        synapse.stop()
    if proxy is not None:
        proxy.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--first", type=int, default=30)
    ap.add_argument("--size-kb", type=int, default=256)
    ap.add_argument("--thumbnail", action="store_true", help="time 320x240 thumbnails of photos instead")
    ap.add_argument("--video", action="store_true", help="files that start as an MP4 does (see federation_bench)")
    a = ap.parse_args()
    size = a.size_kb << 10
    kind = "thumbnail" if a.thumbnail else "download"
    query = "?width=320&height=240&method=scale" if a.thumbnail else ""
    payload = photo if a.thumbnail else (lambda: media_bytes(size, a.video))

    def check(status, body):
        if a.thumbnail:
            assert status == 200 and body[:2] in (b"\xff\xd8", b"\x89P"), (status, body[:300])
        else:
            assert status == 200 and len(body) == size, (status, body[:300])
    tmp = Path(tempfile.mkdtemp(prefix="fedsynapse-"))
    port_b, tls_b, port_a, port_s = free_port(), free_port(), free_port(), free_port()
    procs, synapse, proxy = [], None, None
    try:
        proxy = TlsProxy(tmp / "nginx", {tls_b: port_b})
        origin = f"127.0.0.1:{tls_b}"  # an IP literal with a port: both fetchers connect straight to the proxy
        synapse = start_synapse(tmp / "synapse", port=port_s, extra_config=SYNAPSE_FEDERATION_ON_LOOPBACK,
                                server_name="synapse.bench")
        for name in ("a", "b"):
            (tmp / name).mkdir()
        b, _, token_b = start(origin, port_b, tmp / "b", {"a.bench": f"http://127.0.0.1:{port_a}",
                                                          "synapse.bench": synapse.url}, workers=2)
        procs += b
        a_procs, _, token_a = start("a.bench", port_a, tmp / "a", {}, workers=3,
                                    MEDIASITE_FEDERATION_TLS_CA_FILE=str(proxy.cert))
        procs += a_procs

        tls = ssl.create_default_context(cafile=str(proxy.cert))

        def ask(port, token, mxc, conn=None):
            check(*request(port, "GET", f"/_matrix/client/v1/media/{kind}/{mxc}{query}", token, conn=conn))

        def direct(mxc):
            conn = http.client.HTTPSConnection("127.0.0.1", tls_b, timeout=120, context=tls)
            try:
                ask(None, token_b, mxc, conn)
            finally:
                conn.close()

        through_a = functools.partial(ask, port_a, token_a)
        through_synapse = functools.partial(ask, port_s, synapse.token)
        for fetch in (through_a, through_synapse):  # untimed: keys and connections
            fetch(upload(port_b, token_b, payload()))
        times = {"direct": [], "mediasite": [], "synapse": []}
        for i in range(a.first):
            ways = [("direct", direct), ("mediasite", through_a), ("synapse", through_synapse)]
            if i % 2:
                ways.reverse()
            mxcs = [upload(port_b, token_b, payload()) for _ in ways]
            for (label, fetch), mxc in zip(ways, mxcs):
                times[label].append(timed(lambda: fetch(mxc)))
        ms = {label: statistics.median(values) * 1000 for label, values in times.items()}
        print(json.dumps({
            "what": "320x240 thumbnail of a 1024x768 JPEG" if a.thumbnail
            else f"{a.size_kb} KiB download" + (" (MP4 head)" if a.video else ""),
            "rounds": a.first,
            "direct_from_origin_ms_median": round(ms["direct"], 1),
            "mediasite_first_ms_median": round(ms["mediasite"], 1),
            "synapse_first_ms_median": round(ms["synapse"], 1),
            "mediasite_over_direct": round(ms["mediasite"] / ms["direct"], 2),
            "synapse_over_direct": round(ms["synapse"] / ms["direct"], 2),
            "mediasite_over_synapse": round(ms["mediasite"] / ms["synapse"], 2),
        }))
    finally:
        stop(procs, synapse, proxy, tmp)


if __name__ == "__main__":
    main()
