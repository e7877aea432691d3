"""Shared test set-up: integration tests are marked by their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items):
    for item in items:
        if INTEGRATION in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
    # the longest files first: scripts/test.sh hands whole files to its workers in this
    # order, and one of many minutes handed out last would keep one worker busy alone
    minutes: dict[str, float] = {}
    for item in items:
        slow = item.get_closest_marker("slow")
        weight = slow.kwargs.get("minutes", 1) if slow is not None else 0
        minutes[item.fspath] = max(minutes.get(item.fspath, 0), weight)
    items.sort(key=lambda item: -minutes[item.fspath])  # stable: each file's own order kept
