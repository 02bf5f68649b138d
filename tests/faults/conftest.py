"""Sizes of the fault suite: bounded for CI, `SOAK=1` for the long local run."""
import os

import pytest

SOAK = os.environ.get("SOAK") == "1"


def size(ci: int, soak: int) -> int:
    return soak if SOAK else ci


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
