import pytest

from tests.conftest import download_url, upload


@pytest.mark.django_db
def test_preflight_is_answered_without_a_token(client):
    response = client.options("/_matrix/client/v1/media/download/test.local/abc",
                              HTTP_ORIGIN="https://app.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
                              HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization")
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in response["Access-Control-Allow-Headers"]
    assert "GET" in response["Access-Control-Allow-Methods"]


@pytest.mark.django_db
def test_every_matrix_response_carries_cors_headers(client, alice_client):
    mxc = upload(alice_client, b"cors")
    for response in (
        alice_client.get(download_url(mxc)),
        client.get(download_url(mxc)),  # 401
        alice_client.get("/_matrix/client/v1/media/config"),
        alice_client.get("/_matrix/unknown"),  # 404
    ):
        assert response["Access-Control-Allow-Origin"] == "*"
        assert "Content-Disposition" in response["Access-Control-Expose-Headers"]


@pytest.mark.django_db
def test_admin_gets_no_cors_headers(client):
    assert "Access-Control-Allow-Origin" not in client.get("/admin/login/")
