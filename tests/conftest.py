"""Shared fixtures: a real emulator over loopback for every test that needs a server.

``emulator`` is one in-process server per test session (its own thread and event loop,
a SQLite file in a temp dir); tests keep out of each other's way by using unique project
names (:func:`unique_name`). ``emulator_process`` runs the server as a subprocess on a
given database file, for tests that restart it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pipeline.emulator.server import RunningServer, ServerConfig, spawn_emulator


@dataclass(frozen=True)
class Emulator:
    url: str
    key: str = "bt-local-key"
    member_key: str = "bt-local-member-key"
    other_org_key: str = "bt-other-org-key"
    admin_key: str = "bt-admin-key"
    max_request_bytes: int = 0


#: The session emulator's request cap: 1 MiB (the real service allows ~6 MB), so that 413
#: handling is exercised with small payloads.
TEST_MAX_REQUEST_BYTES = 2**20


def unique_name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("emulator") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), max_request_bytes=TEST_MAX_REQUEST_BYTES)) as server:
        yield server


@pytest.fixture(scope="session")
def emulator(emulator_server: RunningServer) -> Emulator:
    return Emulator(url=emulator_server.url, max_request_bytes=TEST_MAX_REQUEST_BYTES)


#: Run the emulator as a subprocess on a database file (for restart tests).
emulator_process = spawn_emulator
