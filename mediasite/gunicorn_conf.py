"""gunicorn configuration for `make run` and production.

gthread workers: processes keep CPU-bound work (hashing, thumbnails) parallel, threads keep long
uploads from blocking a process, keep-alive connections are reused, and local files go out with
sendfile. The worker class is gthread's with each request's head (and the start of its body) read
in the event loop before a thread takes it (mediasite/gunicorn_worker.py), so clients that send
their requests slowly hold no thread and cannot starve the others. Few threads per process: on
2 cores, 5 processes x 4 threads served small downloads at ~830 req/s against ~740 for 4 x 8,
where the extra threads only fought over each process's GIL (wrk, 16 connections, three rounds
each).
"""
import gc
import multiprocessing
import os

from gunicorn import glogging

from mediasite.log_redaction import install as install_log_redaction

bind = f"{os.environ.get('MEDIASITE_BIND_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("MEDIASITE_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "mediasite.gunicorn_worker.BufferingThreadWorker"
threads = int(os.environ.get("MEDIASITE_THREADS", 4))
keepalive = 30
# gthread workers heartbeat from their main thread, so a long upload is not killed by this.
timeout = 120
graceful_timeout = 30
accesslog = "-"
# %(U)s is the path only: the query string may carry access_token or a file name. The path
# itself may end in a file name (/download/{server}/{id}/{fileName}): RedactingLogger below
# removes it, as it removes tokens and names from the error log.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms pid=%(p)s'


class RedactingLogger(glogging.Logger):
    """gunicorn's logger with the project's redaction filter on the access and error logs
    (re-applied whenever gunicorn rebuilds its handlers, e.g. on SIGHUP)."""

    def setup(self, cfg):
        super().setup(cfg)
        install_log_redaction(self.error_log, self.access_log)


logger_class = RedactingLogger
forwarded_allow_ips = os.environ.get("MEDIASITE_FORWARDED_ALLOW_IPS", "127.0.0.1")
# Unused here, and its default path (~/.gunicorn/gunicorn.ctl) is one per user: two instances clash.
control_socket_disable = True

# The application is imported once, in the master, and the workers are forked from it: the
# pages of what it imported stay shared between the processes instead of being one copy each.
# The price: a HUP reloads the configuration but not the code (restart to deploy new code).
preload_app = os.environ.get("MEDIASITE_PRELOAD_APP", "true").lower() != "false"


def when_ready(server):
    # In the master, once it listens and before the first fork: with the application preloaded,
    # what the workers' first requests would import is imported here, into shared pages.
    if preload_app:
        from media_app.startup import warm_up

        warm_up()
    _start_embedded_worker(server)


def pre_fork(server, worker):
    # In the master, before each fork. A database connection opened while importing would be
    # shared by every worker: closed here, each opens its own.
    if preload_app:
        from django.db import connections

        connections.close_all()
    # Objects the master made (the imported modules) go to the collector's permanent
    # generation: its passes would otherwise write to their pages in every worker and unshare them.
    gc.freeze()


def _wants_embedded_worker() -> bool:
    return not os.environ.get("REDIS_URL") and os.environ.get("MEDIASITE_EMBEDDED_WORKER", "true").lower() != "false"


def _start_embedded_worker(server):
    """On the embedded default (no Redis) run one Celery worker, with the scheduler, beside the
    web workers: background work (thumbnail pre-generation, scrub, garbage collection) then runs
    in its own process at a lower priority. It is forked from this master, after the
    application was loaded, so that it shares those pages, and replaced if it ends
    (mediasite/embedded_worker.py). With Redis, run `make worker` and `make beat` instead, on
    as many machines as you like."""
    if not _wants_embedded_worker():
        return
    from mediasite import embedded_worker

    # Kept on the arbiter, not in this module: a HUP executes this file again as a new module,
    # whose on_exit would not know the worker and leave it running after gunicorn stops.
    embedded_worker.supervise(server)
    server.log.info("Started the embedded Celery worker (pid %s)", server.mediasite_embedded_worker.pid)


def on_exit(server):
    embedded = getattr(server, "mediasite_embedded_worker", None)
    if embedded is not None and embedded.poll() is None:
        embedded.terminate()
        try:
            embedded.wait(timeout=20)
        except TimeoutError:
            embedded.kill()


def post_worker_init(worker):
    # A worker that starts may replace one that was killed mid-upload: remove the temp files
    # no live process holds any more (media_app.storage), now rather than at the next sweep.
    from media_app.storage import temp_files_sweep

    try:
        removed = temp_files_sweep()
    except OSError as exc:
        worker.log.warning("Temp file sweep failed: %s", exc)
        return
    if removed:
        worker.log.info("Removed %d temp files of dead processes", removed)


def worker_exit(server, worker):
    # Write the last batch of access times before the process goes away.
    from media_app.services.access import access_batch

    access_batch.shutdown()
