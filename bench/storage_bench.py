#!/usr/bin/env python3
"""Storage backend figures: big upload / download MB/s on the filesystem and on S3 (a moto
server on loopback), and the server's resident memory while a 1 GiB body streams to S3.

Starts everything itself, each backend on a fresh data directory: moto, then gunicorn
(production settings, SQLite) once per backend. Uses the request helpers of bench/client.py and
the RSS-sampling streamed upload of core_bench.py; needs nothing outside this repository.

Usage: .venv/bin/python bench/storage_bench.py [--big-mb 200] [--stream-mb 1024]

moto keeps objects in its own process memory, so the S3 figures measure Mediasite's streaming
and moto's speed together; compare backends within one run, never across machines.
"""
import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import client as mb  # noqa: E402
import core_bench  # noqa: E402

BUCKET = "mediasite-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start")
            time.sleep(0.1)


def start_moto(log_dir: Path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=open(log_dir / "moto.log", "wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(endpoint + "/moto-api/", process, "moto")
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket=BUCKET)
    return process, endpoint


def start_server(backend: str, endpoint: str, data_dir: Path):
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
        "MEDIASITE_DATA_DIR": str(data_dir),
        "MEDIASITE_STORAGE": backend,
        "MEDIASITE_MAX_UPLOAD_SIZE": str(4 << 30),
        "MEDIASITE_WORKERS": "2",
        "MEDIASITE_THUMBNAIL_PREGENERATE": "false",
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "PORT": str(port),
    }
    env.pop("DATABASE_URL", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    token = subprocess.run([*manage, "create_token", "bench"], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "mediasite/gunicorn_conf.py", "mediasite.wsgi:application"],
        cwd=ROOT, env=env, stdout=open(data_dir / "gunicorn.log", "wb"), stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/_matrix/client/v1/media/config", process, "gunicorn")
    return process, base, token


def measure(base: str, token: str, big_mb: int) -> dict:
    big = os.urandom(big_mb << 20)
    started = time.perf_counter()
    media = mb.upload(base, token, big, "application/octet-stream", "big.bin")
    upload_s = time.perf_counter() - started
    started = time.perf_counter()
    status, body = mb.req(base, "GET", "/_matrix/client/v1/media/download/" + media, token)
    download_s = time.perf_counter() - started
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(big).digest(), status
    return {"upload_big_MBps": round(big_mb / upload_s, 1), "download_big_MBps": round(big_mb / download_s, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mb", type=int, default=200)
    ap.add_argument("--stream-mb", type=int, default=1024)
    args = ap.parse_args()
    results = {"big_MB": args.big_mb}
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        tmp = Path(tmp)
        moto, endpoint = start_moto(tmp)
        try:
            for backend in ("fs", "s3"):
                data_dir = tmp / backend
                data_dir.mkdir()
                server, base, token = start_server(backend, endpoint, data_dir)
                try:
                    for name, value in measure(base, token, args.big_mb).items():
                        results[f"{backend}_{name}"] = value
                    if backend == "s3" and args.stream_mb:
                        streamed = core_bench.stream_upload(base, token, args.stream_mb << 20, server.pid)
                        results.update({f"s3_{name}": value for name, value in streamed.items()})
                finally:
                    server.terminate()
                    server.wait(timeout=60)
        finally:
            moto.terminate()
            moto.wait(timeout=30)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
