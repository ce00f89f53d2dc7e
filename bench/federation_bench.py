#!/usr/bin/env python3
"""Remote media figures: cached-remote vs local download requests/s on one server, and the time
of a first (uncached) fetch vs a direct download from the origin: over a new connection, and over
one kept alive (A keeps its connections to B alive between fetches, so the second figure is the
like-for-like one once A has talked to B before; the first fetch of all is not timed).

Starts two Mediasite servers on loopback (embedded default: SQLite, filesystem broker, embedded
worker; each its own data dir), A federating with B, and prints one JSON object. Ratios are the
point: compare them within one run, never absolute figures across runs.

With --origin-delay-ms D, the origin is put at a distance: every connection to B (A's fetches
and the direct downloads alike) goes through a proxy in this process that adds D ms to each
direction and 2*D ms to connection set-up, as a network path with a round trip of 2*D would.
With --origin-mbit M, that proxy also passes at most M Mbit/s each way per connection. The first
fetch and the direct download are timed to their last byte and to their first.

With --video, each file starts as an MP4 does (an `ftyp` box, then random bytes): a type told
by its first bytes, so a first fetch of 1 MiB or more is answered while it arrives. Without it,
random bytes, which a first fetch checks whole before answering.

With --relay-floor, the same direct download is also timed through nginx relaying to the origin
(plain HTTP, unbuffered): the cheapest relay there is, with no storing, hashing or checking. A
first fetch crosses the network twice as such a relay does, so on a machine where the network
is loopback its ratio to the direct download is the floor for any first fetch's.

Usage: bench/federation_bench.py [--seconds 5] [--rounds 3] [--size-kb 256] [--first 10] [--connections 8]
                                 [--redis redis://127.0.0.1:6379/N] [--origin-delay-ms 0] [--origin-mbit 0]
                                 [--video] [--relay-floor]
"""
import argparse
import asyncio
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
sys.path.insert(0, str(ROOT))

from tests.interop.tlsproxy import TlsProxy  # noqa: E402


MP4_HEAD = bytes.fromhex("00000018") + b"ftypisom" + bytes.fromhex("00000200") + b"isomiso2"


def media_bytes(size: int, video: bool) -> bytes:
    return MP4_HEAD + os.urandom(size - len(MP4_HEAD)) if video else os.urandom(size)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env, *args) -> str:
    out = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout


def start(name: str, port: int, data: Path, peers: dict, workers: int, redis_url: str = "",
          **extra_env: str) -> tuple[list, dict, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mediasite.settings.production", "PORT": str(port),
           "MEDIASITE_SERVER_NAME": name, "MEDIASITE_DATA_DIR": str(data), "REDIS_URL": redis_url,
           "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}", "MEDIASITE_OUTBOUND_ALLOWLIST": "127.0.0.0/8",
           "MEDIASITE_FEDERATION_SERVER_MAP": json.dumps(peers), "MEDIASITE_WORKERS": str(workers),
           "MEDIASITE_THUMBNAIL_PREGENERATE": "false", "MEDIASITE_ACCESS_FLUSH_SECONDS": "5",
           "MEDIASITE_REMOTE_DOWNLOAD_BYTES_PER_USER": str(1 << 40), **extra_env}
    env.pop("MEDIASITE_ENCRYPTION_KEYS", None)
    manage(env, "migrate", "--noinput", "-v", "0")
    token = manage(env, "create_token", "bench").strip().splitlines()[-1]
    procs = []
    if redis_url:  # a Celery worker of its own, as `make worker` runs beside the web nodes
        celery = [PYTHON, "-m", "celery", "-A", "mediasite"]
        subprocess.run([*celery, "purge", "-f"], cwd=ROOT, env=env, capture_output=True, check=True)
        procs.append(subprocess.Popen([*celery, "worker", "-l", "warning", "--pool", "threads", "--concurrency", "4"],
                                      cwd=ROOT, env=env, stdout=open(data / "worker.log", "wb"), stderr=subprocess.STDOUT))
    log = open(data / "gunicorn.log", "wb")
    proc = subprocess.Popen([PYTHON, "-m", "gunicorn", "-c", "mediasite/gunicorn_conf.py", "mediasite.wsgi:application"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            request(port, "GET", "/_matrix/key/v2/server")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start: {(data / 'gunicorn.log').read_text()[-2000:]}")
            time.sleep(0.2)
    return [proc, *procs], env, token


def request(port, method, path, token=None, body=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if own:
        conn.close()
    return response.status, data


def timed_download(port, path, token, conn=None) -> tuple[int, bytes, float, float, dict]:
    """(status, body, seconds to the last byte, seconds to the first byte of the body, headers)
    of a GET over a new connection: to 127.0.0.1:port, or `conn` (closed after)."""
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    head = response.read(1)
    first = time.perf_counter() - t
    body = head + response.read()
    took = time.perf_counter() - t
    conn.close()
    return response.status, body, took, first, dict(response.getheaders())


def upload(port, token, data) -> str:
    status, body = request(port, "POST", "/_matrix/media/v3/upload", token, data)
    assert status == 200, body
    return json.loads(body)["content_uri"].removeprefix("mxc://")


def rps(port, path, token, seconds, connections) -> float:
    """Closed-loop keep-alive requests/s over `connections` threads for `seconds`."""
    stop = time.monotonic() + seconds
    counts = [0] * connections

    def run(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < stop:
            status, _ = request(port, "GET", path, token, conn=conn)
            assert status == 200, status
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def start_delay_proxy(target_port: int, delay: float, bytes_per_second: float = 0) -> int:
    """A TCP proxy to 127.0.0.1:target_port adding `delay` seconds each way (see the docstring),
    and, with `bytes_per_second`, passing at most that many each way per connection."""
    port = free_port()

    async def pipe(reader, writer):
        queue: asyncio.Queue = asyncio.Queue()

        async def send():
            loop = asyncio.get_running_loop()
            free_at = 0.0  # when the link has sent what came before
            while (item := await queue.get()) is not None:
                due, data = item
                if bytes_per_second:
                    free_at = max(due, free_at) + len(data) / bytes_per_second
                    due = free_at
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(send())
        try:
            # Small pieces on a slow link, so that bytes arrive as they would, not a MiB at a time.
            while data := await reader.read(64 << 10 if bytes_per_second else 1 << 20):
                queue.put_nowait((asyncio.get_running_loop().time() + delay, data))
        finally:
            queue.put_nowait(None)
            await sender

    async def handle(client_reader, client_writer):
        await asyncio.sleep(2 * delay)  # the handshake's round trip
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer),
                             return_exceptions=True)

    ready = threading.Event()

    def run():
        loop = asyncio.new_event_loop()
        loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", port))
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-kb", type=int, default=256)
    ap.add_argument("--first", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--redis", default="", help="Redis URL for A's broker and single flight (else the embedded default)")
    ap.add_argument("--origin-delay-ms", type=float, default=0, help="put the origin this far away, each way")
    ap.add_argument("--origin-mbit", type=float, default=0, help="and on a link of this many Mbit/s each way")
    ap.add_argument("--video", action="store_true", help="files that start as an MP4 does")
    ap.add_argument("--relay-floor", action="store_true", help="also time the direct download through nginx (needs nginx)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fedbench-"))
    port_a, port_b = free_port(), free_port()
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    b, _, token_b = start("b.bench", port_b, tmp / "b", {"a.bench": f"http://127.0.0.1:{port_a}"}, workers=2)
    # Where B is reached from, for A's fetches and for the direct downloads alike.
    far = a.origin_delay_ms or a.origin_mbit
    far_b = start_delay_proxy(port_b, a.origin_delay_ms / 1000, a.origin_mbit * 125_000) if far else port_b
    a_proc, _, token_a = start("a.bench", port_a, tmp / "a", {"b.bench": f"http://127.0.0.1:{far_b}"}, workers=3, redis_url=a.redis)
    relay = relay_port = None
    try:
        if a.relay_floor:
            relay_port = free_port()
            relay = TlsProxy(tmp / "nginx", {relay_port: far_b}, tls=False)
        size = a.size_kb << 10
        # First fetch vs a direct download of a same-sized file from the origin.
        first, direct, direct_warm, stores = [], [], [], []
        first_byte, direct_first_byte = [], []
        relayed, relayed_first_byte = [], []
        # A client already connected to the origin, as A is once it has fetched from B before.
        warm = http.client.HTTPConnection("127.0.0.1", far_b, timeout=120)
        request(far_b, "GET", "/_matrix/key/v2/server", conn=warm)
        # Untimed: A's first request to B, where B also fetches A's signing key.
        request(port_a, "GET", f"/_matrix/client/v1/media/download/{upload(port_b, token_b, b'warm-up')}", token_a)
        for _ in range(a.first):
            # The floor of a first fetch: storing the same number of bytes on A (fsync'd file and row).
            t = time.perf_counter()
            upload(port_a, token_a, media_bytes(size, a.video))
            stores.append(time.perf_counter() - t)
            remote_mxc = upload(port_b, token_b, media_bytes(size, a.video))
            other = upload(port_b, token_b, media_bytes(size, a.video))
            status, _, took, took_first, _ = timed_download(far_b, f"/_matrix/client/v1/media/download/{other}", token_b)
            direct.append(took)
            direct_first_byte.append(took_first)
            assert status == 200
            if relay:
                status, _, took, took_first, _ = timed_download(relay_port, f"/_matrix/client/v1/media/download/{other}",
                                                                token_b)
                relayed.append(took)
                relayed_first_byte.append(took_first)
                assert status == 200
            t = time.perf_counter()
            status, _ = request(far_b, "GET", f"/_matrix/client/v1/media/download/{other}", token_b, conn=warm)
            direct_warm.append(time.perf_counter() - t)
            assert status == 200
            status, body, took, took_first, _ = timed_download(port_a, f"/_matrix/client/v1/media/download/{remote_mxc}",
                                                            token_a)
            first.append(took)
            first_byte.append(took_first)
            assert status == 200 and len(body) == size, (status, body[:200])
        # Cached remote vs local on A, alternating rounds.
        local_mxc = upload(port_a, token_a, media_bytes(size, a.video))
        local_path = f"/_matrix/client/v1/media/download/{local_mxc}"
        remote_path = f"/_matrix/client/v1/media/download/{remote_mxc}"
        request(port_a, "GET", remote_path, token_a)
        local_rps, remote_rps = [], []
        for i in range(a.rounds):
            # Alternate which goes first, so neither always follows the other's warm-up.
            order = [(local_rps, local_path), (remote_rps, remote_path)]
            for figures, path in order if i % 2 == 0 else order[::-1]:
                figures.append(rps(port_a, path, token_a, a.seconds, a.connections))
        result = {
            "size_kb": a.size_kb,
            "video": a.video,
            "origin_delay_ms": a.origin_delay_ms,
            "origin_mbit": a.origin_mbit,
            "fetch_in": "worker" if os.environ.get("MEDIASITE_REMOTE_FETCH_IN_WORKER", "").lower() == "true" else "web",
            "local_download_rps": round(statistics.median(local_rps), 1),
            "cached_remote_download_rps": round(statistics.median(remote_rps), 1),
            "cached_remote_over_local": round(statistics.median(remote_rps) / statistics.median(local_rps), 3),
            "first_fetch_ms_median": round(statistics.median(first) * 1000, 1),
            "direct_origin_download_ms_median": round(statistics.median(direct) * 1000, 1),
            "first_fetch_over_direct": round(statistics.median(first) / statistics.median(direct), 2),
            "first_fetch_first_byte_ms_median": round(statistics.median(first_byte) * 1000, 1),
            "direct_first_byte_ms_median": round(statistics.median(direct_first_byte) * 1000, 1),
            "direct_kept_alive_ms_median": round(statistics.median(direct_warm) * 1000, 1),
            "first_fetch_over_direct_kept_alive": round(statistics.median(first) / statistics.median(direct_warm), 2),
            "local_upload_same_size_ms_median": round(statistics.median(stores) * 1000, 1),
        }
        if relay:
            result.update({
                "relayed_direct_ms_median": round(statistics.median(relayed) * 1000, 1),
                "relayed_first_byte_ms_median": round(statistics.median(relayed_first_byte) * 1000, 1),
                "relayed_over_direct": round(statistics.median(relayed) / statistics.median(direct), 2),
                "first_fetch_over_relayed": round(statistics.median(first) / statistics.median(relayed), 2),
            })
        print(json.dumps(result))
    finally:
        if relay:
            relay.stop()
        for proc in [*a_proc, *b]:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
