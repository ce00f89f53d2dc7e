import pytest

from media_app.models import AccessToken
from media_app.services.tokens import hash_token


@pytest.mark.django_db
def test_bearer_header_and_query_parameter_both_work(client, alice_token):
    response = client.post("/_matrix/media/v3/upload", data=b"x", content_type="text/plain",
                           HTTP_AUTHORIZATION=f"Bearer {alice_token}")
    assert response.status_code == 200
    upload_with = client.post(f"/_matrix/media/v3/upload?access_token={alice_token}", data=b"y", content_type="text/plain")
    assert upload_with.status_code == 200
    mxc = upload_with.json()["content_uri"].removeprefix("mxc://")
    assert client.get(f"/_matrix/client/v1/media/download/{mxc}?access_token={alice_token}").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer "])
def test_missing_token(client, header):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get("/_matrix/client/v1/media/config", **extra)
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_MISSING_TOKEN"


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Token mst_abc", "Basic YWxpY2U6cHc=", "token"])
def test_another_scheme_than_bearer_is_a_missing_token_that_names_the_scheme(client, alice_token, header):
    """Still M_MISSING_TOKEN (Matrix clients act on it), with a message saying what to send."""
    header = header.replace("mst_abc", alice_token)
    response = client.get("/_matrix/client/v1/media/config", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    body = response.json()
    assert body["errcode"] == "M_MISSING_TOKEN" and body["code"] == "AUTH_MISSING_TOKEN"
    assert body["error"] == "The Authorization header must use the Bearer scheme: Authorization: Bearer <token>"
    # Without a header, or with Bearer and nothing after it, the token is simply missing.
    for extra in ({}, {"HTTP_AUTHORIZATION": "Bearer "}):
        assert client.get("/_matrix/client/v1/media/config", **extra).json()["error"] == "Missing access token"


@pytest.mark.django_db
def test_unknown_token(client):
    for extra, query in (({"HTTP_AUTHORIZATION": "Bearer mst_nope"}, ""), ({}, "?access_token=nope")):
        response = client.get("/_matrix/client/v1/media/config" + query, **extra)
        assert response.status_code == 401
        assert response.json()["errcode"] == "M_UNKNOWN_TOKEN"


@pytest.mark.django_db
def test_inactive_users_token_is_refused(client, alice, alice_token):
    alice.is_active = False
    alice.save()
    response = client.get("/_matrix/client/v1/media/config", HTTP_AUTHORIZATION=f"Bearer {alice_token}")
    assert response.json()["errcode"] == "M_UNKNOWN_TOKEN"


@pytest.mark.django_db
def test_tokens_are_stored_hashed(alice_token):
    row = AccessToken.objects.get()
    assert row.token_hash == hash_token(alice_token)
    assert alice_token not in row.token_hash


@pytest.mark.django_db
def test_create_token_command_prints_the_token_last(capsys, client):
    from django.core.management import call_command

    call_command("create_token", "carol", "--admin")
    lines = capsys.readouterr().out.strip().splitlines()
    token = lines[-1]
    assert token.startswith("mst_") and len(token) > 40
    response = client.get("/_matrix/client/v1/media/config", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    row = AccessToken.objects.get(user__username="carol")
    # --admin makes a moderator (staff, in `moderators`), never a superuser.
    assert row.user.is_staff and not row.user.is_superuser
    assert row.user.groups.filter(name="moderators").exists()
    assert row.token_hash == hash_token(token)
    call_command("create_token", "carol")
    assert AccessToken.objects.filter(user__username="carol").count() == 2


@pytest.mark.django_db
def test_an_admin_token_user_has_no_password_until_create_moderator_gives_one(monkeypatch, client):
    """README: `create_token --admin` sets no password; `create_moderator` for the same user does."""
    import io

    from django.core.management import call_command

    call_command("create_token", "dora", "--admin")
    user = AccessToken.objects.get(user__username="dora").user
    assert not user.has_usable_password()
    assert client.post("/admin/login/", {"username": "dora", "password": ""}).status_code == 200  # refused
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase 7\n"))
    call_command("create_moderator", "dora", "--password-stdin")
    user.refresh_from_db()
    assert user.check_password("a long enough passphrase 7") and user.is_staff and not user.is_superuser
    assert AccessToken.objects.filter(user=user).count() == 1  # the token still works as before
