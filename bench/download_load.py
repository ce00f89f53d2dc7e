#!/usr/bin/env python3
"""A small load generator (for machines without wrk): CONNECTIONS keep-alive connections
download PATH until REQUESTS downloads are done; prints requests/s and MB/s.

Meant to be timed from outside as well, in pairs against two servers, e.g.
  farm-bench -n 7 --vs 'python bench/download_load.py --base B ...' -- python bench/download_load.py --base A ...

Usage: download_load.py --base URL --token TOKEN --path /_matrix/client/v1/media/download/S/ID
                        [--requests 3000] [--connections 16]
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    u = urllib.parse.urlparse(args.base)
    headers = {"Authorization": f"Bearer {args.token}"}
    left = [args.requests]
    lock = threading.Lock()
    totals = {"bytes": 0, "errors": 0}

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        nbytes = errors = 0
        while True:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            conn.request("GET", args.path, headers=headers)
            response = conn.getresponse()
            while chunk := response.read(1 << 20):
                nbytes += len(chunk)
            errors += response.status != 200
        conn.close()
        with lock:
            totals["bytes"] += nbytes
            totals["errors"] += errors

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    print(json.dumps({"requests": args.requests, "errors": totals["errors"], "seconds": round(seconds, 3),
                      "rps": round(args.requests / seconds), "MBps": round(totals["bytes"] / seconds / 1e6)}))


if __name__ == "__main__":
    main()
