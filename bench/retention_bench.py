#!/usr/bin/env python3
"""Retention figures: purging N expired remote media rows on PostgreSQL, wall time and peak
memory, at two sizes (memory must not grow with the row count).

Creates a scratch database next to the one DATABASE_URL names (`<name>_retention_bench`,
dropped at the end) and a temporary data directory, inserts N remote media rows with their blobs
(bulk INSERTs) and a small file per blob, then runs the purge in a fresh child process per size:
the child's peak RSS is reset after Django has loaded (Linux /proc/self/clear_refs), so the
figure is what the purge itself adds.

Usage: DATABASE_URL=postgres://postgres@127.0.0.1:5432/x .venv/bin/python bench/retention_bench.py [--sizes 10000,100000]
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
FILE_BYTES = 512


def _django(database_url: str, data_dir: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["MEDIASITE_DATA_DIR"] = data_dir
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediasite.settings.production")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(rows: int) -> None:
    """Runs in its own process: purge everything expired, print figures as JSON."""
    from datetime import timedelta

    from django.utils import timezone

    from media_app.models import Blob, Media
    from media_app.retention.services import Kind, retention_policy, retention_run

    policy = retention_policy(remote_before=timezone.now() - timedelta(days=1))
    # Warm up the code paths and connection, then measure from here.
    Media.objects.exists()
    baseline = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    from media_app.services.progress import Progress

    class Rate(Progress):
        """Seconds per row over the first and the last tenth of the run: equal when the cost
        of a batch does not grow with how far the walk has gone."""

        def __init__(self):
            self.marks = [(0, time.perf_counter())]

        def advance(self, *, nbytes, items=1):
            self.marks.append((self.marks[-1][0] + items, time.perf_counter()))

        def per_row_ms(self, first: bool) -> float:
            tenth = max(1, rows // 10)
            if first:
                (n0, t0), (n1, t1) = self.marks[0], next(m for m in self.marks if m[0] >= tenth)
            else:
                (n0, t0), (n1, t1) = [m for m in self.marks if m[0] <= rows - tenth][-1], self.marks[-1]
            return (t1 - t0) / max(1, n1 - n0) * 1000

    rate = Rate()
    started = time.perf_counter()
    report = retention_run(policy=policy, jobs=("remote",), progress_for=lambda kind: rate)
    elapsed = time.perf_counter() - started
    peak = _rss_kib("VmHWM")
    assert report[Kind.REMOTE_MEDIA].count == rows, report.as_dict()
    assert not Media.objects.exists() and not Blob.objects.exists()
    print(json.dumps({"rows": rows, "seconds": elapsed, "baseline_kib": baseline, "peak_kib": peak,
                      "freed_bytes": report.freed_bytes,
                      "first_tenth_ms_per_row": rate.per_row_ms(True), "last_tenth_ms_per_row": rate.per_row_ms(False)}))


def populate(rows: int) -> None:
    """N expired remote media rows, each with its own blob and a file of FILE_BYTES."""
    from datetime import timedelta

    from django.core.files.storage import storages
    from django.utils import timezone

    from media_app.models import Blob, Media, MediaOrigin, MediaStatus
    from media_app.storage import blob_key

    Media.objects.all().delete()
    Blob.objects.all().delete()
    root = Path(storages["fs"].location)
    old = timezone.now() - timedelta(days=365)
    chunk = 5000
    for start in range(0, rows, chunk):
        blobs = []
        for i in range(start, min(rows, start + chunk)):
            sha = hashlib.sha256(b"bench %d" % i).hexdigest()
            path = root / blob_key(sha)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * FILE_BYTES)
            blobs.append(Blob(sha256=sha, size=FILE_BYTES, storage="fs", key=blob_key(sha), created_ts=old))
        blobs = Blob.objects.bulk_create(blobs)
        Media.objects.bulk_create([
            Media(server_name="remote.example", media_id=f"bench{start + n}", blob=blob, media_type="image/png",
                  media_length=FILE_BYTES, status=MediaStatus.STORED, origin=MediaOrigin.REMOTE,
                  created_ts=old, last_access_ts=old)
            for n, blob in enumerate(blobs)
        ])
    # Planner statistics as autovacuum would have them on a live server: right after a bulk
    # load the planner still thinks the tables are empty and picks sequential scans.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--child", type=int)
    args = parser.parse_args()
    if args.child is not None:
        _django(os.environ["DATABASE_URL"], os.environ["MEDIASITE_DATA_DIR"])
        child(args.child)
        return

    source = os.environ.get("DATABASE_URL", "")
    if not source.startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL server (a scratch database is created beside it)")
    parts = urlsplit(source)
    name = parts.path.lstrip("/") + "_retention_bench"
    scratch = urlunsplit(parts._replace(path="/" + name))
    import psycopg

    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    data_dir = tempfile.mkdtemp(prefix="mediasite-retention-bench-")
    try:
        env = {**os.environ, "DATABASE_URL": scratch, "MEDIASITE_DATA_DIR": data_dir,
               "DJANGO_SETTINGS_MODULE": "mediasite.settings.production"}
        env.pop("REDIS_URL", None)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        _django(scratch, data_dir)
        from django.db import connections

        print(f"purge of expired remote media rows on PostgreSQL, batch {os.environ.get('MEDIASITE_RETENTION_BATCH_SIZE', 500)}")
        print(f"{'rows':>8} {'insert s':>9} {'purge s':>8} {'rows/s':>8} {'ms/row first/last tenth':>24} "
              f"{'baseline MiB':>13} {'peak MiB':>9} {'peak - baseline MiB':>20}")
        for rows in (int(size) for size in args.sizes.split(",")):
            started = time.perf_counter()
            populate(rows)
            inserted = time.perf_counter() - started
            connections.close_all()
            out = subprocess.run([sys.executable, __file__, "--child", str(rows)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            figures = json.loads(out.strip().splitlines()[-1])
            base, peak = figures["baseline_kib"] / 1024, figures["peak_kib"] / 1024
            tenths = f"{figures['first_tenth_ms_per_row']:.2f} / {figures['last_tenth_ms_per_row']:.2f}"
            print(f"{rows:>8} {inserted:>9.1f} {figures['seconds']:>8.1f} {rows / figures['seconds']:>8.0f} {tenths:>24} "
                  f"{base:>13.1f} {peak:>9.1f} {peak - base:>20.1f}")
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        subprocess.run(["rm", "-rf", data_dir], check=False)


if __name__ == "__main__":
    main()
