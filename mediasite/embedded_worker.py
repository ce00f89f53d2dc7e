"""The embedded Celery worker of the default setup (no Redis): one process beside gunicorn's
workers, forked from gunicorn's master (mediasite/gunicorn_conf.py).

Forked rather than started as a new program: with the application preloaded, the master has
already imported Django, the views, Celery, Pillow and libmagic, and a forked worker shares
those pages with it and with the web workers instead of importing a copy of its own
(docs/PERFORMANCE.md, "Memory of the server").
"""
import gc
import os
import signal
import sys
import time
import traceback

# What the worker runs: the scheduler in a thread of its own (--beat-thread), one task at a time.
WORKER_ARGV = ["worker", "--beat-thread", "--pool", "solo", "--loglevel", "info",
               "--without-mingle", "--without-gossip", "--without-heartbeat"]
# A worker that ends is replaced, but not sooner than this after the last one started: one that
# cannot start (a broken setting) is retried at this pace rather than forked in a loop.
RESTART_DELAY_SECONDS = 5.0


class EmbeddedWorker:
    """The forked worker as the master keeps it: the part of subprocess.Popen that on_exit uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.started = time.monotonic()
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                # gunicorn's arbiter waits for any child that ends, this one included.
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"embedded worker {self.pid} still running after {timeout} s")
            time.sleep(0.05)
        return self.returncode


def supervise(server) -> None:
    """Start the worker and keep one running while gunicorn's master (`server`) serves: a worker
    that ends (killed, out of memory) is replaced from the master's loop. Kept on the arbiter,
    as `server.mediasite_embedded_worker`, for on_exit to stop it."""
    server.mediasite_embedded_worker = start(server)
    reap_workers, manage_workers = server.reap_workers, server.manage_workers

    def reap_then_note_ours():
        # Ours first: the arbiter's waitpid(-1) would take its exit status, and log nothing of it.
        server.mediasite_embedded_worker.poll()
        reap_workers()

    def manage_then_restart():
        manage_workers()
        _restart_if_ended(server)

    # Called by the arbiter's main loop on SIGCHLD and once a second; never while it stops.
    server.reap_workers, server.manage_workers = reap_then_note_ours, manage_then_restart


def _restart_if_ended(server) -> None:
    ended = server.mediasite_embedded_worker
    if ended.poll() is None or time.monotonic() - ended.started < RESTART_DELAY_SECONDS:
        return
    server.log.error("The embedded Celery worker (pid %s) ended with %s; starting another",
                     ended.pid, ended.returncode)
    try:
        server.mediasite_embedded_worker = start(server)
    except Exception:
        # Out of memory or processes, as when the last one was killed: the web workers go on,
        # and the next try comes after the delay (an exception here would stop the master).
        server.log.exception("Could not start the embedded Celery worker; trying again in %s s",
                             RESTART_DELAY_SECONDS)
        ended.started = time.monotonic()
        return
    server.log.info("Started the embedded Celery worker (pid %s)", server.mediasite_embedded_worker.pid)


def start(server) -> EmbeddedWorker:
    """Fork the worker from gunicorn's master (`server`, the arbiter); in the master, return it."""
    from django.db import connections

    connections.close_all()  # the child opens its own
    gc.freeze()  # as before the web workers' forks: the collector would unshare these pages
    # What the master has buffered would otherwise be written by both processes.
    sys.stdout.flush()
    sys.stderr.flush()
    master = os.getpid()
    pid = os.fork()
    if pid:
        return EmbeddedWorker(pid)
    code = 1
    try:
        code = _run_worker(server, master)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        # Never back into the arbiter's code, whose copy in this child would act as the master:
        # not even if flushing fails or a signal handler raises meanwhile.
        try:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _die_with(master: int) -> None:
    # Linux: a TERM when the master ends without stopping this worker (killed, crashed).
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != master:  # it ended before the line above
        raise SystemExit(0)


def _run_worker(server, master: int) -> int:
    _die_with(master)
    # The arbiter's handlers would queue this process's signals for a master loop it never runs.
    for signum in (*server.SIGNALS, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    # Held here, the master's listening sockets would stay bound after the master ended.
    for listener in server.LISTENERS:
        listener.close()
    os.nice(10)  # background work yields to requests
    # Celery names the process (with setproctitle) after its arguments, not gunicorn's.
    sys.argv = ["celery", *WORKER_ARGV]
    from mediasite.celery import app

    # start(), not worker_main(), which drops the exit code of a worker that could not start.
    return app.start(argv=WORKER_ARGV) or 0
