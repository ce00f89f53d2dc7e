#!/usr/bin/env python3
"""How long concurrent askers wait for one new thumbnail, on each single-flight backend.

A photo is posted to a big room: many clients ask for its thumbnail at once, one render must
happen and everyone should be answered when it is done. For each backend this starts gunicorn
(production settings, its default workers) and, per round, uploads a fresh 24 MP photo and
sends ASKERS identical thumbnail requests released together. It prints, per backend, the
median over rounds of the askers' p50 and max wait, beside one render: the end-to-end time of
a single request for a fresh photo's thumbnail on the idle server ("solo"), and the render
time the server logs. Target: max wait <= solo + 100 ms.

Backends follow the deployment: Redis (--redis-url, with --database-url), PostgreSQL advisory
locks (--database-url, no Redis), file locks (SQLite in a temporary data dir). A backend whose
service is not given is left out. The PostgreSQL database is created if missing and migrated.
--root runs the servers from another checkout of this repository (to compare with an older
commit); the script stops only the servers it started.

Usage: .venv/bin/python bench/singleflight_bench.py [--database-url URL] [--redis-url URL]
       [--askers 30] [--rounds 3] [--root DIR]
"""
import argparse
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from thumbnail_bench import photo_like_jpeg  # noqa: E402

SIZE_24MP = (6000, 4000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_database(url: str) -> None:
    import psycopg

    parsed = urllib.parse.urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


class Server:
    def __init__(self, root: Path, data_dir: Path, database_url: str, redis_url: str):
        self.port = free_port()
        self.log_path = data_dir / "gunicorn.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
            "MEDIASITE_DATA_DIR": str(data_dir),
            "MEDIASITE_MAX_UPLOAD_SIZE": str(200 << 20),
            "MEDIASITE_THUMBNAIL_PREGENERATE": "false",
            "MEDIASITE_EMBEDDED_WORKER": "false",
            "REDIS_URL": redis_url,
            "PORT": str(self.port),
        }
        env.pop("DATABASE_URL", None)
        if database_url:
            env["DATABASE_URL"] = database_url
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=root, env=env, check=True)
        self.token = subprocess.run([*manage, "create_token", "bench"], cwd=root, env=env, check=True,
                                    capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "mediasite/gunicorn_conf.py", "mediasite.wsgi:application"],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_matrix/client/v1/media/config", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("gunicorn did not start:\n" + self.log_path.read_text())
                time.sleep(0.2)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {self.token}"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, data

    def upload(self, data: bytes) -> str:
        status, body = self.request("POST", "/_matrix/media/v3/upload", data)
        assert status == 200, body
        return json.loads(body)["content_uri"].removeprefix("mxc://")

    def render_ms_logged(self) -> list[float]:
        return [float(ms) for ms in re.findall(r"Rendered thumbnail\(s\) .* in (\d+) ms", self.log_path.read_text())]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def thumbnail_path(mxc: str) -> str:
    return f"/_matrix/client/v1/media/thumbnail/{mxc}?width=320&height=240&method=scale"


def timed_get(server: Server, path: str) -> float:
    started = time.perf_counter()
    status, body = server.request("GET", path)
    assert status == 200, (status, body[:200])
    return (time.perf_counter() - started) * 1000


def crowd(server: Server, path: str, askers: int) -> list[float]:
    barrier = threading.Barrier(askers)

    def one(_):
        barrier.wait()
        return timed_get(server, path)

    with ThreadPoolExecutor(askers) as pool:
        return list(pool.map(one, range(askers)))


def run_backend(name: str, root: Path, database_url: str, redis_url: str, askers: int, rounds: int) -> dict:
    # Fresh content each run: a photo the database already holds would be served from its cache.
    seeds = random.Random().sample(range(1 << 30), 2 * rounds + 1)
    photos = [photo_like_jpeg(SIZE_24MP, seed=seed) for seed in seeds]
    with tempfile.TemporaryDirectory(prefix=f"sf-bench-{name}-") as data_dir:
        server = Server(root, Path(data_dir), database_url, redis_url)
        try:
            warm = thumbnail_path(server.upload(photos[-1]))
            timed_get(server, warm)
            crowd(server, warm, askers)  # every worker has served a request: imports are done
            cached = crowd(server, warm, askers)  # the crowd's own cost, with nothing to render
            solo, p50, worst, spread = [], [], [], []
            for i in range(rounds):
                solo.append(timed_get(server, thumbnail_path(server.upload(photos[2 * i]))))
                waits = crowd(server, thumbnail_path(server.upload(photos[2 * i + 1])), askers)
                p50.append(statistics.median(waits))
                worst.append(max(waits))
                spread.append(max(waits) - min(waits))
            logged = server.render_ms_logged()
        finally:
            server.stop()
    solo_ms, max_ms = statistics.median(solo), statistics.median(worst)
    # Logged in order: the warm-up photo, then per round the solo photo and the crowd's.
    counted = len(logged) == 1 + 2 * rounds
    return {
        "backend": name,
        "askers": askers,
        "rounds": rounds,
        "solo_request_ms": round(solo_ms),
        "solo_render_ms_logged": round(statistics.median(logged[1::2])) if counted else None,
        "crowd_render_ms_logged": round(statistics.median(logged[2::2])) if counted else None,
        "renders_logged": len(logged),
        "renders_expected": 1 + 2 * rounds,
        "cached_crowd_p50_ms": round(statistics.median(cached)),
        "cached_crowd_max_ms": round(max(cached)),
        "crowd_p50_ms": round(statistics.median(p50)),
        "crowd_max_ms": round(max_ms),
        "crowd_max_ms_per_round": [round(w) for w in worst],
        # first to last answer: the release, with the renderer's own answer first
        "crowd_spread_ms": round(statistics.median(spread)),
        "within_solo_plus_100ms": max_ms <= solo_ms + 100,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    ap.add_argument("--askers", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--backends", default="redis,postgresql,file")
    args = ap.parse_args()

    wanted = args.backends.split(",")
    plan = []
    if "redis" in wanted and args.redis_url and args.database_url:
        plan.append(("redis", args.database_url, args.redis_url))
    if "postgresql" in wanted and args.database_url:
        plan.append(("postgresql", args.database_url, ""))
    if "file" in wanted:
        plan.append(("file", "", ""))
    if args.database_url:
        ensure_database(args.database_url)
    for name, database_url, redis_url in plan:
        result = run_backend(name, args.root.resolve(), database_url, redis_url, args.askers, args.rounds)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
