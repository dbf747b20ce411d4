"""Shared pieces of the reliability suite: seeding, running the CLI, comparing results.

Results are compared by content hash per row id: a row's hash covers every field a copy
must keep (``pipeline.common.rows.DESTINATION_FIELDS`` are the ones the destination rewrites), so
"equal" means the same ids with the same content, nothing lost and nothing doubled.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from pipeline.common.rows import DESTINATION_FIELDS
from pipeline.emulator.rowwrite import Target
from pipeline.emulator.sample import bulk_load, generate_traces
from pipeline.emulator.server import RunningServer
from pipeline.querylang.ast import from_object
from tests.helpers import post, unique

#: Fault mix used throughout: every kind, 20% of requests, Retry-After of 0 s.
FAULTS = "rate=0.2,kinds=429:500:502:503:drop:truncate,retry_after=0,latency_ms=1,jitter_ms=4"
#: Client flags that keep a faulty run fast: short back-off, a generous retry budget.
RETRY_FLAGS = ("--max-retries", "40", "--max-backoff", "0.05")


def seed_logs(server: RunningServer, key: str, n_rows: int, seed: int = 7) -> dict[str, Any]:
    """A new project whose logs hold the first ``n_rows`` sample spans, written straight
    into the store (seconds instead of minutes over HTTP)."""
    project: dict[str, Any] = post(server.url, key, "/v1/project", {"name": unique("rel")})
    target = Target("project_logs", project["id"], project["id"], project["org_id"])
    bulk_load(server.store, target, islice(generate_traces(seed, n_rows), n_rows))
    return project


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of the fields a copy keeps, keys sorted, so copies and originals compare."""
    kept = {k: v for k, v in row.items() if k not in DESTINATION_FIELDS}
    return hashlib.sha256(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()


def hashes(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Row id -> content hash; an id seen twice is a duplicate and fails at once."""
    out: dict[str, str] = {}
    for row in rows:
        assert row["id"] not in out, f"row {row['id']} appears twice"
        out[row["id"]] = row_hash(row)
    return out


def cli_env(url: str, key: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": key, **extra}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def run_cli(env: Mapping[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run btpipe as a separate process, as a user would."""
    return subprocess.run(command(*args), env=dict(env), capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _pinned_rows(
    url: str, key: str, object_type: str, object_id: str, version: str | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        while True:
            query: dict[str, Any] = {"from": from_object(object_type, object_id), "select": [{"op": "star"}],
                                     "limit": 1000}  # fmt: skip
            if cursor:
                query["cursor"] = cursor
            body: dict[str, Any] = {"query": query, "fmt": "json"}
            if version is not None:
                body["version"] = version
            async with session.post(url + "/btql", json=body) as resp:
                assert resp.status == 200, await resp.text()
                payload = orjson.loads(await resp.read())
            rows.extend(payload["data"])
            cursor = payload.get("cursor")
            if not payload["data"] or not cursor:
                return rows


def rows_at(url: str, key: str, object_type: str, object_id: str, version: str | None) -> dict[str, Any]:
    """Every row of one object as the source held it at ``version`` (a read pinned there
    through ``/btql``, independent of btpipe's client; None: now), by id; an id twice fails."""
    rows = anyio.run(_pinned_rows, url, key, object_type, object_id, version)
    found = {r["id"]: r for r in rows}
    assert len(found) == len(rows), "the server returned an id twice"
    return found


def json_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.json") if p.is_file())


@dataclass(frozen=True)
class Scale:
    """How big a run is: the default suite's figures, or ``make chaos``'s."""

    fault_rows: int
    crash_rows: int
    kills: int
    #: Concurrent writers: log rows seeded (the dataset gets a quarter as many), export runs
    #: into one root while others write, and restores of it ``--until`` an earlier run.
    writer_rows: int
    writer_runs: int
    earlier_restores: int


DEFAULT = Scale(
    fault_rows=50_000, crash_rows=12_000, kills=3, writer_rows=1_200, writer_runs=5, earlier_restores=2
)
CHAOS = Scale(
    fault_rows=500_000, crash_rows=60_000, kills=10, writer_rows=20_000, writer_runs=9, earlier_restores=3
)

#: Parametrize a test over both scales; the chaos one carries the marker.
SCALES = [pytest.param(DEFAULT, id="default"), pytest.param(CHAOS, id="chaos", marks=pytest.mark.chaos)]


#: Where tests add their figures for ``tests/reliability/report.py`` (unset: nowhere).
FIGURES_ENV = "BTPIPE_RELIABILITY_FIGURES"


def record(figure: str, amount: int) -> None:
    """Add ``amount`` to ``figure`` in the figures file, when the report asked for one."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    target = Path(path)
    figures = orjson.loads(target.read_bytes()) if target.exists() else {}
    figures[figure] = figures.get(figure, 0) + amount
    target.write_bytes(orjson.dumps(figures, option=orjson.OPT_SORT_KEYS))
