"""What an export plans on each profile, and that it is what the server serves.

The default profile serves ``_xact_id`` filters and counts at a pinned version: ranges split
the write history and the run knows its exact row count. The conservative profile serves
neither, and the run must really take the fallbacks: ranges by ``created`` (open below and
above), no expected count (the manifest says so), incremental runs by ``_pagination_key``.
The plan is recorded as the runner hands it to its ranges.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from pipeline.api import capabilities, snapshot
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.common.progress import Progress
from pipeline.common.state import ObjectState, RunState
from pipeline.export.runner import ExportJob, ExportOptions, ExportSummary
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, read_export_files, unique

ROWS = 300


class _PlanRecorder(ExportJob):
    """The export, keeping a copy of the plan each time its ranges start."""

    plans: list[RunState]

    async def _run_ranges(self, run: RunState, objects: list[ObjectState] | None = None) -> None:
        self.plans.append(copy.deepcopy(run))
        await super()._run_ranges(run, objects)


def export(emu: Emulator, options: ExportOptions) -> tuple[ExportSummary, ObjectState]:
    """Run the export in process; its summary and the one object's plan."""

    async def main() -> tuple[ExportSummary, ObjectState]:
        async with BraintrustClient(ClientSettings(api_url=emu.url, api_key=emu.key)) as client:
            job = _PlanRecorder(client, options, Progress())
            job.plans = []
            summary = await job.run()
            (obj,) = job.plans[0].objects
            return summary, obj

    return anyio.run(main)


def created(i: int) -> str:
    return f"2026-04-0{1 + i // 100}T{i % 24:02d}:{i % 60:02d}:00-05:00"


def seed(emu: Emulator) -> dict[str, Any]:
    """``ROWS`` rows in six writes, ``created`` over three days (spelled with an offset)."""
    project: dict[str, Any] = post(emu.url, emu.key, "/v1/project", {"name": unique("plan")})
    for start in range(0, ROWS, ROWS // 6):
        insert(emu.url, emu.key, "project_logs", project["id"],
               [{"id": f"r{i:03d}", "input": i, "created": created(i)} for i in range(start, start + ROWS // 6)])  # fmt: skip
    return project


def options(project: dict[str, Any], out: Path, **kw: Any) -> ExportOptions:
    settings = {"objects": "logs", "format": "jsonl", "min_rows_per_range": 50, "ranges_per_object": 4,
                "page_limit": 40, **kw}  # fmt: skip
    return ExportOptions(project=project["name"], out=str(out), **settings)


def assert_the_plan_fits_the_profile(
    emu: Emulator, obj: ObjectState, rows: int, by: str = "_pagination_key"
) -> None:
    assert len(obj.ranges) == 4
    # keys of the known form split by key on either profile; only the count differs
    assert {r.by for r in obj.ranges} == {by}
    assert obj.ranges[0].low is None and obj.ranges[-1].high is None
    assert obj.expected_rows == (None if emu.conservative else rows)
    assert obj.pinned


def test_the_plan_takes_what_the_server_serves(profiled_emulator: Emulator, tmp_path: Path) -> None:
    emu = profiled_emulator
    project = seed(emu)
    summary, obj = export(emu, options(project, tmp_path))
    assert_the_plan_fits_the_profile(emu, obj, ROWS)
    rows = read_export_files(tmp_path, "project_logs", project["id"])
    assert len(rows) == ROWS and {r["id"]: r for r in rows} == all_rows(
        emu.url, emu.key, "project_logs", project["id"]
    )
    (written,) = summary.objects
    assert (written.rows, written.expected_rows, written.version) == (ROWS, obj.expected_rows, obj.version)
    (entry,) = orjson.loads((tmp_path / summary.manifest).read_bytes())["objects"]
    assert (entry["rows_written"], entry["rows_expected"]) == (ROWS, obj.expected_rows)
    assert entry["snapshot_version"] == obj.version == max(r["_xact_id"] for r in rows)


@pytest.mark.parametrize(
    "newest",
    [
        {
            "id": "old",
            "input": "an import of a row created before the others",
            "created": "2026-03-31T23:00:00Z",
        },
        {"id": "r000", "_is_merge": True, "metadata": {"merged": True}},  # the oldest created, written last
    ],
)
def test_created_ranges_split_whatever_the_newest_row_was_created(
    conservative_emulator: Emulator, tmp_path: Path, newest: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose ``_pagination_key`` values cannot be split (not a prefix and a number)
    gets ranges by ``created``; ``created`` need not grow with the write order: the ranges
    span the rows' earliest and latest ``created``, not those of the oldest and newest rows."""
    monkeypatch.setattr(snapshot, "key_bounds", lambda *args: None)
    emu = conservative_emulator
    project = seed(emu)
    insert(emu.url, emu.key, "project_logs", project["id"], [newest])
    rows = ROWS + (newest["id"] == "old")
    summary, obj = export(emu, options(project, tmp_path))
    assert_the_plan_fits_the_profile(emu, obj, rows, by="created")
    assert summary.rows == rows
    (entry,) = orjson.loads((tmp_path / summary.manifest).read_bytes())["objects"]
    per_range: dict[str, int] = {}
    for f in entry["files"]:
        prefix = Path(f["path"]).name.split("-")[0]
        per_range[prefix] = per_range.get(prefix, 0) + f["rows"]
    assert sum(per_range.values()) == rows and len(per_range) >= 3, per_range


def test_version_ranges_where_keys_cannot_be_split(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that compares versions but whose keys are of no known form gets ranges by
    ``_xact_id``, the last ending at the snapshot's version, and every row once."""
    monkeypatch.setattr(snapshot, "key_bounds", lambda *args: None)
    project = seed(emulator)
    summary, obj = export(emulator, options(project, tmp_path))
    assert summary.rows == ROWS
    assert len(obj.ranges) == 4 and {r.by for r in obj.ranges} == {"_xact_id"}
    assert obj.ranges[-1].high == obj.version and obj.expected_rows == ROWS
    rows = read_export_files(tmp_path, "project_logs", project["id"])
    assert len(rows) == ROWS and {r["id"]: r for r in rows} == all_rows(
        emulator.url, emulator.key, "project_logs", project["id"]
    )


def test_a_second_export_sends_no_probe(profiled_emulator: Emulator, tmp_path: Path) -> None:
    """The probe is answered once per API URL: the same export again sends exactly the probe's
    two requests fewer."""
    emu = profiled_emulator
    project = seed(emu)
    capabilities.forget()
    first, _ = export(emu, options(project, tmp_path / "one"))
    second, _ = export(emu, options(project, tmp_path / "two"))
    assert first.rows == second.rows == ROWS
    assert first.requests - second.requests == 2


def test_incremental_runs_export_exactly_the_changed_rows(
    profiled_emulator: Emulator, tmp_path: Path
) -> None:
    """After inserts and merges, the next --incremental run holds exactly the rows written
    since the last one (by _xact_id, or by _pagination_key where that is not served)."""
    emu = profiled_emulator
    project = seed(emu)
    run = ("export", "--project", project["name"], "--objects", "logs", "--format", "jsonl", "--incremental",
           "--out", str(tmp_path), "--json", "--min-rows-per-range", "10", "--page-limit", "7")  # fmt: skip

    def incremental() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        result = btpipe(emu, *run)
        assert result.exit_code == 0, result.output
        summary = orjson.loads(result.stdout)
        (entry,) = orjson.loads((tmp_path / summary["manifest"]).read_bytes())["objects"]
        rows = [
            orjson.loads(line)
            for f in entry["files"]
            for line in (tmp_path / f["path"]).read_bytes().splitlines()
            if line.strip()
        ]
        found = {r["id"]: r for r in rows}
        assert len(found) == len(rows), "an id was exported twice"
        return entry, found

    entry, found = incremental()
    assert len(found) == ROWS and entry["since_version"] is None
    last = found
    insert(emu.url, emu.key, "project_logs", project["id"], [
        *({"id": f"n{i}", "input": i, "created": created(i * 7)} for i in range(25)),
        *({"id": f"r{i:03d}", "_is_merge": True, "metadata": {"again": i}} for i in range(0, ROWS, 20)),
    ])  # fmt: skip
    entry, found = incremental()
    now = all_rows(emu.url, emu.key, "project_logs", project["id"])
    changed = {f"n{i}" for i in range(25)} | {f"r{i:03d}" for i in range(0, ROWS, 20)}
    assert found == {i: now[i] for i in changed}
    watermark = entry["since_version"]
    if emu.conservative:
        assert watermark == max(r["_pagination_key"] for r in last.values())
    else:
        assert watermark == max(r["_xact_id"] for r in last.values())
    entry, found = incremental()
    assert found == {} and entry["rows_written"] == 0
