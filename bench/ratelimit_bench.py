#!/usr/bin/env python3
"""Wall time of one in-process rate-limit hit (no Redis: the embedded default), on `limits`'
own MemoryStorage and on media_app.ratelimit.SweptMemoryStorage, the one Mediasite uses.

Hits are spaced as requests arriving at --rate per second are, alone and while another thread
of the process is busy in Python (another request's work, a hashing loop): MemoryStorage starts
a timer thread on a hit whenever the last one has run out, and starting a thread waits for it
to run. Prints one JSON object: medians and 90th percentiles in microseconds.

Usage: .venv/bin/python bench/ratelimit_bench.py [--hits 200] [--rate 50]
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediasite.settings.production")


def timed_hits(storage, hits: int, gap: float) -> list[float]:
    from limits import parse
    from limits.strategies import MovingWindowRateLimiter

    limiter, item = MovingWindowRateLimiter(storage), parse("1000000/minute")
    took = []
    for i in range(hits):
        time.sleep(gap)
        started = time.perf_counter()
        limiter.hit(item, "bench", str(i % 4))
        took.append(time.perf_counter() - started)
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hits", type=int, default=200)
    ap.add_argument("--rate", type=float, default=50)
    a = ap.parse_args()
    from limits.storage import MemoryStorage

    from media_app.ratelimit import SweptMemoryStorage

    result = {}
    for busy in (False, True):
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                sum(range(1000))

        spinner = threading.Thread(target=spin)
        if busy:
            spinner.start()
        try:
            for name, storage in (("limits_memory", MemoryStorage()), ("swept_memory", SweptMemoryStorage())):
                took = sorted(timed_hits(storage, a.hits, 1 / a.rate))
                label = f"{name}_{'busy' if busy else 'alone'}"
                result[f"{label}_median_us"] = round(statistics.median(took) * 1e6, 1)
                result[f"{label}_p90_us"] = round(took[int(len(took) * 0.9)] * 1e6, 1)
        finally:
            stop.set()
            if busy:
                spinner.join()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
