"""The OpenAPI document: generated with no warning, valid, and describing what clients call."""
import io

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from drf_spectacular.drainage import GENERATOR_STATS


def _generate(tmp_path, **media_overrides) -> dict:
    path = tmp_path / "schema.yaml"
    with override_settings(MEDIASITE={**settings.MEDIASITE, **media_overrides}):
        # --validate checks the document against the OpenAPI 3 meta-schema; --fail-on-warn
        # turns any generator warning or error into a failure.
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path),
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert not GENERATOR_STATS
    return yaml.safe_load(path.read_text())


@pytest.fixture
def doc(tmp_path):
    return _generate(tmp_path)


def test_generation_is_clean_and_valid(doc):
    assert doc["openapi"].startswith("3.")


def test_bearer_scheme_and_every_authenticated_operation_uses_it(doc):
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "description": schemes["bearerAuth"]["description"]}
    assert schemes["accessTokenQuery"]["in"] == "query" and schemes["accessTokenQuery"]["name"] == "access_token"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path.startswith(("/_matrix/federation/", "/_matrix/key/")):
                # Other servers sign their requests (X-Matrix); no token is asked of them.
                assert {"bearerAuth": []} not in op.get("security", []), (method, path)
                continue
            assert {"bearerAuth": []} in op["security"], (method, path)
            assert set(op["responses"]["401"]["content"]["application/json"]["examples"]) == {
                "AUTH_MISSING_TOKEN", "AUTH_UNKNOWN_TOKEN"}


def test_both_apis_are_described(doc):
    expected = {
        ("post", "/_matrix/media/v3/upload"), ("post", "/_matrix/media/v1/create"),
        ("put", "/_matrix/media/v3/upload/{server_name}/{media_id}"),
        ("get", "/_matrix/client/v1/media/download/{server_name}/{media_id}"),
        ("get", "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}"),
        ("get", "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}"),
        ("get", "/_matrix/client/v1/media/config"),
        ("post", "/api/v1/media"), ("get", "/api/v1/media"),
        ("get", "/api/v1/media/{server_name}/{media_id}"), ("delete", "/api/v1/media/{server_name}/{media_id}"),
        ("get", "/api/v1/media/{server_name}/{media_id}/content"),
        ("get", "/api/v1/media/{server_name}/{media_id}/thumbnail"),
        ("get", "/api/v1/tokens"), ("post", "/api/v1/tokens"), ("delete", "/api/v1/tokens/{token_id}"),
    }
    present = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert expected <= present
    for method, path in expected:
        op = doc["paths"][path][method]
        assert op.get("summary"), (method, path)
        for status, response in op["responses"].items():
            assert response["description"] != "No response body" or status.startswith(("2", "3")), (method, path)


def test_admin_media_api_is_described_in_synapses_shapes(doc):
    admin = "/_synapse/admin/v1"
    operations = {(m, p): op for p, item in doc["paths"].items() if p.startswith(admin) for m, op in item.items()}
    assert len(operations) == 10
    for (method, path), op in operations.items():
        assert op.get("summary") and op["tags"] == ["Admin API (Synapse-compatible)"], (method, path)
        assert "FORBIDDEN" in op["responses"]["403"]["content"]["application/json"]["examples"], (method, path)

    def body(method, path, status):
        schema = operations[(method, admin + path)]["responses"][status]["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    assert body("post", "/media/quarantine/{server_name}/{media_id}", "200") == {"type": "object", "maxProperties": 0}
    assert set(body("post", "/media/unquarantine/{server_name}/{media_id}", "202")["properties"]) == {"request_id"}
    assert set(body("delete", "/media/{server_name}/{media_id}", "202")["properties"]) == {
        "deleted_media", "total", "request_id", "pending_media"}
    assert {"200", "202"} <= set(operations[("post", admin + "/media/delete")]["responses"])
    assert set(body("post", "/user/{user_id}/media/quarantine", "200")["properties"]) == {"num_quarantined"}
    listing = body("get", "/users/{user_id}/media", "200")
    assert set(listing["required"]) == {"media", "total"} and "next_token" in listing["properties"]
    assert "sha256" in doc["components"]["schemas"]["SynapseMediaInfoFields"]["properties"]
    assert set(body("post", "/purge_media_cache", "200")["properties"]) == {"deleted"}


def test_binary_responses_are_typed_as_bytes(doc):
    for path in ("/_matrix/client/v1/media/download/{server_name}/{media_id}",
                 "/api/v1/media/{server_name}/{media_id}/content"):
        responses = doc["paths"][path]["get"]["responses"]
        for status in ("200", "206"):
            assert responses[status]["content"] == {"*/*": {"schema": {"type": "string", "format": "binary"}}}
        assert "Content-Range" in responses["206"]["headers"]
        assert "application/json" in responses["404"]["content"]


def test_errors_are_the_shared_component_with_their_codes(doc):
    error = doc["components"]["schemas"]["Error"]
    assert {"errcode", "error"} <= set(error["required"]) and "code" in error["properties"]
    # Not required: the legacy media endpoints leave it out for a homeserver (allow_remote=false).
    assert "code" not in error["required"] and "allow_remote=false" in error["properties"]["code"]["description"]
    not_found = doc["paths"]["/api/v1/media/{server_name}/{media_id}/content"]["get"]["responses"]["404"]
    schema = not_found["content"]["application/json"]["schema"]
    assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}
    assert schema["allOf"][1]["properties"]["code"]["enum"] == ["MEDIA_NOT_FOUND", "MEDIA_QUARANTINED"]
    assert schema["allOf"][1]["properties"]["errcode"]["enum"] == ["M_NOT_FOUND"]
    upload = doc["paths"]["/api/v1/media"]["post"]
    assert upload["responses"]["413"]["content"]["application/json"]["examples"]["MEDIA_TOO_LARGE"]["value"] == {
        "errcode": "M_TOO_LARGE", "error": "File exceeds the maximum allowed upload size", "code": "MEDIA_TOO_LARGE"}


def test_upload_accepts_raw_and_multipart_bodies(doc):
    content = doc["paths"]["/api/v1/media"]["post"]["requestBody"]["content"]
    assert content["application/octet-stream"]["schema"] == {"type": "string", "format": "binary"}
    form = content["multipart/form-data"]["schema"]
    assert form["properties"]["file"]["items"] == {"type": "string", "format": "binary"}
    created = doc["paths"]["/api/v1/media"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert len(created["oneOf"]) == 2


def test_listing_documents_cursor_pagination(doc):
    op = doc["paths"]["/api/v1/media"]["get"]
    assert {"cursor", "limit", "type", "status", "since"} <= {p["name"] for p in op["parameters"]}
    page = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"next", "previous", "results"} <= set(doc["components"]["schemas"][page]["properties"])


def test_legacy_endpoints_only_when_enabled(tmp_path):
    legacy = "/_matrix/media/v3/config"
    assert legacy not in _generate(tmp_path, LEGACY_MEDIA=False)["paths"]
    on = _generate(tmp_path, LEGACY_MEDIA=True)
    op = on["paths"][legacy]["get"]
    assert op["deprecated"] is True and op["security"] == [{}] and "401" not in op["responses"]
    assert "/_matrix/media/v3/download/{server_name}/{media_id}" in on["paths"]


@pytest.mark.django_db
def test_served_schema_follows_the_legacy_setting(client):
    assert "/_matrix/media/v3/config" not in client.get("/api/schema/?format=json").json()["paths"]
    with override_settings(MEDIASITE={**settings.MEDIASITE, "LEGACY_MEDIA": True}):
        assert "/_matrix/media/v3/config" in client.get("/api/schema/?format=json").json()["paths"]


def test_token_creation_documents_its_json_body(doc):
    # Endpoints declare no DRF parsers, so only an explicit media type yields a request body.
    body = doc["paths"]["/api/v1/tokens"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    name = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]["properties"]["name"]
    assert name["type"] == "string" and name["maxLength"] == 100
