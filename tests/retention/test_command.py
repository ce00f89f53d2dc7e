"""`manage.py purge_media`: the preview it prints, the run, and a run killed with SIGKILL."""
import io
import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.core.management import call_command

from media_app.models import Blob, Media, MediaEvent, MediaOrigin
from media_app.retention.services import Kind, retention_policy, retention_preview
from tests.conftest import ROOT, _database_url
from tests.retention.conftest import DAY, NOW, remote_media, stored_bytes, thumbnail, png


def _command(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("purge_media", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _row(output: str, kind: str) -> tuple[int, int]:
    line = next(line for line in output.splitlines() if Kind.LABELS[kind] in line)
    count, nbytes = line.split()[-2:]
    return int(count), int(nbytes)


@pytest.mark.django_db
def test_dry_run_prints_counts_and_bytes_by_kind_and_changes_nothing(lifetimes):
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None)
    old = [remote_media(png(200 + i, (100, 100)), created=NOW - 40 * DAY) for i in range(3)]
    thumbnail(old[0])
    remote_media(png(210), created=NOW - 10 * DAY)
    expected = retention_preview(policy=retention_policy(remote_before=NOW - 30 * DAY))

    out, _err = _command("--dry-run", "--remote-before", (NOW - 30 * DAY).date().isoformat())

    assert "would purge" in out
    assert _row(out, Kind.REMOTE_MEDIA) == (3, expected[Kind.REMOTE_MEDIA].bytes)
    assert _row(out, Kind.REMOTE_THUMBNAILS) == (1, expected[Kind.REMOTE_THUMBNAILS].bytes)
    assert expected[Kind.REMOTE_MEDIA].bytes == sum(m.blob.size for m in old)
    assert Media.objects.count() == 4 and not MediaEvent.objects.filter(event_type="media.purged").exists()


@pytest.mark.django_db
def test_run_shows_progress_and_frees_what_it_announced(lifetimes):
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None)
    for i in range(5):
        remote_media(png(220 + i), created=NOW - 40 * DAY)
    before = stored_bytes()

    out, err = _command("--remote-before", (NOW - 30 * DAY).isoformat())

    announced = _row(out.split("purged:")[0], Kind.REMOTE_MEDIA)
    done = _row(out.split("purged:")[1], Kind.REMOTE_MEDIA)
    assert announced == done and done[0] == 5
    assert before - stored_bytes() == done[1]
    assert "remote_media [" in err and "5/5 media" in err
    assert not Media.objects.exists()


def test_bad_date_is_a_usage_error(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        _command("--remote-before", "last tuesday")


def test_a_purge_killed_halfway_finishes_on_rerun(transactional_db, shared_media_dir, lifetimes, tmp_path):
    """SIGKILL a purge_media process mid-run; the rerun completes it: every media purged once,
    nothing left doomed, and the bytes freed over both runs equal the first preview."""
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None)
    total = 300
    for i in range(total):
        remote_media(b"remote bytes %d " % i * 40, created=NOW - 40 * DAY)
    policy = retention_policy(remote_before=NOW - 30 * DAY)
    preview = retention_preview(policy=policy)
    before = stored_bytes()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mediasite.settings.production",
        "DATABASE_URL": _database_url(),
        "MEDIASITE_DATA_DIR": settings.MEDIASITE["DATA_DIR"],
        "MEDIASITE_SERVER_NAME": settings.MEDIASITE["SERVER_NAME"],
        "MEDIASITE_RETENTION_BATCH_SIZE": "1",  # many commits, so the kill lands between two
        "MEDIASITE_THUMBNAIL_LIFETIME": "off",
    }
    log = open(tmp_path / "purge.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "purge_media", "--remote-before", policy.remote_before.isoformat()],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    purged = MediaEvent.objects.filter(event_type="media.purged")
    deadline = time.monotonic() + 120
    while purged.count() < 20 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    log.close()
    left = Media.objects.filter(origin=MediaOrigin.REMOTE).count()
    assert 0 < left < total, (tmp_path / "purge.log").read_text()[-2000:]

    _command("--remote-before", policy.remote_before.isoformat())

    assert not Media.objects.exists()
    assert not Blob.objects.exists()  # nothing left doomed or orphaned in the table
    assert purged.count() == total and len(set(purged.values_list("media_id", flat=True))) == total
    assert before - stored_bytes() == preview.freed_bytes == preview[Kind.REMOTE_MEDIA].bytes


@pytest.mark.django_db
def test_the_proposals_bar_counts_media_and_ends_full(lifetimes):
    """Proposals free nothing until signed off: their bar must not wait for bytes that never come."""
    from tests.retention.conftest import local_media

    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None, local_media_lifetime=365)
    local_media(png(230), created=NOW - 400 * DAY, last_access=NOW - 400 * DAY)
    _out, err = _command()
    last = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("local_proposals [")][-1]
    assert "1/1" in last and "(100%)" in last, err
