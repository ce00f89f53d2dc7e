"""Retention tasks, run by Celery beat from the database schedule (see schedule.py). Thin: each
builds the policy from the settings at run time and calls one job. All are idempotent and
resumable, so a retry or an overlapping run finishes the work instead of repeating it."""
from celery import shared_task

from .. import errors
from .services import retention_policy, retention_run

_retry = dict(autoretry_for=(errors.StorageUnavailable,), retry_backoff=60, max_retries=3)


@shared_task(name="media_app.retention.expire_reservations", **_retry)
def expire_reservations() -> dict:
    return retention_run(policy=retention_policy(), jobs=("reservations",)).as_dict()


@shared_task(name="media_app.retention.purge_remote_media", **_retry)
def purge_remote_media() -> dict:
    return retention_run(policy=retention_policy(), jobs=("interrupted", "remote")).as_dict()


@shared_task(name="media_app.retention.purge_thumbnails", **_retry)
def purge_thumbnails() -> dict:
    return retention_run(policy=retention_policy(), jobs=("interrupted", "thumbnails")).as_dict()


@shared_task(name="media_app.retention.propose_local_media", **_retry)
def propose_local_media() -> dict:
    return retention_run(policy=retention_policy(), jobs=("local",)).as_dict()


@shared_task(name="media_app.retention.run", **_retry)
def run_retention(remote_before: str | None = None, local_before: str | None = None,
                  requested_by_id: int | None = None) -> dict:
    """Every job at once (the admin's "run now"); ISO timestamps override the lifetimes.
    `requested_by_id`: the superuser who started it, named on its proposals (so that a second
    person signs them off)."""
    from datetime import datetime

    from django.contrib.auth import get_user_model

    policy = retention_policy(
        remote_before=datetime.fromisoformat(remote_before) if remote_before else None,
        local_before=datetime.fromisoformat(local_before) if local_before else None,
    )
    requested_by = get_user_model().objects.filter(pk=requested_by_id).first() if requested_by_id else None
    return retention_run(policy=policy, requested_by=requested_by).as_dict()
