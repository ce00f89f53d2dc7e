"""Render once, counted in renders: concurrent thumbnail requests over two gunicorn servers
(two "nodes", two worker processes each) sharing one database, on each single-flight backend.

What is counted is the server log's one line per decode ("Rendered thumbnail(s) …" or
"Thumbnail render … failed"), not Thumbnail rows or events, which the UNIQUE constraint keeps
at one even when every request renders. The backend follows the deployment like in production:
Redis when the servers get REDIS_URL, PostgreSQL advisory locks when the database is PostgreSQL
without Redis, file locks on SQLite — so the file-lock case runs in the SQLite pass of the suite.
"""
import http.client
import io
import json
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection
from PIL import Image

from media_app.models import Media
from tests.conftest import require_service, start_server, stop_server

pytestmark = pytest.mark.server

REQUESTS = 24


def _request(server, method, path, token, body=None):
    conn = http.client.HTTPConnection(*server.host_port, timeout=120)
    conn.request(method, path, body=body, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


@pytest.fixture(scope="module", params=["redis", "postgresql", "file"])
def nodes(request, django_db_setup, django_db_blocker, tmp_path_factory):
    """Two servers on the shared database, configured for one single-flight backend."""
    backend = request.param
    redis_url = getattr(settings, "REDIS_URL", "")
    # Each deployment's backend runs in the suite's pass on that deployment.
    if connection.vendor == "sqlite":
        if backend != "file":
            pytest.skip(f"the {backend} backend runs in the PostgreSQL pass")
    elif backend == "file":
        pytest.skip("the file-lock backend is the SQLite deployment's; it runs in the SQLite pass")
    elif backend == "redis":
        require_service("Redis", bool(redis_url), "set REDIS_URL")
    env = {"REDIS_URL": redis_url if backend == "redis" else ""}
    servers = [start_server(tmp_path_factory.mktemp(f"{backend}-node"), **env) for _ in range(2)]
    yield servers
    for server in servers:
        stop_server(server)


def _photo() -> bytes:
    """A 6 MP JPEG with content of its own, so each test starts from an unrendered blob."""
    rng = random.Random()
    image = Image.linear_gradient("L").resize((3000, 2000)).convert("RGB")
    image.paste((rng.randrange(256), rng.randrange(256), rng.randrange(256)), (0, 0, 64, 64))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _broken_jpeg() -> bytes:
    """Sniffed as a JPEG (it starts as one) but cut off: decoding it fails."""
    return _photo()[:3000]


def _upload(server, token, data) -> tuple[str, str]:
    status, body = _request(server, "POST", "/_matrix/media/v3/upload", token, body=data)
    assert status == 200, body
    mxc = json.loads(body)["content_uri"].removeprefix("mxc://")
    sha = Media.objects.select_related("blob").get(media_id=mxc.split("/")[1]).blob.sha256
    return mxc, sha


def _ask_everyone(servers, token, path):
    """REQUESTS identical requests released together, spread over both servers."""
    barrier = threading.Barrier(REQUESTS)

    def one(i):
        barrier.wait()
        return _request(servers[i % 2], "GET", path, token)

    with ThreadPoolExecutor(REQUESTS) as pool:
        return list(pool.map(one, range(REQUESTS)))


def _log_lines(servers, pattern: str) -> list[str]:
    return [line for server in servers for line in server.log().splitlines() if re.search(pattern, line)]


def _serving_pids(servers, path_fragment: str) -> set[str]:
    return {pid for server in servers
            for pid in re.findall(rf'"GET [^ ]*{re.escape(path_fragment)}[^ ]* [^"]+" \d+ .* pid=<?(\d+)', server.log())}


def test_concurrent_requests_over_two_nodes_render_once(nodes, transactional_db, alice_token):
    mxc, sha = _upload(nodes[0], alice_token, _photo())
    path = f"/_matrix/client/v1/media/thumbnail/{mxc}?width=320&height=240&method=scale"
    results = _ask_everyone(nodes, alice_token, path)
    assert [status for status, _ in results] == [200] * REQUESTS
    assert len({body for _, body in results}) == 1
    renders = _log_lines(nodes, rf"Rendered thumbnail\(s\) \S+ of blob {sha[:16]}")
    assert len(renders) == 1, renders
    assert len(_serving_pids(nodes, mxc.split("/")[1])) >= 2  # both nodes answered: waiters in other processes


def test_the_renderers_failure_reaches_every_waiter_without_a_second_decode(nodes, transactional_db, alice_token):
    mxc, sha = _upload(nodes[1], alice_token, _broken_jpeg())
    path = f"/_matrix/client/v1/media/thumbnail/{mxc}?width=96&height=96&method=crop"
    results = _ask_everyone(nodes, alice_token, path)
    assert {status for status, _ in results} == {400}
    assert {json.loads(body)["code"] for _, body in results} == {"MEDIA_IMAGE_BROKEN"}
    attempts = _log_lines(nodes, rf"Thumbnail render \S+ of blob {sha[:16]} failed: MEDIA_IMAGE_BROKEN")
    assert len(attempts) == 1, attempts
