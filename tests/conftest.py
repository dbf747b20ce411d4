"""Shared fixtures: a real emulator over loopback for every test that needs a server.

``emulator`` is one in-process server per test session (its own thread and event loop,
a SQLite file in a temp dir); tests keep out of each other's way by using unique project
names (:func:`unique_name`). ``conservative_emulator`` is a second one serving the
``conservative`` profile (no ``_xact_id`` filters, no counts at a pinned version), and
``profiled_emulator`` runs a test once against each, so that every read path btpipe can
take is exercised: the probed extras and the proven fallbacks. ``emulator_process`` runs
the server as a subprocess on a given database file, for tests that restart it.
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
    profile: str = "default"

    @property
    def conservative(self) -> bool:
        """Whether this server refuses ``_xact_id`` filters and counts at a pinned version,
        so that btpipe splits ranges by ``created`` and cannot know a snapshot's row count."""
        return self.profile == "conservative"


#: The session emulator's request cap: 1 MiB (the real service allows ~6 MB), so that 413
#: handling is exercised with small payloads.
TEST_MAX_REQUEST_BYTES = 2**20


def unique_name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


#: The emulator's capability profiles, as ``profiled_emulator`` runs a test against each.
PROFILES = ("default", "conservative")


def _serve(tmp_path_factory: pytest.TempPathFactory, profile: str) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp(f"emulator-{profile}") / "emulator.db"
    config = ServerConfig(port=0, db=str(db), max_request_bytes=TEST_MAX_REQUEST_BYTES, profile=profile)
    with RunningServer(config) as server:
        yield server


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from _serve(tmp_path_factory, "default")


def _client_of(server: RunningServer, profile: str) -> Emulator:
    return Emulator(url=server.url, max_request_bytes=TEST_MAX_REQUEST_BYTES, profile=profile)


@pytest.fixture(scope="session")
def emulator(emulator_server: RunningServer) -> Emulator:
    return _client_of(emulator_server, "default")


@pytest.fixture(scope="session")
def conservative_emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from _serve(tmp_path_factory, "conservative")


@pytest.fixture(scope="session")
def conservative_emulator(conservative_emulator_server: RunningServer) -> Emulator:
    return _client_of(conservative_emulator_server, "conservative")


_SERVERS = {"default": "emulator_server", "conservative": "conservative_emulator_server"}


@pytest.fixture(scope="session", params=PROFILES)
def profiled_emulator(request: pytest.FixtureRequest) -> Emulator:
    """The session emulator of each profile in turn: a test using it runs once per profile
    (session scoped, so module fixtures built on it are made once per profile). A module
    whose every test should run on both profiles overrides ``emulator`` with it."""
    return _client_of(request.getfixturevalue(_SERVERS[request.param]), request.param)


@pytest.fixture(scope="session")
def profiled_server(profiled_emulator: Emulator, request: pytest.FixtureRequest) -> RunningServer:
    """The running server behind ``profiled_emulator`` (its store and fault injector)."""
    found: RunningServer = request.getfixturevalue(_SERVERS[profiled_emulator.profile])
    return found


#: Run the emulator as a subprocess on a database file (for restart tests).
emulator_process = spawn_emulator
