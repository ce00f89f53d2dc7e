"""Errors answered to other homeservers carry the spec's keys only.

Synapse copies the keys of a remote error it does not know into the error it builds for its own
client, and a key named `code` collides with an argument of that builder: its client's request
then failed inside Synapse and was never answered (tests/interop shows it against a real one).
"""
import pytest

from media_app.api.endpoint import Endpoint

SERVER_PATHS = [
    ("get", "/_matrix/federation/v1/media/download/abcdef"),  # unsigned: 401
    ("get", "/_matrix/federation/v1/media/thumbnail/abcdef?width=32&height=32"),  # unsigned: 401
    ("post", "/_matrix/key/v2/server"),  # wrong method: 405
]


@pytest.mark.django_db
@pytest.mark.parametrize("method,path", SERVER_PATHS)
def test_errors_to_other_servers_have_the_spec_keys_only(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code in (401, 405)
    assert set(response.json()) == {"errcode", "error"}, response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/_matrix/federation/v1/media/download/a/b", "/_matrix/key/v2/nothing"])
def test_unknown_server_paths_are_answered_as_to_a_server(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}


@pytest.mark.django_db
@pytest.mark.parametrize("legacy", [False, True], ids=["legacy-off", "legacy-on"])
def test_legacy_media_asked_with_allow_remote_false_is_answered_as_to_a_server(client, settings, legacy):
    # How a homeserver asks one that lacks the federation media endpoints (Synapse before them,
    # or after a 404 M_UNRECOGNIZED there): the spec's allow_remote=false, which clients leave out.
    settings.MEDIASITE = {**settings.MEDIASITE, "LEGACY_MEDIA": legacy}
    path = f"/_matrix/media/v3/download/{settings.MEDIASITE['SERVER_NAME']}/NoSuchMedia"
    from_server = client.get(path + "?allow_remote=false")
    from_client = client.get(path)
    assert from_server.status_code == from_client.status_code == 404
    assert set(from_server.json()) == {"errcode", "error"}
    assert "code" in from_client.json()


@pytest.mark.django_db
def test_errors_to_clients_keep_the_project_code(client):
    response = client.get("/_matrix/client/v1/media/download/localhost/abcdef")
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_MISSING_TOKEN"


def test_every_endpoint_under_the_server_paths_is_marked_for_servers():
    from django.urls import get_resolver

    def views(patterns, prefix=""):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if hasattr(pattern, "url_patterns"):
                yield from views(pattern.url_patterns, route)
            else:
                yield route, getattr(pattern.callback, "view_class", None)

    found = {route: cls for route, cls in views(get_resolver().url_patterns)
             if "_matrix/federation" in route or "_matrix/key" in route}
    assert found
    for route, cls in found.items():
        assert cls is not None and issubclass(cls, Endpoint) and cls.for_servers, route


def test_the_schema_describes_server_errors_without_the_code(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/_matrix/federation/v1/media/download/{media_id}"]["get"]
    error = operation["responses"]["401"]["content"]["application/json"]
    assert error["schema"]["allOf"][0]["$ref"].endswith("/ServerError")
    assert "code" not in schema["components"]["schemas"]["ServerError"]["properties"]
    assert all("code" not in example["value"] for example in error["examples"].values())
