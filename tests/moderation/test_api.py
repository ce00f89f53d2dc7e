"""Reports (native API) and the admin media API on Synapse's paths, in Synapse's shapes."""
import time

import pytest
from django.test import override_settings

from media_app.models import Media, MediaStatus
from media_app.moderation.models import ModerationRequest, RequestStatus
from media_app.moderation import services
from tests.conftest import download_url, png_bytes, upload

ADMIN = "/_synapse/admin/v1"
IMAGE = png_bytes(40, 40, color=(9, 9, 200))


@pytest.fixture
def mod_client(client_for, mod1):
    return client_for(mod1)


def status_of(mxc: str) -> str:
    return Media.objects.get(media_id=mxc.split("/")[1]).status


@pytest.mark.django_db
def test_report_puts_media_in_the_review_queue_with_an_encrypted_reason(alice_client, client_for, make_user):
    mxc = upload(alice_client, IMAGE)
    bob = client_for(make_user("bob"))
    response = bob.post(f"/api/v1/media/{mxc}/report", {"reason": "this is my photo"}, content_type="application/json")
    assert response.status_code == 200 and response.json() == {}
    request = ModerationRequest.objects.get()
    assert request.action == "review_report" and request.status == RequestStatus.PENDING
    assert request.reason == "this is my photo" and request.requested_by.username == "bob"
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT reason FROM moderation_moderationrequest")
        stored = cursor.fetchone()[0]
    assert "my photo" not in stored  # encrypted at rest
    assert client_for(make_user("carol")).post("/api/v1/media/test.local/nope/report", {},
                                                   content_type="application/json").status_code == 404
    assert alice_client.post(f"/api/v1/media/{mxc}/report", "{", content_type="application/json").status_code == 400


@pytest.mark.django_db
def test_report_needs_authentication(client, alice_client):
    mxc = upload(alice_client, IMAGE)
    assert client.post(f"/api/v1/media/{mxc}/report", {}, content_type="application/json").status_code == 401


@pytest.mark.django_db
@override_settings(MEDIASITE={"REPORT_RATE_LIMIT": "2/hour"})
def test_reports_are_rate_limited_per_user(alice_client, client_for, make_user):
    mxc = upload(alice_client, IMAGE)
    bob = client_for(make_user("bob"))
    for _ in range(2):
        assert bob.post(f"/api/v1/media/{mxc}/report", {}, content_type="application/json").status_code == 200
    limited = bob.post(f"/api/v1/media/{mxc}/report", {}, content_type="application/json")
    assert limited.status_code == 429 and limited.json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert int(limited["Retry-After"]) > 0
    # Another user has their own allowance.
    assert alice_client.post(f"/api/v1/media/{mxc}/report", {}, content_type="application/json").status_code == 200
    assert ModerationRequest.objects.count() == 3


@pytest.mark.django_db
def test_approving_a_report_quarantines_the_media(alice_client, client_for, make_user, mod1):
    mxc = upload(alice_client, IMAGE)
    client_for(make_user("bob")).post(f"/api/v1/media/{mxc}/report", {"reason": "abuse"},
                                      content_type="application/json")
    services.moderation_request_approve(request_id=ModerationRequest.objects.get().pk, moderator=mod1)
    assert status_of(mxc) == MediaStatus.QUARANTINED


@pytest.mark.django_db
def test_quarantine_and_unquarantine_by_id(alice_client, mod_client, client_for, mod2):
    mxc = upload(alice_client, IMAGE)
    twin = upload(alice_client, IMAGE)
    response = mod_client.post(f"{ADMIN}/media/quarantine/{mxc}", {}, content_type="application/json")
    assert response.status_code == 200 and response.json() == {}
    assert alice_client.get(download_url(twin)).json()["code"] == "MEDIA_QUARANTINED"  # at once

    response = mod_client.post(f"{ADMIN}/media/unquarantine/{mxc}", {}, content_type="application/json")
    assert response.status_code == 202
    request = ModerationRequest.objects.get(pk=response.json()["request_id"])
    assert request.action == "release_media" and status_of(mxc) == MediaStatus.QUARANTINED
    services.moderation_request_approve(request_id=request.pk, moderator=mod2)
    assert alice_client.get(download_url(twin)).status_code == 200


@pytest.mark.django_db
def test_protect_and_unprotect(alice_client, mod_client):
    mxc = upload(alice_client, IMAGE)
    media_id = mxc.split("/")[1]
    assert mod_client.post(f"{ADMIN}/media/protect/{media_id}", {}, content_type="application/json").json() == {}
    refused = mod_client.post(f"{ADMIN}/media/quarantine/{mxc}", {}, content_type="application/json")
    assert refused.status_code == 400 and refused.json()["code"] == "MEDIA_PROTECTED"
    assert mod_client.post(f"{ADMIN}/media/unprotect/{media_id}", {}, content_type="application/json").status_code == 200
    assert mod_client.post(f"{ADMIN}/media/quarantine/{mxc}", {}, content_type="application/json").status_code == 200


@pytest.mark.django_db
def test_quarantine_and_list_a_users_media(alice_client, mod_client):
    first = upload(alice_client, IMAGE, filename="a.png")
    time.sleep(0.01)
    second = upload(alice_client, b"second file")
    response = mod_client.post(f"{ADMIN}/user/@alice:test.local/media/quarantine", {}, content_type="application/json")
    assert response.json() == {"num_quarantined": 2}
    listing = mod_client.get(f"{ADMIN}/users/@alice:test.local/media").json()
    assert listing["total"] == 2 and "next_token" not in listing
    assert [m["media_id"] for m in listing["media"]] == [second.split("/")[1], first.split("/")[1]]  # newest first
    item = listing["media"][1]
    assert set(item) == {"created_ts", "last_access_ts", "media_id", "media_length", "media_type",
                         "quarantined_by", "safe_from_quarantine", "upload_name"}
    assert item["quarantined_by"] == "@mod1:test.local" and item["upload_name"] == "a.png"
    assert item["safe_from_quarantine"] is False and isinstance(item["created_ts"], int)
    page = mod_client.get(f"{ADMIN}/users/alice/media?limit=1&order_by=created_ts&dir=f").json()
    assert [m["media_id"] for m in page["media"]] == [first.split("/")[1]] and page["next_token"] == 1
    assert mod_client.get(f"{ADMIN}/users/@nobody:test.local/media").status_code == 404
    assert mod_client.get(f"{ADMIN}/users/@alice:elsewhere.example/media").status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("user_id", ["a%00b", "@a%00b:test.local"])
def test_a_user_id_with_a_nul_is_an_unknown_user_not_a_server_error(mod_client, user_id):
    # PostgreSQL text cannot hold a NUL, so no user has one: 404 like any unknown user.
    listing = mod_client.get(f"{ADMIN}/users/{user_id}/media")
    quarantine = mod_client.post(f"{ADMIN}/user/{user_id}/media/quarantine", {}, content_type="application/json")
    for response in (listing, quarantine):
        assert response.status_code == 404 and response.json()["code"] == "USER_NOT_FOUND"


@pytest.mark.django_db
def test_free_text_with_a_nul_is_stored_or_refused_not_a_server_error(alice_client):
    # Upload names lose their control characters; report reasons are encrypted before storage.
    mxc = upload(alice_client, IMAGE, filename="a%00b.png")
    assert Media.objects.get(media_id=mxc.split("/")[1]).upload_name == "ab.png"
    report = alice_client.post(f"/api/v1/media/{mxc}/report", {"reason": "a\x00b"}, content_type="application/json")
    assert report.status_code == 200 and ModerationRequest.objects.get().reason == "a\x00b"


@pytest.mark.django_db
def test_delete_by_id_answers_202_with_the_pending_request(alice_client, mod_client, mod2):
    mxc = upload(alice_client, IMAGE)
    response = mod_client.delete(f"{ADMIN}/media/{mxc}")
    assert response.status_code == 202
    body = response.json()
    assert body["deleted_media"] == [] and body["total"] == 0 and body["pending_media"] == [mxc.split("/")[1]]
    assert status_of(mxc) == MediaStatus.STORED  # nothing happens before a second moderator signs off
    info = mod_client.get(f"{ADMIN}/media/{mxc}").json()["media_info"]
    assert info["media_id"] == mxc.split("/")[1] and info["user_id"] == "@alice:test.local"
    assert info["media_length"] == len(IMAGE) and info["safe_from_quarantine"] is False and len(info["sha256"]) == 64
    services.moderation_request_approve(request_id=body["request_id"], moderator=mod2)
    assert status_of(mxc) == MediaStatus.DELETED
    assert mod_client.delete(f"{ADMIN}/media/remote.example/abc").json()["errcode"] == "M_INVALID_PARAM"


@pytest.mark.django_db
def test_delete_before_ts(alice_client, mod_client):
    old = upload(alice_client, b"old and big" * 100)
    protected = upload(alice_client, b"protected sticker" * 100)
    services.media_protect(media_id=protected.split("/")[1], moderator=mod_client_user(mod_client))
    cutoff = int(time.time() * 1000) + 1000
    small = upload(alice_client, b"tiny")
    response = mod_client.post(f"{ADMIN}/media/delete?before_ts={cutoff}&size_gt=100", {},
                               content_type="application/json")
    assert response.status_code == 202
    assert response.json()["pending_media"] == [old.split("/")[1]]
    assert status_of(small) == MediaStatus.STORED
    nothing = mod_client.post(f"{ADMIN}/media/delete?before_ts=1", {}, content_type="application/json")
    assert nothing.status_code == 200 and nothing.json() == {"deleted_media": [], "total": 0}
    assert mod_client.post(f"{ADMIN}/media/delete", {}, content_type="application/json").status_code == 400


@pytest.mark.django_db
def test_out_of_range_numbers_are_refused_not_a_server_error(alice_client, mod_client):
    upload(alice_client, b"some media")
    huge = 10**20
    for url in (f"{ADMIN}/users/alice/media?limit={huge}", f"{ADMIN}/users/alice/media?from={huge}",
                f"{ADMIN}/users/alice/media?limit={2**63}"):
        response = mod_client.get(url)
        assert response.status_code == 400 and response.json()["code"] == "INVALID_PARAM", url
    for query in (f"before_ts={huge}", f"before_ts=1&size_gt={huge}"):
        response = mod_client.post(f"{ADMIN}/media/delete?{query}")
        assert response.status_code == 400 and response.json()["code"] == "INVALID_PARAM", query
    assert mod_client.get(f"{ADMIN}/users/alice/media?from={2**63 - 1}&limit={2**63 - 1}").json()["media"] == []
    assert mod_client.post(f"{ADMIN}/media/delete?before_ts=253402300799999").status_code == 202


@pytest.mark.django_db
def test_purge_media_cache_removes_remote_media_unused_since_before_ts(alice_client, mod_client):
    from datetime import timedelta

    from django.utils import timezone

    from tests.retention.conftest import png, remote_media

    now = timezone.now()
    stale = remote_media(png(501), created=now - timedelta(days=10))
    fresh = remote_media(png(502), created=now - timedelta(days=10), last_access=now)
    local = upload(alice_client, IMAGE)
    cutoff_ms = int((now - timedelta(days=1)).timestamp() * 1000)

    response = mod_client.post(f"{ADMIN}/purge_media_cache?before_ts={cutoff_ms}")

    assert response.status_code == 200 and response.json() == {"deleted": 1}
    assert not Media.objects.filter(pk=stale.pk).exists()
    assert Media.objects.filter(pk__in=[fresh.pk]).exists() and status_of(local) == MediaStatus.STORED
    assert mod_client.post(f"{ADMIN}/purge_media_cache").status_code == 400
    assert mod_client.post(f"{ADMIN}/purge_media_cache?before_ts={cutoff_ms}").json() == {"deleted": 0}


def mod_client_user(client):
    from media_app.models import AccessToken
    from media_app.services.tokens import hash_token

    token = client.defaults["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    return AccessToken.objects.get(token_hash=hash_token(token)).user


@pytest.mark.django_db
def test_non_staff_get_nothing_from_the_admin_api(alice_client, client, make_user, client_for):
    mxc = upload(alice_client, IMAGE)
    media_id = mxc.split("/")[1]
    calls = [
        ("post", f"{ADMIN}/media/quarantine/{mxc}"), ("post", f"{ADMIN}/media/unquarantine/{mxc}"),
        ("post", f"{ADMIN}/media/protect/{media_id}"), ("post", f"{ADMIN}/media/unprotect/{media_id}"),
        ("post", f"{ADMIN}/user/@alice:test.local/media/quarantine"), ("get", f"{ADMIN}/users/alice/media"),
        ("delete", f"{ADMIN}/media/{mxc}"), ("post", f"{ADMIN}/media/delete?before_ts=99999999999999"),
        ("post", f"{ADMIN}/purge_media_cache?before_ts=99999999999999"),
    ]
    staff_not_moderator = make_user("helpdesk")
    staff_not_moderator.is_staff = True
    staff_not_moderator.save()
    for who, expected in ((client, 401), (alice_client, 403), (client_for(staff_not_moderator), 403)):
        for method, url in calls:
            response = getattr(who, method)(url, {}, content_type="application/json") if method == "post" \
                else getattr(who, method)(url)
            assert response.status_code == expected, (url, response.content)
            assert response.json()["errcode"] in ("M_FORBIDDEN", "M_MISSING_TOKEN")
    assert status_of(mxc) == MediaStatus.STORED and not ModerationRequest.objects.exists()
