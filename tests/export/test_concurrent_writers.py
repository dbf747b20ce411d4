"""Exports while other clients write to the same object, on both profiles.

Every read of an export is pinned to its snapshot version, so whatever is inserted or merged
meanwhile, an export holds exactly the rows that existed at the version its manifest names:
each of them once, with the content it had then. The truth is read straight from the server
at that version (plain aiohttp, pinned ``/btql``). An object whose newest writes are deletes
is read without a version, and deletes during an export must neither lose a row that is
still there at its end nor double one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from tests.conftest import Emulator
from tests.helpers import btpipe, insert, post, read_export_files, unique

SEEDED = 400
#: Small ranges and pages, so every export has several ranges, each many pages long.
SPLIT = ("--min-rows-per-range", "40", "--ranges-per-object", "6", "--workers", "3", "--page-limit", "13")


def created(i: int) -> str:
    """A ``created`` time for row ``i``: minutes apart over hours, spelled with an offset."""
    return f"2026-02-01T{8 + i // 60:02d}:{i % 60:02d}:30.5+01:00"


def seed(emu: Emulator) -> dict[str, Any]:
    """A project whose ``SEEDED`` rows came in eight writes, ``created`` spread over hours."""
    project: dict[str, Any] = post(emu.url, emu.key, "/v1/project", {"name": unique("writers")})
    for start in range(0, SEEDED, SEEDED // 8):
        insert(emu.url, emu.key, "project_logs", project["id"],
               [{"id": f"s{i:04d}", "input": {"i": i}, "created": created(i)}
                for i in range(start, start + SEEDED // 8)])  # fmt: skip
    return project


async def _rows_at(emu: Emulator, object_id: str, version: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {emu.key}"}) as session:
        while True:
            query: dict[str, Any] = {
                "select": [{"op": "star"}],
                "from": {"op": "function", "name": {"op": "ident", "name": ["project_logs"]},
                         "args": [{"op": "literal", "value": object_id}]},
                "limit": 1000,
                "cursor": cursor,
            }  # fmt: skip
            body = {"query": query, "fmt": "json", "version": version}
            async with session.post(emu.url + "/btql", json=body) as resp:
                assert resp.status == 200, await resp.text()
                payload = orjson.loads(await resp.read())
            rows.extend(payload["data"])
            cursor = payload.get("cursor")
            if not payload["data"] or not cursor:
                return rows


def rows_at(emu: Emulator, object_id: str, version: str | None = None) -> dict[str, dict[str, Any]]:
    """Every row of the project's logs at ``version`` (now when None), by id, read straight
    from the server; an id twice fails."""
    rows = anyio.run(_rows_at, emu, object_id, version)
    found = {r["id"]: r for r in rows}
    assert len(found) == len(rows), "the server returned an id twice"
    return found


def exported(out: Path, object_id: str) -> dict[str, dict[str, Any]]:
    rows = read_export_files(out, "project_logs", object_id)
    found = {r["id"]: r for r in rows}
    assert len(found) == len(rows), "the export holds an id twice"
    return found


class Writer(threading.Thread):
    """Another client writing to one project's logs in a loop over plain HTTP, until stopped:
    ``step(n)`` gives the events of its ``n``-th request (none: done), ``pause`` seconds apart."""

    def __init__(self, emu: Emulator, object_id: str, step: Any, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.emu, self.object_id, self.step, self.pause = emu, object_id, step, pause
        self.requests = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                events = self.step(self.requests)
                if not events:
                    return
                post(
                    self.emu.url,
                    self.emu.key,
                    f"/v1/project_logs/{self.object_id}/insert",
                    {"events": events},
                )
                self.requests += 1
                self.stopping.wait(self.pause)
        except BaseException as exc:  # reported by the test, which runs in another thread
            self.error = exc

    @contextmanager
    def writing(self) -> Iterator[Writer]:
        self.start()
        try:
            yield self
        finally:
            self.stopping.set()
            self.join(timeout=60)
        assert self.error is None, f"the writer failed: {self.error!r}"


def inserts_and_merges(n: int) -> list[dict[str, Any]]:
    """Two new rows (one created now, one back among the seeded times, so it lands in a
    middle range) and merges into two rows written before, seeded or new."""
    return [
        {"id": f"w{n:05d}", "input": {"new": n}},
        {"id": f"b{n:05d}", "input": {"new": n}, "created": created(n * 37 % SEEDED)},
        {"id": f"s{n * 7 % SEEDED:04d}", "_is_merge": True, "metadata": {"merged": n}},
        {"id": f"w{max(0, n - 3):05d}", "_is_merge": True, "metadata": {"merged": n}},
    ]


def export(emu: Emulator, project: dict[str, Any], out: Path, *flags: str) -> dict[str, Any]:
    result = btpipe(emu, "export", "--project", project["name"], "--objects", "logs", "--format", "jsonl",
                    "--out", str(out), "--json", *flags)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = orjson.loads(result.stdout)
    return summary


def manifest_of(out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    (obj,) = orjson.loads((out / summary["manifest"]).read_bytes())["objects"]
    return dict(obj)


def test_exports_while_others_insert_and_merge_hold_their_snapshot_exactly(
    profiled_emulator: Emulator, tmp_path: Path
) -> None:
    emu = profiled_emulator
    project = seed(emu)
    with Writer(emu, project["id"], inserts_and_merges).writing() as writer:
        for run in range(3):
            before = writer.requests
            out = tmp_path / f"run{run}"
            summary = export(emu, project, out, *SPLIT)
            assert writer.requests > before, "nothing was written while the export ran"
            obj = manifest_of(out, summary)
            version = obj["snapshot_version"]
            assert version is not None and summary["objects"][0]["version"] == version  # read pinned
            assert exported(out, project["id"]) == rows_at(emu, project["id"], version)
            assert obj["rows_written"] == summary["rows"] >= SEEDED
            assert obj["rows_expected"] == (None if emu.conservative else summary["rows"])
            ranges = {Path(f["path"]).name.split("-")[0] for f in obj["files"]}
            assert len(ranges) > 1, "the export was not split into ranges"


@pytest.mark.parametrize("ranges", [(), SPLIT])
def test_newest_writes_deletes_are_read_without_a_version(
    profiled_emulator: Emulator, tmp_path: Path, ranges: tuple[str, ...]
) -> None:
    """Deletes leave no visible row, so the newest row predates them and a read pinned there
    would bring the deleted rows back: the object is read as one range without a version."""
    emu = profiled_emulator
    project = seed(emu)
    post(emu.url, emu.key, f"/v1/project_logs/{project['id']}/insert", {"events": [
        {"id": f"s{i:04d}", "_object_delete": True} for i in range(0, SEEDED, 3)
    ]})  # fmt: skip
    summary = export(emu, project, tmp_path, *ranges)
    now = rows_at(emu, project["id"])
    assert len(now) == SEEDED - len(range(0, SEEDED, 3))
    assert exported(tmp_path, project["id"]) == now
    assert summary["rows"] == len(now)
    (obj,) = summary["objects"]
    assert obj["version"] is None and obj["expected_rows"] is None  # read unpinned, not counted
    assert len({Path(f["path"]).name.split("-")[0] for f in manifest_of(tmp_path, summary)["files"]}) == 1


def deletes(n: int) -> list[dict[str, Any]]:
    """Delete two seeded rows a request, spread over the object, until none is left."""
    order = [i * 53 % SEEDED for i in range(SEEDED)]  # 53 is prime to 400: every row once
    return [{"id": f"s{i:04d}", "_object_delete": True} for i in order[2 * n : 2 * n + 2]]


def test_deletes_during_an_export_lose_no_row_that_stays_and_double_none(
    profiled_emulator: Emulator, tmp_path: Path
) -> None:
    emu = profiled_emulator
    for run in range(2):
        project = seed(emu)
        start = rows_at(emu, project["id"])
        out = tmp_path / f"run{run}"
        with Writer(emu, project["id"], deletes, pause=0.005).writing() as writer:
            before = writer.requests
            summary = export(emu, project, out, *SPLIT)
            during = writer.requests - before
            end = rows_at(emu, project["id"])
        assert during > 0 and end, "no delete happened while the export ran"
        got = exported(out, project["id"])  # no id twice
        assert set(end) <= set(got) <= set(start)
        assert all(got[i] == start[i] for i in got)
        version = summary["objects"][0]["version"]
        if version is not None:  # read pinned: exactly the snapshot
            assert got == rows_at(emu, project["id"], version)
