"""Hand a Celery task to the workers once the current transaction has committed.

Robust on purpose: the rows are already committed, so a broker that is down must not turn a
successful upload into an error; the work it would have done (thumbnail pre-generation) also
happens on demand.
"""
import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(task, *args) -> None:
    def send():
        try:
            task.delay(*args)
        except Exception as exc:  # the broker is down or refuses: one line, not a traceback per upload
            logger.warning("Could not hand %s to the workers (%s: %s); it is left to be done on demand",
                           task.name, exc.__class__.__name__, exc)

    transaction.on_commit(send)
