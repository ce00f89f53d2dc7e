import base64

import pytest
from django.utils import timezone

from media_app.models import Media, MediaStatus
from media_app.moderation.models import ModerationRequest
from tests.conftest import body_of, png_bytes

FIELDS = {"media_id", "server_name", "content_uri", "upload_name", "media_type", "media_length", "sha256",
          "created_ts", "last_access_ts", "status", "download_url", "thumbnail_url"}


@pytest.mark.django_db
def test_rest_upload_metadata_content_and_list(alice_client, make_user, client_for):
    response = alice_client.post("/api/v1/media?filename=red.png", data=png_bytes(), content_type="image/png")
    assert response.status_code == 201
    meta = response.json()
    assert meta["media_type"] == "image/png"
    assert meta["upload_name"] == "red.png"
    assert meta["media_length"] == len(png_bytes())
    assert meta["status"] == "stored"
    assert meta["content_uri"] == f"mxc://test.local/{meta['media_id']}"
    assert len(meta["sha256"]) == 64
    assert set(meta) == FIELDS
    path = f"/api/v1/media/test.local/{meta['media_id']}"
    assert meta["download_url"] == f"http://testserver{path}/content"
    assert meta["thumbnail_url"].startswith(f"http://testserver{path}/thumbnail?width=")
    assert alice_client.get(path).json() == meta
    content = alice_client.get(meta["download_url"])
    assert content.status_code == 200 and body_of(content) == png_bytes()
    assert content["Content-Type"] == "image/png"
    partial = alice_client.get(path + "/content", HTTP_RANGE="bytes=0-3")
    assert partial.status_code == 206 and body_of(partial) == png_bytes()[:4]
    thumb = alice_client.get(meta["thumbnail_url"])
    assert thumb.status_code == 200 and thumb["Content-Type"].startswith("image/")

    bob = client_for(make_user("bob"))
    bob.post("/api/v1/media", data=b"bob's", content_type="text/plain")
    listing = alice_client.get("/api/v1/media").json()
    assert [m["media_id"] for m in listing["results"]] == [meta["media_id"]]
    assert bob.get(path).json()["code"] == "MEDIA_NOT_FOUND"  # someone else's metadata
    staff = client_for(make_user("mod", admin=True))
    assert staff.get(path).json()["media_id"] == meta["media_id"]


@pytest.mark.django_db
def test_rest_non_image_has_no_thumbnail_url(alice_client):
    meta = alice_client.post("/api/v1/media", data=b"text", content_type="text/plain").json()
    assert meta["thumbnail_url"] is None and meta["download_url"].endswith("/content")


@pytest.mark.django_db
def test_rest_metadata_of_quarantined_media(alice_client, make_user, client_for):
    meta = alice_client.post("/api/v1/media", data=b"q", content_type="text/plain").json()
    Media.objects.update(status=MediaStatus.QUARANTINED)
    path = f"/api/v1/media/test.local/{meta['media_id']}"
    assert alice_client.get(path).json()["status"] == "quarantined"  # the uploader sees why
    assert client_for(make_user("bob")).get(path).json()["code"] == "MEDIA_NOT_FOUND"
    assert alice_client.get(path + "/content").json()["code"] == "MEDIA_QUARANTINED"


@pytest.mark.django_db
def test_owner_delete_queues_one_request_for_a_moderator(alice_client, alice):
    meta = alice_client.post("/api/v1/media", data=b"mine", content_type="text/plain").json()
    path = f"/api/v1/media/test.local/{meta['media_id']}"
    first = alice_client.delete(path)
    assert first.status_code == 202, first.content
    body = first.json()
    assert body["deletion_request"]["status"] == "pending"
    assert body["deletion_request"]["action"] == "delete_media"
    assert body["deletion_request"]["targets"] == [meta["content_uri"]]
    assert "moderator" in body["message"]
    row = ModerationRequest.objects.get()
    assert row.requested_by == alice and row.reason == "Deletion requested by the owner"
    # Nothing is deleted until the sign-off.
    assert Media.objects.get().status == MediaStatus.STORED
    assert alice_client.get(path + "/content").status_code == 200

    again = alice_client.delete(path)
    assert again.status_code == 202
    assert again.json()["deletion_request"]["id"] == body["deletion_request"]["id"]
    assert ModerationRequest.objects.count() == 1


@pytest.mark.django_db
def test_non_owner_delete_is_404_and_queues_nothing(alice_client, make_user, client_for):
    meta = alice_client.post("/api/v1/media", data=b"mine", content_type="text/plain").json()
    response = client_for(make_user("bob")).delete(f"/api/v1/media/test.local/{meta['media_id']}")
    assert response.status_code == 404 and response.json()["code"] == "MEDIA_NOT_FOUND"
    assert alice_client.delete("/api/v1/media/test.local/doesnotexist").status_code == 404
    assert ModerationRequest.objects.count() == 0


@pytest.mark.django_db
def test_list_filters(alice_client):
    png = alice_client.post("/api/v1/media", data=png_bytes(), content_type="image/png").json()
    text = alice_client.post("/api/v1/media", data=b"words", content_type="text/plain").json()
    Media.objects.filter(media_id=text["media_id"]).update(created_ts=timezone.now() - timezone.timedelta(days=3))
    Media.objects.filter(media_id=png["media_id"]).update(status=MediaStatus.QUARANTINED)

    def ids(query):
        response = alice_client.get("/api/v1/media" + query)
        assert response.status_code == 200, response.content
        return [m["media_id"] for m in response.json()["results"]]

    assert ids("?type=image/png") == ids("?type=image/*") == ids("?type=image") == [png["media_id"]]
    assert ids("?type=text/plain") == [text["media_id"]]
    assert ids("?status=quarantined") == [png["media_id"]]
    assert ids("?status=stored") == [text["media_id"]]
    yesterday = timezone.now() - timezone.timedelta(days=1)
    assert ids("?since=" + yesterday.strftime("%Y-%m-%dT%H:%M:%SZ")) == [png["media_id"]]
    assert ids(f"?since={int(yesterday.timestamp() * 1000)}") == [png["media_id"]]
    for bad in ("?status=deleted", "?status=nope", "?since=yesterday", "?cursor=garbage"):
        response = alice_client.get("/api/v1/media" + bad)
        assert response.status_code == 400 and response.json()["code"] == "INVALID_PARAM", bad


@pytest.mark.django_db
def test_cursor_pagination_walks_forward_and_back(alice_client):
    uploaded = [alice_client.post("/api/v1/media", data=f"n{i}".encode(), content_type="text/plain").json()["media_id"]
                for i in range(5)]
    seen, url, pages = [], "/api/v1/media?limit=2", []
    while url:
        page = alice_client.get(url).json()
        pages.append(page)
        seen += [m["media_id"] for m in page["results"]]
        url = page["next"]
    assert seen == list(reversed(uploaded))  # newest first, each once
    assert len(pages) == 3 and pages[0]["previous"] is None
    back = alice_client.get(pages[2]["previous"]).json()
    assert [m["media_id"] for m in back["results"]] == seen[2:4]


@pytest.mark.django_db
@pytest.mark.parametrize("query", [
    "cursor=" + base64.b64encode(b"p=2026").decode(),  # decodes, but holds no date-time
    "cursor=" + base64.b64encode(b"r=1&p=").decode(),
    "cursor=" + base64.b64encode(b"p=99999-01-01T00:00:00").decode(),  # a year no date-time holds
    "cursor=garbage", "limit=0", "limit=-1", "limit=abc", "limit=1001",
])
def test_a_bad_cursor_or_limit_is_a_400_not_a_500_nor_ignored(alice_client, query):
    alice_client.post("/api/v1/media", data=b"one", content_type="text/plain")
    response = alice_client.get(f"/api/v1/media?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "INVALID_PARAM"


@pytest.mark.django_db
def test_page_links_never_carry_the_access_token(client, alice_token):
    for i in range(3):
        client.post(f"/api/v1/media?access_token={alice_token}", data=f"n{i}".encode(), content_type="text/plain")
    page = client.get(f"/api/v1/media?limit=1&access_token={alice_token}").json()
    assert page["next"] and "access_token" not in page["next"] and alice_token not in page["next"]
    later = client.get(page["next"] + f"&access_token={alice_token}").json()
    assert later["previous"] and alice_token not in later["previous"]


@pytest.mark.django_db
def test_rest_errors_use_the_same_model(client, alice_client):
    assert client.get("/api/v1/media").json()["errcode"] == "M_MISSING_TOKEN"
    assert alice_client.get("/api/v1/media/test.local/missing").json()["code"] == "MEDIA_NOT_FOUND"
    assert alice_client.get("/api/v1/media/test.local/bad.id").json()["code"] == "INVALID_PARAM"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("put", "/api/v1/media", 405, "METHOD_NOT_ALLOWED"),  # our endpoint
        ("patch", "/api/v1/tokens", 405, "METHOD_NOT_ALLOWED"),
        ("get", "/api/v1/nothing-here", 404, "UNRECOGNIZED"),  # Django's URL resolver
        ("get", "/api/v1/media/", 404, "UNRECOGNIZED"),  # no trailing-slash redirect
        ("post", "/api/schema/", 405, "METHOD_NOT_ALLOWED"),  # a DRF view (drf-spectacular)
        ("delete", "/api/docs/", 405, "METHOD_NOT_ALLOWED"),
    ],
)
def test_framework_level_errors_use_the_same_model(alice_client, method, path, status, code):
    response = getattr(alice_client, method)(path)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code and set(body) == {"errcode", "error", "code"}


@pytest.mark.django_db
def test_openapi_schema_and_docs(client):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    doc = schema.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/media" in doc["paths"]
    assert "/api/v1/media/{server_name}/{media_id}/content" in doc["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    redoc = client.get("/api/redoc/")
    assert redoc.status_code == 200 and b"redoc.standalone.js" in redoc.content
    assert b"/api/schema/" in redoc.content  # the page renders the served schema


@pytest.mark.django_db
def test_a_method_not_allowed_says_which_are(alice_client):
    response = alice_client.patch("/api/v1/media")
    assert response.status_code == 405 and response.json()["code"] == "METHOD_NOT_ALLOWED"
    assert response["Allow"] == "GET, HEAD, OPTIONS, POST"


@pytest.mark.django_db
def test_a_created_media_is_named_in_location(alice_client):
    response = alice_client.post("/api/v1/media", data=b"located", content_type="text/plain")
    assert response.status_code == 201
    location = response["Location"]
    assert location == f"/api/v1/media/test.local/{response.json()['media_id']}"
    assert alice_client.get(location).json()["media_id"] == response.json()["media_id"]
