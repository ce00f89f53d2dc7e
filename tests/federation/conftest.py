"""Two instances of Mediasite on loopback, federating with each other.

- B (`b.test`) runs the embedded default: its own SQLite file and data dir, the filesystem
  broker and the worker gunicorn starts beside it.
- A (`a.test`) runs on the test database (so tests can read its rows) with its own data dir
  and its own Celery worker process: on Redis when REDIS_URL is set, else the embedded one. The
  pair runs twice: once with remote media fetched by the request that needs it (the default),
  once by A's worker (MEDIASITE_REMOTE_FETCH_IN_WORKER).

Each maps the other's name to its address (MEDIASITE_FEDERATION_SERVER_MAP) and allows loopback
(MEDIASITE_OUTBOUND_ALLOWLIST). A also maps `origin.test` to a test origin (tests/federation/origin.py).
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, _database_url, _free_port, start_server, stop_server
from tests.federation.origin import Origin


@dataclass
class Instance:
    server_name: str
    url: str
    data_dir: Path
    env: dict
    server: object
    token: str = ""

    def log(self) -> str:
        return self.server.log()


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="session")
def fed_origin():
    origin = Origin("127.0.0.1")
    yield origin
    origin.stop()


# Module scope: A's Celery worker listens on the suite's Redis queue and must be gone before
# other modules hand tasks to workers of their own.
# The worker variant runs on Redis with a worker process of its own when REDIS_URL is set (as
# in CI's full pass), else on the embedded default: file-lock flights and the embedded worker
# (CI's SQLite pass).
@pytest.fixture(scope="module", params=["in-web", "in-worker"])
def federation_pair(request, django_db_setup, django_db_blocker, tmp_path_factory, fed_origin):
    port_a, port_b = _free_port(), _free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    common = {"MEDIASITE_OUTBOUND_ALLOWLIST": "127.0.0.0/8", "DJANGO_SETTINGS_MODULE": "mediasite.settings.production"}

    dir_b = tmp_path_factory.mktemp("instance-b")
    env_b = {**common, "MEDIASITE_SERVER_NAME": "b.test", "MEDIASITE_DATA_DIR": str(dir_b),
             "DATABASE_URL": f"sqlite:///{dir_b / 'mediasite.sqlite3'}", "REDIS_URL": "",
             "MEDIASITE_EMBEDDED_WORKER": "true", "MEDIASITE_BLOCKED_SERVERS": "evil.test",
             "MEDIASITE_FEDERATION_SERVER_MAP": json.dumps({"a.test": url_a, "evil.test": url_a})}
    _manage(env_b, "migrate", "--noinput", "-v", "0")
    token_b = _manage(env_b, "create_token", "bob").strip().splitlines()[-1]

    dir_a = tmp_path_factory.mktemp("instance-a")
    redis_url = os.environ.get("REDIS_URL", "")
    env_a = {**common, "MEDIASITE_SERVER_NAME": "a.test", "MEDIASITE_DATA_DIR": str(dir_a),
             "DATABASE_URL": _database_url(), "REDIS_URL": redis_url,
             "MEDIASITE_EMBEDDED_WORKER": "false" if redis_url else "true",
             "MEDIASITE_FEDERATION_SERVER_MAP": json.dumps({"b.test": url_b, "origin.test": fed_origin.url}),
             # A short failure cache, so a test's deliberate failure does not outlive it.
             "MEDIASITE_REMOTE_FAILURE_CACHE_SECONDS": "2",
             # Who fetches: the request that needs the media (the default), or A's Celery worker.
             "MEDIASITE_REMOTE_FETCH_IN_WORKER": str(request.param == "in-worker").lower()}

    server_b = start_server(dir_b, port=port_b, **env_b)
    worker = None
    try:
        if redis_url:
            worker_env = {**os.environ, **env_a}
            celery = [sys.executable, "-m", "celery", "-A", "mediasite"]
            subprocess.run([*celery, "purge", "-f"], cwd=ROOT, env=worker_env, check=True, capture_output=True)
            worker_log = open(dir_a / "worker.log", "wb")
            worker = subprocess.Popen([*celery, "worker", "-l", "info", "--pool", "threads", "--concurrency", "4",
                                       "--without-heartbeat", "--without-mingle", "--without-gossip"],
                                      cwd=ROOT, env=worker_env, stdout=worker_log, stderr=subprocess.STDOUT)
            worker_log.close()
        server_a = start_server(dir_a, port=port_a, **env_a)
    except BaseException:
        stop_server(server_b)
        if worker:
            worker.kill()
        raise
    a = Instance("a.test", url_a, dir_a, env_a, server_a)
    b = Instance("b.test", url_b, dir_b, env_b, server_b, token_b)
    yield a, b
    stop_server(server_a)
    stop_server(server_b)
    if worker:
        worker.terminate()
        worker.wait(timeout=30)


@pytest.fixture
def pair(federation_pair, transactional_db):
    """A and B running, with this test's rows on A's database committed so A sees them."""
    return federation_pair
