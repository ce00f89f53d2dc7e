"""The Celery application; configuration comes from Django settings (CELERY_*)."""
import os

from celery import Celery, signals

from .log_redaction import install as install_log_redaction, redact

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediasite.settings.production")

app = Celery("mediasite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_worker_logs(logger=None, **kwargs):
    """Celery replaces the root logger's handlers with its own: filter those too."""
    install_log_redaction(logger or __import__("logging").getLogger())


@signals.before_task_publish.connect
def _redact_task_arguments(headers=None, **kwargs):
    """The worker prints argsrepr/kwargsrepr when it receives a task; tasks take IDs, but a
    task written later may take a name or a reason, so the printed form is redacted at the
    source, for every task (the arguments themselves travel unchanged)."""
    if headers is None:
        return
    for key in ("argsrepr", "kwargsrepr"):
        if isinstance(headers.get(key), str):
            headers[key] = redact(headers[key])
