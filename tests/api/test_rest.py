import pytest

from media_app.models import Media, MediaStatus
from tests.conftest import body_of, png_bytes


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
    assert set(meta) == {"media_id", "server_name", "content_uri", "upload_name", "media_type", "media_length",
                         "sha256", "created_ts", "last_access_ts", "status"}
    path = f"/api/v1/media/test.local/{meta['media_id']}"
    assert alice_client.get(path).json() == meta
    content = alice_client.get(path + "/content")
    assert content.status_code == 200 and body_of(content) == png_bytes()
    assert content["Content-Type"] == "image/png"
    partial = alice_client.get(path + "/content", HTTP_RANGE="bytes=0-3")
    assert partial.status_code == 206 and body_of(partial) == png_bytes()[:4]

    bob = client_for(make_user("bob"))
    bob.post("/api/v1/media", data=b"bob's", content_type="text/plain")
    listing = alice_client.get("/api/v1/media").json()
    assert listing["count"] == 1 and listing["results"][0]["media_id"] == meta["media_id"]
    assert bob.get(path).status_code == 200  # metadata of stored media is readable by any user


@pytest.mark.django_db
def test_rest_metadata_of_quarantined_media(alice_client, make_user, client_for):
    meta = alice_client.post("/api/v1/media", data=b"q", content_type="text/plain").json()
    Media.objects.update(status=MediaStatus.QUARANTINED)
    path = f"/api/v1/media/test.local/{meta['media_id']}"
    assert alice_client.get(path).json()["status"] == "quarantined"  # the uploader sees why
    assert client_for(make_user("bob")).get(path).json()["code"] == "MEDIA_QUARANTINED"
    assert alice_client.get(path + "/content").json()["code"] == "MEDIA_QUARANTINED"


@pytest.mark.django_db
def test_rest_errors_use_the_same_model(client, alice_client):
    assert client.get("/api/v1/media").json()["errcode"] == "M_MISSING_TOKEN"
    assert alice_client.get("/api/v1/media/test.local/missing").json()["code"] == "MEDIA_NOT_FOUND"
    assert alice_client.get("/api/v1/media/test.local/bad.id").json()["code"] == "INVALID_PARAM"


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
