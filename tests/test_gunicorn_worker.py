"""When the worker's event loop hands a request to a thread (mediasite/gunicorn_worker.py), and
how mediasite/gunicorn_conf.py sets gunicorn up."""
import multiprocessing
import runpy
import time

import pytest

from mediasite.gunicorn_worker import BODY_PREFETCH_BYTES, request_ready
from tests.conftest import ROOT, start_server, stop_server

HEAD = b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize("request_bytes, ready", [
    (b"GET / HTTP/1.1\r\nHost: x", False),  # head not finished
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    (b"GET / HTTP/1.1\nHost: x\n\n", True),  # bare LF line ends
    (HEAD + b"Content-Length: 3\r\n\r\nab", False),  # body not all there
    (HEAD + b"Content-Length: 3\r\n\r\nabc", True),
    (HEAD + b"content-length:3\r\n\r\nabc", True),
    (HEAD + b"Content-Length: 3\r\nExpect: 100-continue\r\n\r\n", True),  # waits for our 100
    (HEAD + b"Content-Length: 999999999999\r\n\r\n", True),  # over the limit: refused at once
    (HEAD + b"Content-Length: 1000000\r\n\r\n" + b"x" * (BODY_PREFETCH_BYTES - 1), False),
    (HEAD + b"Content-Length: 1000000\r\n\r\n" + b"x" * BODY_PREFETCH_BYTES, True),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", False),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", True),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * (64 << 10), True),  # oversized head: the parser refuses it
])
def test_request_ready(request_bytes, ready, settings):
    assert request_ready(request_bytes) is ready


def test_the_environment_sets_gunicorn_and_its_worker(monkeypatch):
    """The README's rows for the server process: bind address, processes, threads, trusted
    proxies, and the worker's socket wait, read from the environment as gunicorn loads them."""
    import importlib

    import mediasite.gunicorn_worker as worker

    for name, value in {"MEDIASITE_BIND_HOST": "0.0.0.0", "PORT": "9123", "MEDIASITE_WORKERS": "3",
                        "MEDIASITE_THREADS": "6", "MEDIASITE_FORWARDED_ALLOW_IPS": "10.0.0.5,10.0.0.6",
                        "MEDIASITE_IO_TIMEOUT_SECONDS": "7"}.items():
        monkeypatch.setenv(name, value)
    conf = runpy.run_path(str(ROOT / "mediasite" / "gunicorn_conf.py"))
    assert (conf["bind"], conf["workers"], conf["threads"]) == ("0.0.0.0:9123", 3, 6)
    assert conf["forwarded_allow_ips"] == "10.0.0.5,10.0.0.6"
    try:
        assert importlib.reload(worker).IO_TIMEOUT_SECONDS == 7
    finally:
        monkeypatch.delenv("MEDIASITE_IO_TIMEOUT_SECONDS")
        importlib.reload(worker)
    for name in ("MEDIASITE_BIND_HOST", "MEDIASITE_THREADS", "MEDIASITE_FORWARDED_ALLOW_IPS"):
        monkeypatch.delenv(name)
    defaults = runpy.run_path(str(ROOT / "mediasite" / "gunicorn_conf.py"))
    assert (defaults["bind"], defaults["threads"], defaults["forwarded_allow_ips"]) == ("127.0.0.1:9123", 4, "127.0.0.1")


def test_workers_default_to_twice_the_cores_plus_one(monkeypatch):
    """README: MEDIASITE_WORKERS defaults to 2 x cores + 1."""
    monkeypatch.delenv("MEDIASITE_WORKERS", raising=False)
    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 3)
    assert runpy.run_path(str(ROOT / "mediasite" / "gunicorn_conf.py"))["workers"] == 7


def test_no_control_socket_so_two_instances_on_one_host_do_not_share_one(django_db_setup, tmp_path):
    """gunicorn (25.1+) opens $XDG_RUNTIME_DIR/gunicorn.ctl, else ~/.gunicorn/gunicorn.ctl, one
    path for every instance of a user: the configuration turns it off."""
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir()
    # At debug level the master says what it did about the socket, once its workers are spawned.
    server = start_server(tmp_path, "--log-level", "debug", HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    try:
        deadline = time.monotonic() + 20
        while "Control socket" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (runtime / "gunicorn.ctl").exists()
        assert not (home / ".gunicorn").exists()
        assert "Control socket disabled" in server.log(), server.log()[-3000:]
    finally:
        stop_server(server)
