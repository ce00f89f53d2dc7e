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
