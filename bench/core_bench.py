#!/usr/bin/env python3
"""Core-repository figures for any server speaking the Matrix media API: small uploads,
small-download requests/s (with wrk, when installed), big transfers, and the server's resident
memory while a 1 GiB body streams in (sampled, summed over the server's process tree).

Needs nothing outside this repository (helpers in bench/client.py).

Usage: core_bench.py --base URL --token TOKEN --pid PID [--small 200] [--big-mb 200] [--stream-mb 1024]
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import client as mb  # noqa: E402


def rss_now_kb(pid: int) -> int:
    return mb.rss_kb(pid, field="VmRSS") or 0


def stream_upload(base: str, token: str, total: int, pid: int) -> dict:
    """POST `total` bytes generated on the fly; sample server RSS every 20 ms meanwhile."""
    idle = rss_now_kb(pid)
    peak = [idle]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_now_kb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    block = os.urandom(1 << 20)

    def body():
        sent = 0
        while sent < total:
            n = min(len(block), total - sent)
            sent += n
            yield block[:n]

    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    started = time.perf_counter()
    conn.request("POST", "/_matrix/media/v3/upload?filename=stream.bin", body=body(),
                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream",
                          "Content-Length": str(total)})
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    assert response.status == 200, (response.status, payload[:300])
    return {
        "stream_upload_MB": total >> 20,
        "stream_upload_MBps": round((total >> 20) / elapsed, 1),
        "idle_rss_MB": idle // 1024,
        "stream_peak_rss_MB": peak[0] // 1024,
        "stream_rss_above_idle_MB": (peak[0] - idle) // 1024,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--big-mb", type=int, default=200)
    ap.add_argument("--stream-mb", type=int, default=1024)
    a = ap.parse_args()
    B, T = a.base, a.token
    res = {}
    if a.stream_mb:
        res.update(stream_upload(B, T, a.stream_mb << 20, a.pid))
    smalls = [mb.jpeg(640, 480, i) for i in range(a.small)]
    t = time.perf_counter()
    with ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(lambda x: mb.upload(B, T, x[1], "image/jpeg", f"s{x[0]}.jpg"), enumerate(smalls)))
    res["upload_small_per_s"] = round(a.small / (time.perf_counter() - t), 1)
    dl = "/_matrix/client/v1/media/download/" + ids[0]
    s, body = mb.req(B, "GET", dl, T)
    assert s == 200 and body == smalls[0], s
    res["download_small_rps"], res["download_non2xx"] = mb.wrk(B, dl, T)
    big = os.urandom(a.big_mb << 20)
    t = time.perf_counter()
    bid = mb.upload(B, T, big, "application/octet-stream", "big.bin")
    res["upload_big_MBps"] = round(a.big_mb / (time.perf_counter() - t), 1)
    t = time.perf_counter()
    s, body = mb.req(B, "GET", "/_matrix/client/v1/media/download/" + bid, T)
    assert s == 200 and body == big
    res["download_big_MBps"] = round(a.big_mb / (time.perf_counter() - t), 1)
    res["server_peak_rss_MB"] = (mb.rss_kb(a.pid) or 0) // 1024
    print(json.dumps(res))


if __name__ == "__main__":
    main()
