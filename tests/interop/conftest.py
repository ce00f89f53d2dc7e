"""Interoperability tests against real Matrix software (`make test-interop`; `.ci/run` runs it).

They are marked `interop` (by tests/conftest.py, for every test under this directory) and left
out of `make test`, since the first run installs Synapse into its own virtualenv."""
import pytest

from tests.conftest import _free_port, require_service

from .synapse import start_synapse


@pytest.fixture(scope="module")
def synapse(tmp_path_factory):
    try:
        server = start_synapse(tmp_path_factory.mktemp("synapse"), port=_free_port())
    except Exception as exc:  # no network for the first install, Synapse crashed, ...
        require_service("Synapse", False, str(exc)[-2000:])
    yield server
    server.stop()
