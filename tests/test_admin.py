"""The moderators' admin renders its media, blob, event and token lists, and keeps status
read-only (it changes only through the state machine)."""
import pytest

from tests.conftest import upload


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["media", "blob", "mediaevent", "accesstoken", "thumbnail"])
def test_admin_lists_render(client, make_user, alice_client, model):
    upload(alice_client, b"admin sees this")
    moderator = make_user("mod", admin=True)
    client.force_login(moderator)
    response = client.get(f"/admin/media_app/{model}/")
    if model == "thumbnail":
        assert response.status_code == 404  # not registered: renditions are managed by code
    elif model == "accesstoken":
        assert response.status_code == 403  # moderators (admin=True) do not see tokens
    else:
        assert response.status_code == 200


@pytest.mark.django_db
def test_media_status_is_read_only_in_the_admin(client, make_user, alice_client):
    from media_app.models import Media

    upload(alice_client, b"status")
    client.force_login(make_user("mod", admin=True))
    media = Media.objects.get()
    page = client.get(f"/admin/media_app/media/{media.pk}/change/")
    assert page.status_code == 200
    assert b'name="status"' not in page.content


@pytest.mark.django_db
def test_admin_needs_a_staff_login(client):
    response = client.get("/admin/media_app/media/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
