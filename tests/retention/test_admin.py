"""The admin's retention page shows the same preview as purge_media --dry-run and hands the run
to a worker (eager in tests)."""
import re

import pytest

from media_app.models import Media
from media_app.retention.services import Kind, retention_policy, retention_preview
from tests.retention.conftest import DAY, NOW, png, remote_media, thumbnail

pytestmark = pytest.mark.django_db
URL = "/admin/retention/purge/"


def _rows(html: str) -> dict:
    body = html.split('id="retention-preview"')[1]
    cells = re.findall(r"<tr><td>(.*?)</td><td>(\d+)</td><td>(\d+) ", body)
    return {label: (int(count), int(nbytes)) for label, count, nbytes in cells}


def test_preview_page_matches_the_service_and_changes_nothing(client, make_user, lifetimes):
    lifetimes(remote_media_lifetime=30, thumbnail_lifetime=None)
    media = remote_media(png(300, (200, 200)), created=NOW - 60 * DAY)
    thumbnail(media)
    client.force_login(make_user("mod", admin=True))

    response = client.get(URL)

    assert response.status_code == 200
    expected = retention_preview(policy=retention_policy())
    rows = _rows(response.content.decode())
    for kind in Kind.ORDER:
        assert rows[Kind.LABELS[kind]] == (expected[kind].count, expected[kind].bytes)
    assert rows[Kind.LABELS[Kind.REMOTE_MEDIA]][0] == 1
    assert Media.objects.filter(pk=media.pk).exists()


def test_preview_with_a_date_and_run_from_the_admin(client, make_user, lifetimes):
    lifetimes(remote_media_lifetime=None, thumbnail_lifetime=None)
    media = remote_media(png(301), created=NOW - 10 * DAY)
    client.force_login(make_user("mod", admin=True))
    when = (NOW - 5 * DAY).strftime("%Y-%m-%d %H:%M:%S")

    page = client.get(URL, {"remote_before": when})
    assert _rows(page.content.decode())[Kind.LABELS[Kind.REMOTE_MEDIA]][0] == 1
    assert client.post(URL, {"remote_before": when}).status_code == 403  # a moderator previews only
    assert Media.objects.filter(pk=media.pk).exists()

    root = make_user("root")
    root.is_staff = root.is_superuser = True
    root.save()
    client.force_login(root)
    response = client.post(URL, {"remote_before": when})
    assert response.status_code == 302
    assert not Media.objects.filter(pk=media.pk).exists()


def test_the_page_needs_a_staff_login(client, make_user):
    assert client.get(URL).status_code == 302
    client.force_login(make_user("bob"))
    assert client.get(URL).status_code == 302  # not staff: sent to the login page
