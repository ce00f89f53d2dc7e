"""Purged remote media is fetched from its origin again when asked for (federation's fetch,
in this process, from a real HTTP origin on loopback)."""
import secrets

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from media_app.federation import blocklist
from media_app.models import Blob, Media, MediaEvent, Thumbnail
from media_app.retention.services import Kind, retention_policy, retention_run
from tests.conftest import body_of, png_bytes
from tests.federation.origin import Origin
from tests.retention.conftest import DAY, NOW, stored_bytes


@pytest.fixture
def origin(transactional_db):
    server = Origin("127.0.0.2")
    conf = {**django_settings.MEDIASITE, "FEDERATION_SERVER_MAP": {"origin.test": server.url},
            "OUTBOUND_ALLOWLIST": ["127.0.0.2/32"], "REMOTE_FETCH_DEADLINE_SECONDS": 5.0,
            "REMOTE_MEDIA_LIFETIME_DAYS": 30, "THUMBNAIL_LIFETIME_DAYS": None}
    with override_settings(MEDIASITE=conf):
        blocklist.clear_cache()
        yield server
    blocklist.clear_cache()
    server.stop()


def test_purged_remote_media_is_fetched_again(origin, alice_client):
    data = png_bytes(120, 80)
    media_id = origin.on("t" + secrets.token_hex(8), "bytes", data, "image/png")
    url = f"/_matrix/client/v1/media/download/origin.test/{media_id}"
    assert body_of(alice_client.get(url)) == data
    thumb = alice_client.get(f"/_matrix/client/v1/media/thumbnail/origin.test/{media_id}?width=32&height=32&method=crop")
    assert thumb.status_code == 200
    assert origin.count(media_id) == 1 and Thumbnail.objects.count() == 1
    Media.objects.filter(media_id=media_id).update(created_ts=NOW - 60 * DAY, last_access_ts=NOW - 31 * DAY)
    before = stored_bytes()

    report = retention_run(policy=retention_policy(now=NOW))

    assert report[Kind.REMOTE_MEDIA].count == 1 and report[Kind.REMOTE_THUMBNAILS].count == 1
    assert not Media.objects.exists() and not Blob.objects.exists()
    assert before - stored_bytes() == report.freed_bytes > len(data)

    response = alice_client.get(url)
    assert response.status_code == 200, response.content
    assert body_of(response) == data
    assert origin.count(media_id) == 2  # from the origin again, not from a leftover
    assert MediaEvent.objects.filter(event_type="media.remote_cached", media_id=media_id).count() == 2
    assert MediaEvent.objects.filter(event_type="media.purged", media_id=media_id).count() == 1
