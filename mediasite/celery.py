"""The Celery application; configuration comes from Django settings (CELERY_*)."""
import logging
import os

import click
from celery import Celery, bootsteps, signals

from . import broker  # noqa: F401 - registers the embedded default's transport (mediasite-fs://)
from .log_redaction import install as install_log_redaction

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediasite.settings.production")

app = Celery("mediasite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_worker_logs(logger=None, **kwargs):
    """Celery replaces the root logger's handlers with its own: filter those too."""
    install_log_redaction(logger or logging.getLogger())


def _printable(value):
    # IDs and flags help an operator; any string could be a name or a reason.
    return value if isinstance(value, (int, float, bool, type(None))) else "[REDACTED]"


@signals.before_task_publish.connect
def _redact_task_arguments(body=None, headers=None, **kwargs):
    """The worker prints argsrepr/kwargsrepr when it receives a task. Tasks take IDs, but one
    written later may take a name or a reason: the printed form is made here, for every task,
    from the arguments' values with every non-numeric one replaced (the arguments themselves
    travel unchanged)."""
    if headers is None or not isinstance(body, (tuple, list)) or len(body) < 2:
        return
    args, task_kwargs = body[0], body[1]
    headers["argsrepr"] = repr(tuple(_printable(a) for a in args or ()))
    headers["kwargsrepr"] = repr({k: _printable(v) for k, v in (task_kwargs or {}).items()})


class BeatThread(bootsteps.StartStopStep):
    """`--beat-thread`: the scheduler in a thread of this worker, where `--beat` starts a process
    of its own. The embedded worker of `make run` uses it: one process, and its memory, less.
    Celery's own threaded scheduler ticks every second (so that it stops promptly); with the
    database scheduler that is one small query a second."""

    label = "BeatThread"
    conditional = True

    def __init__(self, worker, beat_thread=False, **kwargs):
        self.enabled = bool(beat_thread)
        super().__init__(worker, **kwargs)

    def create(self, worker):
        from celery.beat import EmbeddedService

        return EmbeddedService(worker.app, thread=True, schedule_filename=worker.schedule_filename,
                               scheduler_cls=worker.scheduler)


app.user_options["worker"].add(click.Option(
    ["--beat-thread"], is_flag=True, default=False,
    help="Run the beat scheduler in a thread of this worker (instead of --beat's process).",
))
app.steps["worker"].add(BeatThread)
