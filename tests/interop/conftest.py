"""Interoperability tests against real Matrix software (`make test-interop`; `.ci/run` runs it).

They are marked `interop` (by tests/conftest.py, for every test under this directory) and left
out of `make test`, since the first run installs Synapse into its own virtualenv."""
import socket

import pytest

from tests.conftest import require_service

from .synapse import start_synapse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def synapse(tmp_path_factory):
    try:
        server = start_synapse(tmp_path_factory.mktemp("synapse"), port=free_port())
    except Exception as exc:  # no network for the first install, Synapse crashed, ...
        require_service("Synapse", False, str(exc)[-2000:])
    yield server
    server.stop()
