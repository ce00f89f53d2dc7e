"""HTTP and process helpers shared by the benchmarks in this directory.

They speak the Matrix media API to any server, so the same figures can be taken of Mediasite
and of another media repository on the same machine. Small on purpose: plain http.client,
Pillow for test images, /proc for memory, and `wrk` (when installed) for request rates.
"""
import http.client
import io
import json
import random
import shutil
import subprocess
import urllib.parse

from PIL import Image


def connect(base: str) -> http.client.HTTPConnection:
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def req(base: str, method: str, path: str, token: str, body=None, ctype: str | None = None) -> tuple[int, bytes]:
    conn = connect(base)
    headers = {"Authorization": "Bearer " + token}
    if ctype:
        headers["Content-Type"] = ctype
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def upload(base: str, token: str, data: bytes, ctype: str, name: str) -> str:
    """Upload through the Matrix API; returns 'server/media_id'."""
    status, body = req(base, "POST", "/_matrix/media/v3/upload?filename=" + name, token, data, ctype)
    assert status == 200, (status, body[:300])
    return json.loads(body)["content_uri"].removeprefix("mxc://")


def jpeg(width: int, height: int, seed: int, quality: int = 85) -> bytes:
    """A photo-like JPEG (noise over gradients), different for every seed."""
    rnd = random.Random(seed)
    image = Image.merge("RGB", [Image.effect_noise((width, height), rnd.randint(20, 60)),
                                Image.linear_gradient("L").resize((width, height)),
                                Image.radial_gradient("L").resize((width, height))])
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = open(f"/proc/{p}/task/{p}/children").read().split()
        except (FileNotFoundError, ProcessLookupError):  # kernels without that file
            children = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout.split()
        todo += [int(c) for c in children]
    return out


def rss_kb(pid: int | None, field: str = "VmHWM") -> int | None:
    """Sum of peak (VmHWM) or current (VmRSS) resident memory over a process tree, in KiB."""
    if not pid:
        return None
    total = 0
    for p in tree(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith(field):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def wrk(base: str, path: str, token: str, secs: int = 8, conns: int = 16) -> tuple[float, int]:
    """(requests/s, non-2xx answers) from wrk; (0.0, 0) when wrk is not installed."""
    if shutil.which("wrk") is None:
        return 0.0, 0
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "-H", "Authorization: Bearer " + token,
                          base + path], capture_output=True, text=True).stdout
    rps = next((float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec")), 0.0)
    non2xx = next((int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line), 0)
    return rps, non2xx
