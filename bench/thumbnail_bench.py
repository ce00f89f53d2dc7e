"""Benchmark for media_app.image_ops thumbnails; prints one JSON document.

It answers two questions before a change to the thumbnail code ships: how much
slower is the hardened render_thumbnail() than the leanest plain-Pillow
equivalent (open + draft + thumbnail) on a 12 MP camera JPEG, and how much
memory does rendering a 30 MP JPEG cost.  Memory is measured in fresh child
processes so each figure starts from the same baseline.

Usage:  python bench/thumbnail_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import PIL  # noqa: E402
from PIL import Image, ImageChops  # noqa: E402

from media_app import image_ops  # noqa: E402

TARGET = (320, 240)
OVERHEAD_TARGET = 1.30
LIMITS = {"max_pixels": 100_000_000, "max_total_frame_pixels": 1_000_000_000}
SIZE_12MP = (4000, 3000)
SIZE_30MP = (6708, 4472)


def photo_like_jpeg(size: tuple[int, int], seed: int) -> bytes:
    """A camera-like JPEG: smooth colour fields, mid-scale texture, fine grain.

    Flat or purely random images would make libjpeg look unrealistically fast
    or slow; this lands near real photos in bytes per pixel.
    """
    rng = random.Random(seed)
    w, h = size

    def noise(scale: int, amplitude: int) -> Image.Image:
        small = (max(1, w // scale), max(1, h // scale))
        raw = Image.frombytes("L", small, rng.randbytes(small[0] * small[1]))
        centred = raw.point(lambda v: 128 + (v - 128) * amplitude // 128)
        return centred if scale == 1 else centred.resize(size, Image.Resampling.BICUBIC)

    colours = Image.new("RGB", (8, 6))
    colours.putdata([tuple(rng.randrange(40, 220) for _ in range(3)) for _ in range(48)])
    base = colours.resize(size, Image.Resampling.BICUBIC)
    texture = ImageChops.add(noise(16, 90), noise(1, 40), scale=1.0, offset=-128)
    photo = ImageChops.overlay(base, Image.merge("RGB", (texture,) * 3))
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def ours(data: bytes) -> image_ops.Rendered:
    return image_ops.render_thumbnail(
        io.BytesIO(data), width=TARGET[0], height=TARGET[1], method="scale", animated=False, **LIMITS
    )


def bare(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", TARGET)
    im.thumbnail(TARGET)
    return im


def bare_with_encode(data: bytes) -> bytes:
    buf = io.BytesIO()
    bare(data).save(buf, "JPEG", quality=image_ops.JPEG_QUALITY)
    return buf.getvalue()


def timed_ms(fn, data: bytes) -> float:
    started = time.perf_counter()
    fn(data)
    return (time.perf_counter() - started) * 1000


def compare(data: bytes, runs: int) -> dict:
    """Interleave the contenders so drift in CPU clock or cache hurts both alike."""
    first_ours = timed_ms(ours, data)
    first_bare = timed_ms(bare, data)
    samples: dict[str, list[float]] = {"ours": [], "bare": [], "bare_with_encode": []}
    for _ in range(runs):
        samples["ours"].append(timed_ms(ours, data))
        samples["bare"].append(timed_ms(bare, data))
        samples["bare_with_encode"].append(timed_ms(bare_with_encode, data))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    rendered = ours(data)
    return {
        "source_bytes": len(data),
        "output": {
            "media_type": rendered.media_type,
            "size": [rendered.width, rendered.height],
            "bytes": len(rendered.data),
        },
        "first_render_ms": round(first_ours, 2),
        "first_bare_ms": round(first_bare, 2),
        "render_thumbnail_median_ms": round(medians["ours"], 2),
        "bare_open_draft_thumbnail_median_ms": round(medians["bare"], 2),
        "bare_plus_jpeg_encode_median_ms": round(medians["bare_with_encode"], 2),
        "overhead_ratio_vs_bare": round(medians["ours"] / medians["bare"], 3),
        "overhead_ratio_vs_bare_plus_encode": round(medians["ours"] / medians["bare_with_encode"], 3),
        "overhead_target": OVERHEAD_TARGET,
        "within_target": medians["ours"] / medians["bare"] <= OVERHEAD_TARGET,
        "runs": runs,
    }


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets this process's VmHWM to its current RSS
    # (Linux >= 4.0), so the next peak belongs to the measured operation only.
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def child_memory(kind: str, path: str) -> dict:
    """Runs inside a fresh interpreter; measures one operation's memory peak."""
    data = Path(path).read_bytes()
    gc.collect()
    maxrss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_reset = _reset_peak_rss()
    rss_before_kib = _proc_status_kib("VmRSS") if hwm_reset else _proc_status_kib("VmHWM")
    tracemalloc.start()
    started = time.perf_counter()
    if kind == "render_thumbnail":
        ours(data)
    elif kind == "bare_open_draft_thumbnail":
        bare(data)
    elif kind == "full_decode_no_draft":
        Image.open(io.BytesIO(data)).load()
    else:
        raise SystemExit(f"unknown kind {kind}")
    elapsed_ms = (time.perf_counter() - started) * 1000
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss_after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_after_kib = _proc_status_kib("VmHWM")
    result = {
        "ru_maxrss_delta_mib": round((maxrss_after_kib - maxrss_before_kib) / 1024, 1),
        "tracemalloc_peak_mib": round(traced_peak / 2**20, 2),
        "elapsed_ms": round(elapsed_ms, 1),
    }
    if hwm_after_kib is not None and rss_before_kib is not None:
        result["vm_hwm_delta_mib"] = round((hwm_after_kib - rss_before_kib) / 1024, 1)
        result["vm_hwm_exact_reset"] = hwm_reset
    return result


def _run_child(*args: str) -> str:
    completed = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return completed.stdout


def memory(size: tuple[int, int], seed: int) -> dict:
    """Peak memory of rendering one large JPEG, each contender in its own process.

    The JPEG is generated by a child too: ru_maxrss survives fork and exec on
    Linux, so a parent that had built the 30 MP test image itself would hand
    every child a high-water mark that hides the measured peak.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "source.jpg")
        _run_child("--make-jpeg", str(size[0]), str(size[1]), str(seed), path)
        results: dict = {"source_bytes": os.path.getsize(path)}
        for kind in ("render_thumbnail", "bare_open_draft_thumbnail", "full_decode_no_draft"):
            results[kind] = json.loads(_run_child("--child", kind, path))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--make-jpeg", nargs=4, metavar=("W", "H", "SEED", "PATH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child_memory(*args.child)))
        return
    if args.make_jpeg:
        width, height, seed, path = args.make_jpeg
        Path(path).write_bytes(photo_like_jpeg((int(width), int(height)), int(seed)))
        return

    # Memory first, while this process is still small (see memory()).
    memory_30mp = memory(SIZE_30MP, seed=30)
    jpeg_12mp = photo_like_jpeg(SIZE_12MP, seed=12)
    jpeg_30mp = photo_like_jpeg(SIZE_30MP, seed=30)
    report = {
        "environment": {
            "python": platform.python_version(),
            "pillow": PIL.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "jpeg_12mp_4000x3000_to_320x240_scale": compare(jpeg_12mp, args.runs),
        "jpeg_30mp_6708x4472_to_320x240_scale": {
            "source_bytes": len(jpeg_30mp),
            "render_thumbnail_median_ms": round(
                statistics.median(timed_ms(ours, jpeg_30mp) for _ in range(max(3, args.runs // 3))), 2
            ),
            # tracemalloc only sees Python allocations; Pillow's pixel buffers
            # come from C malloc, so the RSS figures are the ones that matter.
            "peak_memory_in_child_process": memory_30mp,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
