#!/usr/bin/env python3
"""Memory of a Mediasite server as `make run` starts it (embedded default), idle and after a
small mixed load: the process tree's PSS, shared pages counted once, and each process's own.

Starts gunicorn with mediasite/gunicorn_conf.py on a fresh data dir, waits, measures; uploads 30
800x600 JPEGs, has 8 clients download each and its 96x96 thumbnail 20 times, waits, measures;
prints one JSON object. MEDIASITE_PRELOAD_APP=false compares the workers importing the
application each on their own.

Usage: bench/memory_bench.py [--settle 4]
"""
import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
sys.path.insert(0, str(ROOT))

from bench.client import req, tree, upload  # noqa: E402
from bench.federation_bench import free_port  # noqa: E402


def rollup(pid: int) -> dict:
    """Pss, Private_Dirty, Shared_Dirty of one process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Private_Dirty", "Shared_Dirty"):
                values[key] = int(rest.split()[0])
    return values


def measure(pid: int) -> dict:
    processes = {}
    for p in tree(pid):
        try:
            # The command line, or the title the process gave itself (setproctitle).
            name = open(f"/proc/{p}/cmdline").read()
            processes[p] = {"what": "celery" if "celery" in name else "gunicorn", **rollup(p)}
        except (FileNotFoundError, ProcessLookupError):
            pass
    return {"pss_mb": round(sum(v["Pss"] for v in processes.values()) / 1024, 1),
            "processes": [{"what": v["what"], "pss_mb": round(v["Pss"] / 1024, 1),
                           "private_dirty_mb": round(v["Private_Dirty"] / 1024, 1)} for v in processes.values()]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--settle", type=float, default=4, help="seconds to wait before each measure")
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="membench-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(MEDIASITE_DATA_DIR=data, PORT=str(port), MEDIASITE_UPLOAD_RATE_PER_USER="", MEDIASITE_UPLOAD_RATE_PER_IP="")
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    token = subprocess.run([PYTHON, "manage.py", "create_token", "bench"], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=True).stdout.split()[-1]
    server = subprocess.Popen([PYTHON, "-m", "gunicorn", "-c", "mediasite/gunicorn_conf.py", "mediasite.wsgi:application"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(base + "/_matrix/key/v2/server", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        time.sleep(a.settle)
        idle = measure(server.pid)
        media = []
        for i in range(30):
            jpeg = io.BytesIO()
            Image.new("RGB", (800, 600), (i, 2 * i, 3)).save(jpeg, "JPEG")
            media.append(upload(base, token, jpeg.getvalue(), "image/jpeg", f"{i}.jpg"))

        def client():
            for _ in range(20):
                for m in media:
                    for path in (f"/_matrix/client/v1/media/download/{m}",
                                 f"/_matrix/client/v1/media/thumbnail/{m}?width=96&height=96&method=crop"):
                        status, _ = req(base, "GET", path, token)
                        assert status == 200, (status, path)

        clients = [threading.Thread(target=client) for _ in range(8)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        time.sleep(a.settle)
        print(json.dumps({"preload_app": os.environ.get("MEDIASITE_PRELOAD_APP", "true"),
                          "idle": idle, "after_load": measure(server.pid)}))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
