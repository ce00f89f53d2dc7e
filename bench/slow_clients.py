#!/usr/bin/env python3
"""Downloads while slow clients hold connections open: prints the probes' latency percentiles.

Opens HEADS connections that send a request head one byte every INTERVAL seconds and BODIES
connections that send an upload body at one byte per INTERVAL (each re-opened when the server
closes it), then times sequential small downloads, each on a new connection, for SECONDS.

Usage: slow_clients.py --base URL --token TOKEN [--heads 200] [--bodies 20] [--interval 2] [--seconds 20]
"""
import argparse
import http.client
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.slow_clients import SlowClients, percentile, probe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--heads", type=int, default=200)
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    u = urllib.parse.urlparse(args.base)

    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", "/_matrix/media/v3/upload", body=os.urandom(16 << 10),
                 headers={"Authorization": f"Bearer {args.token}", "Content-Type": "application/octet-stream"})
    mxc = json.loads(conn.getresponse().read())["content_uri"].removeprefix("mxc://")
    path = f"/_matrix/client/v1/media/download/{mxc}"

    latencies, failures = [], 0
    with SlowClients(u.hostname, u.port, heads=args.heads, bodies=args.bodies, interval=args.interval,
                     token=args.token) as slow:
        time.sleep(args.interval * 2)  # let every slow client get going
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            try:
                status, seconds, _ = probe(u.hostname, u.port, path, args.token, timeout=30)
                latencies.append(seconds)
                failures += status != 200
            except OSError:
                failures += 1
    ms = lambda s: round(s * 1000, 1)  # noqa: E731
    print(json.dumps({
        "heads": args.heads, "bodies": args.bodies, "probes": len(latencies), "failed": failures,
        "p50_ms": ms(percentile(latencies, 0.5)) if latencies else None,
        "p99_ms": ms(percentile(latencies, 0.99)) if latencies else None,
        "max_ms": ms(max(latencies)) if latencies else None,
        "slow_opened": slow.stats.opened, "slow_closed_by_server": slow.stats.closed_by_server,
    }))


if __name__ == "__main__":
    main()
