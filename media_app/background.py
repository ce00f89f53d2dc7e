"""Run a Celery task off the request path, with or without a broker.

With a broker (REDIS_URL) tasks go to Celery workers. The embedded default has none; Celery's
eager mode would run the task inside the request, so such tasks run on a small in-process
thread pool instead, after the response has been handed back.
"""
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connections, transaction

logger = logging.getLogger(__name__)
_pool: ThreadPoolExecutor | None = None


def _lower_priority() -> None:
    # Background rendering must not slow the requests beside it. Linux applies a priority to
    # a single thread when given its native id.
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _run_in_process(task, args):
    try:
        task.run(*args)
    except Exception:
        logger.exception("Background task %s failed", task.name)
    finally:
        # Tasks are rare (one per upload); a pool thread holding a connection between them
        # would only pin a database session.
        connections.close_all()


def enqueue_on_commit(task, *args) -> None:
    def send():
        global _pool
        if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="background", initializer=_lower_priority
                )
            _pool.submit(_run_in_process, task, args)
        else:
            task.delay(*args)

    transaction.on_commit(send)
