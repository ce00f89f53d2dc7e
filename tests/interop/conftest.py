"""Interop tests need a real Synapse (installed from PyPI on first run, minutes) and nginx: they
run under `make test-interop` (MEDIASITE_INTEROP=1), not in the main suite."""
import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MEDIASITE_INTEROP") == "1":
        return
    skip = pytest.mark.skip(reason="interop test: run with `make test-interop`")
    for item in items:
        if "tests/interop/" in str(item.fspath):
            item.add_marker(skip)
