#!/usr/bin/env python3
"""Native upload figures: the same file sent as a raw body and as multipart/form-data
(`curl -F file=@x`) to `POST /api/v1/media`, MB/s of each, and the server's resident memory
while a big multipart body streams in.

Starts gunicorn itself (production settings, SQLite, local files) on a fresh data directory.
Raw and multipart runs alternate, so both see the same machine; compare the ratio, never the
absolute figures across runs.

Usage: .venv/bin/python bench/upload_forms_bench.py [--mb 200] [--runs 3] [--stream-mb 1024]
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import core_bench  # noqa: E402
from storage_bench import free_port, wait_http  # noqa: E402

BOUNDARY = b"----mediasite-bench-boundary"


def start_server(data_dir: Path, max_upload: int):
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
        "MEDIASITE_DATA_DIR": str(data_dir),
        "MEDIASITE_MAX_UPLOAD_SIZE": str(max_upload),
        "MEDIASITE_WORKERS": "2",
        "MEDIASITE_THUMBNAIL_PREGENERATE": "false",
        "MEDIASITE_EMBEDDED_WORKER": "false",
        "PORT": str(port),
    }
    for name in ("DATABASE_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME"):
        env.pop(name, None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    token = subprocess.run([*manage, "create_token", "bench"], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "mediasite/gunicorn_conf.py", "mediasite.wsgi:application"],
        cwd=ROOT, env=env, stdout=open(data_dir / "gunicorn.log", "wb"), stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{port}/_matrix/client/v1/media/config", process, "gunicorn")
    return process, port, token


def _head(name: str) -> bytes:
    return (b"--" + BOUNDARY + f'\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'.encode()
            + b"Content-Type: application/octet-stream\r\n\r\n")


_TAIL = b"\r\n--" + BOUNDARY + b"--\r\n"


def post(port: int, token: str, body, length: int, content_type: str, query: str = "") -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    conn.request("POST", "/api/v1/media" + query, body=body, headers={
        "Authorization": "Bearer " + token, "Content-Type": content_type, "Content-Length": str(length)})
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    assert response.status == 201, (response.status, payload[:300])
    return elapsed


def generated(total: int, head: bytes = b"", tail: bytes = b""):
    block = os.urandom(1 << 20)
    yield head
    sent = 0
    while sent < total:
        n = min(len(block), total - sent)
        sent += n
        yield block[:n]
    yield tail


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stream-mb", type=int, default=1024)
    args = ap.parse_args()
    size = args.mb << 20
    with tempfile.TemporaryDirectory(prefix="upload-forms-bench-") as tmp:
        server, port, token = start_server(Path(tmp), max(size, args.stream_mb << 20) + (1 << 20))
        try:
            raw_s, form_s = [], []
            for _ in range(args.runs):
                data = os.urandom(size)  # fresh bytes: no run is a deduplicated no-op
                raw_s.append(post(port, token, data, size, "application/octet-stream", "?filename=raw.bin"))
                data = os.urandom(size)
                body = _head("form.bin") + data + _TAIL
                form_s.append(post(port, token, body, len(body), "multipart/form-data; boundary=" + BOUNDARY.decode()))
            results = {
                "file_MB": args.mb,
                "raw_MBps_median": round(args.mb / statistics.median(raw_s), 1),
                "multipart_MBps_median": round(args.mb / statistics.median(form_s), 1),
            }
            results["multipart_over_raw"] = round(results["multipart_MBps_median"] / results["raw_MBps_median"], 2)
            if args.stream_mb:
                total = args.stream_mb << 20
                idle = core_bench.rss_now_kb(server.pid)
                peak = [idle]
                done = threading.Event()

                def sample():
                    while not done.is_set():
                        peak[0] = max(peak[0], core_bench.rss_now_kb(server.pid))
                        time.sleep(0.02)

                sampler = threading.Thread(target=sample)
                sampler.start()
                head = _head("stream.bin")
                try:
                    elapsed = post(port, token, generated(total, head, _TAIL), len(head) + total + len(_TAIL),
                                   "multipart/form-data; boundary=" + BOUNDARY.decode())
                finally:
                    done.set()
                    sampler.join()
                results.update({
                    "multipart_stream_MB": args.stream_mb,
                    "multipart_stream_MBps": round(args.stream_mb / elapsed, 1),
                    "multipart_stream_rss_above_idle_MB": (peak[0] - idle) // 1024,
                })
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
