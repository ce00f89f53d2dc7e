"""Users manage their own access tokens: list (never the secret), create (shown once), revoke
(effective on the very next request, with no cache to wait for); the same from manage.py."""
import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from media_app.models import AccessToken
from media_app.services.tokens import hash_token, token_user


def _bearer(token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.mark.django_db
def test_create_list_and_revoke_own_tokens(alice_client, alice):
    created = alice_client.post("/api/v1/tokens", data={"name": "laptop"}, content_type="application/json")
    assert created.status_code == 201, created.content
    new = created.json()
    assert set(new) == {"id", "name", "created_ts", "last_used_ts", "token"}
    assert new["name"] == "laptop" and new["last_used_ts"] is None
    row = AccessToken.objects.get(pk=new["id"])
    assert row.user == alice and row.token_hash == hash_token(new["token"])  # only the hash is kept

    # The new token works, and its use is recorded.
    laptop = _bearer(new["token"])
    assert laptop.get("/api/v1/media").status_code == 200
    listing = alice_client.get("/api/v1/tokens").json()
    assert {t["name"] for t in listing} == {"", "laptop"}
    assert all(set(t) == {"id", "name", "created_ts", "last_used_ts"} for t in listing)  # no secrets
    assert next(t for t in listing if t["id"] == new["id"])["last_used_ts"] is not None

    revoked = alice_client.delete(f"/api/v1/tokens/{new['id']}")
    assert revoked.status_code == 204 and revoked.content == b""
    after = laptop.get("/api/v1/media")
    assert after.status_code == 401 and after.json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert alice_client.delete(f"/api/v1/tokens/{new['id']}").json()["code"] == "TOKEN_NOT_FOUND"


@pytest.mark.django_db
def test_tokens_of_others_are_invisible_and_cannot_be_revoked(alice_client, make_user, client_for):
    bob = make_user("bob")
    bob_client = client_for(bob)
    bob_token = AccessToken.objects.get(user=bob)
    assert all(t["id"] != bob_token.pk for t in alice_client.get("/api/v1/tokens").json())
    response = alice_client.delete(f"/api/v1/tokens/{bob_token.pk}")
    assert response.status_code == 404 and response.json()["code"] == "TOKEN_NOT_FOUND"
    assert bob_client.get("/api/v1/tokens").status_code == 200
    assert alice_client.delete(f"/api/v1/tokens/{2**64}").status_code == 404  # past the column's range


@pytest.mark.django_db
def test_revoking_the_token_in_use_ends_it_at_once(alice_client):
    mine = alice_client.get("/api/v1/tokens").json()[0]
    assert alice_client.delete(f"/api/v1/tokens/{mine['id']}").status_code == 204
    assert alice_client.get("/api/v1/tokens").json()["errcode"] == "M_UNKNOWN_TOKEN"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, content_type, code",
    [
        (b"name=x", "application/x-www-form-urlencoded", "UNSUPPORTED_CONTENT_TYPE"),
        (b"{not json", "application/json", "BAD_REQUEST"),
        (b'{"name": 5}', "application/json", "INVALID_PARAM"),
        (b'{"name": "' + b"x" * 101 + b'"}', "application/json", "INVALID_PARAM"),
        # PostgreSQL text cannot hold a NUL: refused before the insert, not a 500 from it.
        (b'{"name": "a\\u0000b"}', "application/json", "INVALID_PARAM"),
    ],
)
def test_token_creation_refuses_bad_bodies(alice_client, body, content_type, code):
    response = alice_client.post("/api/v1/tokens", data=body, content_type=content_type)
    assert response.status_code == 400 and response.json()["code"] == code


@pytest.mark.django_db
def test_last_used_is_written_at_most_once_per_interval(alice, make_token, django_assert_num_queries):
    token = make_token(alice)
    with django_assert_num_queries(2):  # the lookup, and the first use recorded
        assert token_user(token=token) == alice
    first = AccessToken.objects.get().last_used_ts
    assert first is not None
    with django_assert_num_queries(1):  # within the interval: the lookup only
        token_user(token=token)
    AccessToken.objects.update(last_used_ts=timezone.now() - timezone.timedelta(minutes=5))
    with django_assert_num_queries(2):
        token_user(token=token)
    assert AccessToken.objects.get().last_used_ts > first - timezone.timedelta(seconds=1)


@pytest.mark.django_db
def test_manage_py_list_tokens_and_revoke_token(alice, make_token):
    token = make_token(alice)
    row = AccessToken.objects.get()
    out = io.StringIO()
    call_command("list_tokens", "alice", stdout=out)
    assert str(row.pk) in out.getvalue() and token not in out.getvalue() and "never" in out.getvalue()
    call_command("revoke_token", str(row.pk), stdout=io.StringIO())
    assert token_user(token=token) is None
    with pytest.raises(CommandError):
        call_command("revoke_token", str(row.pk), stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("list_tokens", "nobody", stdout=io.StringIO())


@pytest.mark.django_db
def test_a_user_may_hold_only_so_many_tokens_minted_through_the_api(alice_client, alice, settings):
    settings.MEDIASITE = {**settings.MEDIASITE, "MAX_TOKENS_PER_USER": 3}  # alice_client's own is one
    made = [alice_client.post("/api/v1/tokens", {"name": f"t{i}"}, content_type="application/json")
            for i in range(3)]
    assert [r.status_code for r in made] == [201, 201, 403]
    assert made[-1].json()["code"] == "QUOTA_EXCEEDED" and "revoke one first" in made[-1].json()["error"]
    revoked = alice_client.delete(f"/api/v1/tokens/{made[0].json()['id']}")
    assert revoked.status_code == 204 and not revoked.has_header("Content-Type")  # no content, no type
    assert alice_client.post("/api/v1/tokens", {"name": "again"}, content_type="application/json").status_code == 201
    # The operator's command is not held to it.
    call_command("create_token", "alice", stdout=io.StringIO())
    assert AccessToken.objects.filter(user=alice).count() == 4
