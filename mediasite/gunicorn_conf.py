"""gunicorn configuration for `make run` and production.

gthread workers: processes keep CPU-bound work (hashing, thumbnails) parallel, threads keep slow
clients and long uploads from blocking a process, keep-alive connections are reused, and local
files go out with sendfile. Few threads per process: on 2 cores, 5 processes x 4 threads served
small downloads at ~830 req/s against ~740 for 4 x 8, where the extra threads only fought over
each process's GIL (wrk, 16 connections, three rounds each).
"""
import multiprocessing
import os
import subprocess
import sys

bind = f"{os.environ.get('MEDIASITE_BIND_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("MEDIASITE_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = int(os.environ.get("MEDIASITE_THREADS", 4))
keepalive = 30
# gthread workers heartbeat from their main thread, so a long upload is not killed by this.
timeout = 120
graceful_timeout = 30
accesslog = "-"
# %(U)s is the path only: the query string may carry access_token or a file name (docs/ARCHITECTURE.md, "Security").
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms pid=%(p)s'
forwarded_allow_ips = os.environ.get("MEDIASITE_FORWARDED_ALLOW_IPS", "127.0.0.1")


_embedded_worker = None


def _wants_embedded_worker() -> bool:
    return not os.environ.get("REDIS_URL") and os.environ.get("MEDIASITE_EMBEDDED_WORKER", "true").lower() != "false"


def on_starting(server):
    """On the embedded default (no Redis) start one Celery worker, with the scheduler, beside
    the web workers: background work (thumbnail pre-generation, scrub, garbage collection)
    then runs in its own process at a lower priority. With Redis, run `make worker` and
    `make beat` instead, on as many machines as you like."""
    global _embedded_worker
    if not _wants_embedded_worker():
        return
    _embedded_worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mediasite", "worker", "--beat", "--pool", "solo",
         "--loglevel", "info", "--without-mingle", "--without-gossip", "--without-heartbeat"],
        preexec_fn=lambda: os.nice(10),
    )
    server.log.info("Started the embedded Celery worker (pid %s)", _embedded_worker.pid)


def on_exit(server):
    if _embedded_worker is not None and _embedded_worker.poll() is None:
        _embedded_worker.terminate()
        try:
            _embedded_worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _embedded_worker.kill()


def worker_exit(server, worker):
    # Write the last batch of access times before the process goes away.
    from media_app.services.access import access_batch

    access_batch.shutdown()
