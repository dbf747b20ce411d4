"""The ``chaos`` marker: the large reliability runs, only with ``-m chaos`` or ``BTPIPE_CHAOS=1``.

``make test`` runs the small versions (the same tests, smaller figures); ``make chaos`` runs
``pytest -m chaos tests/reliability``. Figures come from ``tests.reliability.support.Scale``.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: large reliability runs (make chaos)")


def chaos_enabled(config: pytest.Config) -> bool:
    return os.environ.get("BTPIPE_CHAOS") == "1" or "chaos" in (config.getoption("markexpr") or "").replace(
        "not chaos", ""
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if chaos_enabled(config):
        return
    skip = pytest.mark.skip(reason="chaos run: make chaos (or BTPIPE_CHAOS=1)")
    for item in items:
        if "chaos" in item.keywords:
            item.add_marker(skip)
