"""Schemathesis over the published OpenAPI document, against a real gunicorn: whatever the
schema allows a client to send (and much it does not), the server never answers 5xx."""
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from media_app.services.tokens import token_create, user_get_or_create
from tests.conftest import png_bytes, start_server, stop_server

ST = Path(sys.executable).with_name("st")
# 504 M_NOT_YET_UPLOADED is the Matrix spec's answer for a reserved ID still empty when
# timeout_ms runs out (the run reserves IDs through /create): the client's wait, not a fault.
# 502 REMOTE_FETCH_FAILED is the answer for media on another server that cannot be reached: the
# run generates server names, none of which exists. A crash is still a 500.
CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["1XX", "2XX", "3XX", "4XX", 502, 504]
"""


@pytest.fixture
def server(transactional_db, tmp_path):
    # Waits for reserved IDs capped at half a second, so generated timeout_ms values cannot
    # spend the run's time budget.
    live = start_server(tmp_path, MEDIASITE_MAX_DOWNLOAD_TIMEOUT_MS="500")
    yield live
    stop_server(live)


def test_no_server_error_anywhere_in_the_schema(server, tmp_path):
    _, token = token_create(user=user_get_or_create(username="fuzzer"), name="schemathesis")
    # Some real media, so generated IDs are not the only thing the server has seen.
    request = urllib.request.Request(server.url + "/api/v1/media?filename=a.png", data=png_bytes(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"})
    assert urllib.request.urlopen(request, timeout=10).status == 201
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    with urllib.request.urlopen(server.url + "/api/schema/?format=json", timeout=10) as answer:
        operations = sum(len(item) for item in json.load(answer)["paths"].values())

    command = [
        str(ST), "--config-file", str(tmp_path / "schemathesis.toml"),
        "run", f"{server.url}/api/schema/?format=json", "--url", server.url,
        "--header", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error",
        # Revoking random token IDs would revoke this run's own token part-way through; the
        # revocation endpoint has its own tests.
        "--exclude-path", "/api/v1/tokens/{token_id}",
        "--generation-with-security-parameters", "false",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "25", "--seed", "20261126", "--generation-database", "none",
        "--max-time", "75", "--workers", "2", "--request-timeout", "20",
        "--no-color", "--warnings", "off",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output + "\n--- server log ---\n" + server.log()[-5000:]
    # Every operation but the excluded one was exercised.
    assert "generated" in output and f"Tested: {operations - 1}" in output, output
