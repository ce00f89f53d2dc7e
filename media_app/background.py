"""Hand a Celery task to the workers once the current transaction has committed.

Robust on purpose: the rows are already committed, so a broker that is down must not turn a
successful upload into an error; the work it would have done (thumbnail pre-generation) also
happens on demand.
"""
import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(task, *args) -> None:
    transaction.on_commit(lambda: task.delay(*args), robust=True)
