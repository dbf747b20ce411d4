"""Shared fixtures: a real emulator over loopback for every test that needs a server.

``emulator`` is one in-process server per test session (its own thread and event loop,
a SQLite file in a temp dir); tests keep out of each other's way by using unique project
names (:func:`unique_name`). ``emulator_process`` runs the server as a subprocess on a
given database file, for tests that restart it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.emulator.server import RunningServer, ServerConfig


@dataclass(frozen=True)
class Emulator:
    url: str
    key: str = "bt-local-key"
    member_key: str = "bt-local-member-key"
    other_org_key: str = "bt-other-org-key"
    admin_key: str = "bt-admin-key"


def unique_name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("emulator") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db))) as server:
        yield server


@pytest.fixture(scope="session")
def emulator(emulator_server: RunningServer) -> Emulator:
    return Emulator(url=emulator_server.url)


@contextmanager
def emulator_process(db: Path, *args: str) -> Iterator[str]:
    """Run ``python -m pipeline.emulator`` on ``db`` (free port); yield its URL; stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.emulator", "--port", "0", "--db", str(db), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("emulator listening on "):
            proc.kill()
            raise RuntimeError(
                f"emulator did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
