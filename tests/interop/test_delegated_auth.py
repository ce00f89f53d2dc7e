"""Delegated authentication against a real Synapse: its users' tokens work here, answers are
cached (positive and negative), and a token the homeserver revokes stops working."""
import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client, override_settings

from media_app.models import Media


@pytest.fixture
def delegated(synapse):
    cache.clear()
    with override_settings(MEDIASITE={**settings.MEDIASITE, "HOMESERVER_URL": synapse.url,
                                      "HOMESERVER_CACHE_SECONDS": 300, "HOMESERVER_NEGATIVE_CACHE_SECONDS": 300}):
        yield synapse
    cache.clear()


def _client(token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def _upload(client, data=b"hello from a homeserver user"):
    return client.post("/_matrix/media/v3/upload?filename=a.txt", data=data, content_type="application/octet-stream")


@pytest.mark.django_db
def test_a_homeserver_token_uploads_as_the_matrix_user(delegated):
    response = _upload(_client(delegated.token))
    assert response.status_code == 200, response.content
    media = Media.objects.get(media_id=response.json()["content_uri"].rsplit("/", 1)[1])
    assert media.uploader.username == delegated.user_id == f"@interop:{delegated.server_name}"
    assert not media.uploader.has_usable_password()
    # The same user on the next request, and on the native API.
    assert _client(delegated.token).get("/api/v1/media").json()["results"][0]["media_id"] == media.media_id


@pytest.mark.django_db
def test_unknown_tokens_are_refused_and_our_own_never_reach_the_homeserver(delegated):
    response = _upload(_client("syt_not_a_real_token_at_all"))
    assert response.status_code == 401 and response.json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert _upload(_client("mst_unknown_local_token")).status_code == 401
    assert "mst_unknown_local_token" not in delegated.log()


@pytest.mark.django_db
def test_a_guest_of_the_homeserver_is_refused(delegated):
    guest = delegated.request("POST", "/_matrix/client/v3/register?kind=guest", {})
    whoami = delegated.request("GET", "/_matrix/client/v3/account/whoami", token=guest["access_token"])
    assert whoami.get("is_guest") is True  # a real guest token, which the homeserver accepts
    response = _upload(_client(guest["access_token"]))
    assert response.status_code == 401 and response.json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert not Media.objects.exists()


@pytest.mark.django_db
def test_answers_are_cached_and_a_revoked_token_stops_working_once_they_expire(delegated):
    token = delegated.login()
    assert _upload(_client(token)).status_code == 200  # positive answer cached
    assert _upload(_client("syt_bogus_token_for_negative_cache")).status_code == 401  # negative cached
    delegated.request("POST", "/_matrix/client/v3/logout", {}, token=token)
    # Within the cache lifetime the earlier answers stand, without asking the homeserver again.
    assert _upload(_client(token), b"second").status_code == 200
    cache.clear()  # the lifetime has passed
    response = _upload(_client(token), b"third")
    assert response.status_code == 401 and response.json()["errcode"] == "M_UNKNOWN_TOKEN"


@pytest.mark.django_db
def test_cached_answers_survive_a_homeserver_outage_and_new_tokens_get_503(tmp_path):
    from tests.conftest import _free_port
    from tests.interop.synapse import start_synapse

    own = start_synapse(tmp_path / "hs", port=_free_port())
    try:
        with override_settings(MEDIASITE={**settings.MEDIASITE, "HOMESERVER_URL": own.url,
                                          "HOMESERVER_CACHE_SECONDS": 300, "HOMESERVER_NEGATIVE_CACHE_SECONDS": 300}):
            cache.clear()
            assert _upload(_client(own.token)).status_code == 200
            assert _upload(_client("syt_refused_before_the_outage")).status_code == 401
            own.stop()
            assert _upload(_client(own.token), b"during the outage").status_code == 200
            assert _upload(_client("syt_refused_before_the_outage")).status_code == 401
            response = _upload(_client("syt_never_seen_before"))
            assert response.status_code == 503 and response.json()["code"] == "AUTH_HOMESERVER_UNAVAILABLE"
            assert response["Retry-After"]
    finally:
        own.stop()
        cache.clear()


@pytest.mark.django_db
def test_without_a_homeserver_foreign_tokens_are_unknown(synapse):
    assert _upload(_client(synapse.token)).status_code == 401


@pytest.mark.django_db
def test_uncached_lookups_are_rate_limited_per_address(delegated):
    from media_app import ratelimit

    ratelimit.reset()
    with override_settings(MEDIASITE={**settings.MEDIASITE, "HOMESERVER_URL": delegated.url,
                                      "HOMESERVER_LOOKUP_RATE_PER_IP": "2/minute"}):
        assert _upload(_client("syt_random_guess_one")).status_code == 401
        assert _upload(_client("syt_random_guess_two")).status_code == 401
        response = _upload(_client("syt_random_guess_three"))
        assert response.status_code == 429 and response["Retry-After"]
    ratelimit.reset()
