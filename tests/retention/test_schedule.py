"""The schedule lives in the database (created by a migration, editable in the admin) and a real
Celery worker with beat runs it: against Redis when REDIS_URL is set, else over the embedded
default's file broker."""
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from media_app.models import MediaEvent, MediaStatus
from media_app.retention.schedule import default_entries, install_default_entries
from media_app.state import Actor, create
from tests.conftest import ROOT, _database_url, require_service
from tests.retention.conftest import DAY, NOW


@pytest.mark.django_db
def test_the_migration_installs_the_default_schedule():
    entries = {task.name: task for task in PeriodicTask.objects.select_related("interval")}
    for name, task, every, _description in default_entries():
        assert entries[name].task == task and entries[name].enabled
        assert (entries[name].interval.every, entries[name].interval.period) == (every, "seconds")


def test_no_schedule_is_defined_in_code():
    """A code schedule would be written over the database's by beat on every start."""
    from mediasite.celery import app

    app.loader.import_default_modules()
    assert not app.conf.beat_schedule


@pytest.mark.django_db
def test_reinstalling_keeps_an_operators_edit():
    task = PeriodicTask.objects.get(name="retention.purge_remote_media")
    task.interval = IntervalSchedule.objects.create(every=42, period="days")
    task.enabled = False
    task.save()
    assert install_default_entries(PeriodicTask, IntervalSchedule) == 0
    task.refresh_from_db()
    assert (task.interval.every, task.interval.period, task.enabled) == (42, "days", False)


def _redis_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture
def worker_with_beat(transactional_db, tmp_path):
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        require_service("Redis", _redis_up(redis_url), "REDIS_URL is set but does not answer")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
        "DATABASE_URL": _database_url(),
        "MEDIASITE_DATA_DIR": settings.MEDIASITE["DATA_DIR"],
        "MEDIASITE_SERVER_NAME": settings.MEDIASITE["SERVER_NAME"],
        "REDIS_URL": redis_url,  # empty: the embedded default's file broker
    }
    celery = [sys.executable, "-m", "celery", "-A", "mediasite"]
    subprocess.run([*celery, "purge", "-f"], cwd=ROOT, env=env, check=True, capture_output=True)
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")
    # The arguments gunicorn's master runs the embedded worker with: the scheduler in the worker.
    from mediasite.embedded_worker import WORKER_ARGV

    process = subprocess.Popen(
        [*celery, *WORKER_ARGV],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    yield log_path
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_beat_runs_a_database_schedule_entry_in_a_worker(worker_with_beat, alice):
    # A transactional test starts from empty tables; the migration's entries are put back.
    install_default_entries(PeriodicTask, IntervalSchedule)
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.exclude(name="retention.expire_reservations").update(enabled=False)
    PeriodicTask.objects.filter(name="retention.expire_reservations").update(interval=every_second)
    reservation = create(to=MediaStatus.PENDING, actor=Actor.UPLOADER, server_name="test.local",
                         media_id="neverfilled", uploader=alice, unused_expires_at=NOW - DAY)
    # The scheduler notices edits through this marker, as it does for edits in the admin.
    from django_celery_beat.models import PeriodicTasks

    PeriodicTasks.update_changed()

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        reservation.refresh_from_db()
        if reservation.status == MediaStatus.DELETED:
            break
        time.sleep(0.3)
    log = worker_with_beat.read_text(errors="replace")
    assert reservation.status == MediaStatus.DELETED, log[-3000:]
    assert MediaEvent.objects.filter(event_type="media.purged", media_id="neverfilled").count() == 1
    # The entry's name exists only in the database: beat read its schedule from there.
    assert "Sending due task retention.expire_reservations (media_app.retention.expire_reservations)" in log


@pytest.mark.django_db
def test_the_schedule_is_editable_in_the_admin(client, make_user):
    operator = make_user("root")  # an operator's job (a superuser), not a moderator's
    operator.is_staff = operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    listing = client.get("/admin/django_celery_beat/periodictask/")
    assert listing.status_code == 200
    for name, *_ in default_entries():
        assert name.encode() in listing.content
    task = PeriodicTask.objects.get(name="retention.purge_thumbnails")
    page = client.get(f"/admin/django_celery_beat/periodictask/{task.pk}/change/")
    assert page.status_code == 200 and b'name="enabled"' in page.content
