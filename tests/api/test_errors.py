"""Every error is JSON with errcode, error and code; no client input produces a 5xx."""
import pytest

from tests.conftest import upload


def _assert_error(response, status, errcode, code=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) >= {"errcode", "error", "code"}
    assert body["errcode"] == errcode
    if code:
        assert body["code"] == code
    text = response.content.decode()
    for leak in ("Traceback", "File \"", "/work/", "SELECT", "django", "sqlite", "psycopg"):
        assert leak not in text
    return body


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/nope", "/_matrix/media/v3/unknown", "/_matrix/client/v1/media/nope/x/y", "/api/v1/nope"])
def test_unknown_routes_are_json_404(alice_client, path):
    _assert_error(alice_client.get(path), 404, "M_UNRECOGNIZED", "UNRECOGNIZED")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/_matrix/media/v3/upload"),
        ("delete", "/_matrix/client/v1/media/config"),
        ("post", "/_matrix/client/v1/media/download/test.local/abc"),
        ("get", "/_matrix/media/v1/create"),
    ],
)
def test_wrong_methods_are_405(alice_client, method, path):
    _assert_error(getattr(alice_client, method)(path), 405, "M_UNRECOGNIZED", "METHOD_NOT_ALLOWED")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "server,media_id",
    [
        ("test.local", "bad.id"),
        ("test.local", "bad%20id"),
        ("test.local", "../../etc"),
        ("test.local", "a" * 256),
        ("test.local", "%00"),
        ("bad server", "abc"),
        ("bad_server!", "abc"),
        ("..", "abc"),
        ("test.local:99999999", "abc"),
    ],
)
def test_malformed_ids_are_400_before_any_lookup(alice_client, django_assert_num_queries, server, media_id):
    url = f"/_matrix/client/v1/media/download/{server}/{media_id}"
    alice_client.get("/_matrix/client/v1/media/config")  # the token's first use records its time
    with django_assert_num_queries(1):  # the token lookup only: no media query, no file access
        response = alice_client.get(url)
    if response.status_code == 404:  # the path itself did not route (e.g. a decoded slash)
        _assert_error(response, 404, "M_UNRECOGNIZED")
    else:
        _assert_error(response, 400, "M_INVALID_PARAM", "INVALID_PARAM")


@pytest.mark.django_db
def test_bad_content_length_is_400(alice_client):
    response = alice_client.generic("POST", "/_matrix/media/v3/upload", b"abc", CONTENT_LENGTH="abc")
    _assert_error(response, 400, "M_BAD_JSON", "BAD_REQUEST")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    ["timeout_ms=99999999999999999999", "timeout_ms=", "filename=%ff%fe", "access_token=", "x=%00"],
)
def test_odd_query_strings_never_5xx(alice_client, query):
    mxc = upload(alice_client, b"odd")
    for path in (f"/_matrix/client/v1/media/download/{mxc}?{query}", f"/_matrix/media/v3/upload?{query}"):
        method = alice_client.get if "download" in path else alice_client.post
        response = method(path, **({"data": b"z", "content_type": "text/plain"} if method == alice_client.post else {}))
        assert response.status_code < 500, (path, response.content)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_RANGE": "bytes=" + "9" * 400 + "-"},
        {"HTTP_RANGE": "bytes=--1"},
        {"HTTP_IF_NONE_MATCH": "\x00\x01"},
        {"HTTP_IF_RANGE": "garbage"},
        {"HTTP_RANGE": "bytes=0-0", "HTTP_IF_RANGE": "W/\"x\""},
    ],
)
def test_odd_headers_never_5xx(alice_client, headers):
    mxc = upload(alice_client, b"odd headers")
    response = alice_client.get(f"/_matrix/client/v1/media/download/{mxc}", **headers)
    assert response.status_code < 500


@pytest.mark.django_db
def test_unknown_route_without_token_is_still_json(client):
    _assert_error(client.get("/definitely/not/here"), 404, "M_UNRECOGNIZED")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "method,path",
    [
        ("post", "/_matrix/client/v1/media/download/test.local/abc"),
        ("put", "/_matrix/client/v1/media/thumbnail/test.local/abc"),
        ("delete", "/_matrix/client/v1/media/config"),
    ],
)
def test_wrong_methods_are_json_405_even_with_csrf_enforced(alice_token, method, path):
    from django.test import Client

    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {alice_token}")
    _assert_error(getattr(client, method)(path), 405, "M_UNRECOGNIZED", "METHOD_NOT_ALLOWED")


@pytest.mark.django_db
def test_uploads_need_no_csrf_token(alice_token):
    from django.test import Client

    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {alice_token}")
    response = client.post("/_matrix/media/v3/upload", data=b"x", content_type="text/plain")
    assert response.status_code == 200
    assert client.post("/api/v1/media", data=b"y", content_type="text/plain").status_code == 201


def test_the_documented_error_table_lists_every_error_class_as_it_is():
    """docs/ARCHITECTURE.md's table is the one clients and operators read: every class, with its
    status, Retry-After and errcode, and no row for a code that no longer exists."""
    from media_app import errors
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = text[text.index("| code | HTTP | errcode | class |"):].split("\n\n")[0].splitlines()[2:]
    rows = {}
    for line in table:
        code, status, errcode, classes = [cell.strip() for cell in line.strip("|").split("|")]
        rows[code] = (status, errcode, classes)
    classes = list(errors.error_classes())
    for cls in classes:
        status, errcode, names = rows[cls.code]
        retry_after = "Retry-After" in cls().headers
        assert status == f"{cls.status}{' (+ Retry-After)' if retry_after else ''}", cls
        assert errcode == cls.errcode and f"`{cls.__name__}`" in names, cls
    assert set(rows) == {cls.code for cls in classes}


def test_the_site_root_is_a_page_that_points_a_newcomer_on(client):
    response = client.get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert 'href="/api/docs/"' in page and 'href="/admin/"' in page and "test.local" in page
    assert client.get("/nothing-here").json()["errcode"] == "M_UNRECOGNIZED"  # other unknown paths stay JSON
