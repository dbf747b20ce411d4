"""``btpipe export --dry-run``: the plan a real export then follows, and nothing written.

On both profiles: the printed plan (objects, row counts, versions, ranges, where files go) is
the one the real export then runs (recorded as the runner hands it to its ranges); the output
root, local or ``s3://`` (moto on loopback), stays byte for byte as it was, leftover temp files
included; the requests sent are the planning requests only, counted by the client and by the
server alike, with no ``/btql`` page among them; an incremental dry run after a run shows only
the rows since; an unfinished run is shown resumed.
"""

from __future__ import annotations

import copy
import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from click.testing import CliRunner, Result

from pipeline.api import capabilities
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.cli import main
from pipeline.common.errors import BtpipeError
from pipeline.common.progress import Progress
from pipeline.common.state import ObjectState, RunState
from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer
from pipeline.export.dryrun import NEW_RUN_ID
from pipeline.export.runner import ExportJob, ExportOptions, ExportSummary
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, moto_s3, post, s3_client, unique

LOGS, DATASET_ROWS, EXPERIMENT_ROWS = 300, 40, 25
#: Export settings shared by the dry and the real runs: 4 ranges for the logs, 1 for the others.
SETTINGS: dict[str, Any] = {
    "format": "jsonl",
    "ranges_per_object": 4,
    "min_rows_per_range": 50,
    "page_limit": 40,
}
BUCKET = "dry-run"


def created(i: int) -> str:
    """Rows spread over three days, so that ``created`` ranges split too."""
    return f"2026-04-0{1 + i // 100}T{i % 24:02d}:{i % 60:02d}:00Z"


@pytest.fixture(scope="module")
def source(profiled_emulator: Emulator) -> dict[str, Any]:
    """A project with logs (in six writes), a dataset and an experiment; only read by tests."""
    emu = profiled_emulator
    project = post(emu.url, emu.key, "/v1/project", {"name": unique("dry-run")})
    for start in range(0, LOGS, LOGS // 6):
        rows = [
            {"id": f"r{i:03d}", "input": i, "created": created(i)} for i in range(start, start + LOGS // 6)
        ]
        insert(emu.url, emu.key, "project_logs", project["id"], rows)
    dataset = post(emu.url, emu.key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    insert(
        emu.url, emu.key, "dataset", dataset["id"], [{"id": f"d{i}", "input": i} for i in range(DATASET_ROWS)]
    )
    experiment = post(emu.url, emu.key, "/v1/experiment", {"project_id": project["id"], "name": "exp"})
    insert(emu.url, emu.key, "experiment", experiment["id"],
           [{"id": f"e{i}", "input": i, "output": i} for i in range(EXPERIMENT_ROWS)])  # fmt: skip
    return project


def flags(settings: dict[str, Any]) -> list[str]:
    return [arg for name, value in settings.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


def dry_run(
    emu: Emulator, project: str, out: str, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The plan ``btpipe export --dry-run --json`` prints."""
    result = btpipe_env(emu, env or {}, "export", "--project", project, "--out", out, *flags(SETTINGS), *args,
                        "--dry-run", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    plan: dict[str, Any] = orjson.loads(result.stdout)
    return plan


def btpipe_env(emu: Emulator, env: dict[str, str], *args: str) -> Result:
    """``btpipe ARGS`` against ``emu`` with ``env`` (object storage settings) besides."""
    full = {"BRAINTRUST_API_URL": emu.url, "BRAINTRUST_API_KEY": emu.key, **env}
    return CliRunner().invoke(main, list(args), env=full, catch_exceptions=False)


class _PlanRecorder(ExportJob):
    """The export, keeping a copy of the plan its ranges start from."""

    plans: list[RunState]

    async def _run_ranges(self, run: RunState, objects: list[ObjectState] | None = None) -> None:
        self.plans.append(copy.deepcopy(run))
        await super()._run_ranges(run, objects)


def export(
    emu: Emulator, options: ExportOptions, job: type[_PlanRecorder] = _PlanRecorder
) -> tuple[ExportSummary, RunState]:
    """Run the export in process: its summary and the plan its ranges started from."""

    async def main() -> tuple[ExportSummary, RunState]:
        async with BraintrustClient(ClientSettings(api_url=emu.url, api_key=emu.key)) as client:
            recorder = job(client, options, Progress())
            recorder.plans = []
            summary = await recorder.run()
            return summary, recorder.plans[0]

    return anyio.run(main)


def options(project: str, out: Path | str, **kw: Any) -> ExportOptions:
    return ExportOptions(project=project, out=str(out), **{**SETTINGS, **kw})


def planning_requests(emu: Emulator, objects: int, *, listings: int, incremental: bool = False) -> int:
    """The requests planning sends: the project lookup, the listings of datasets and
    experiments, the two probe questions, then per object its snapshot (newest row, oldest row
    and count; the emulator's keys split into ranges, so no sort on ``created``) and its counts
    (now, and at the version where the server counts there): of the rows it reads, and in an
    incremental run, which records tombstones, of the whole object too."""
    counts = 1 if emu.conservative else 2
    per_object = 3 + counts * (2 if incremental else 1)
    return 1 + listings + 2 + objects * per_object


def counted_requests(server: RunningServer, emu: Emulator, run: Any) -> tuple[Any, int]:
    """``run()``'s result and the requests the server received meanwhile, the probe included."""
    capabilities.forget()
    server.faults.replace(FaultConfig())  # restarts the server's request count
    result = run()
    return result, server.faults.statistics().requests


def tree(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file (its bytes and modification time) and directory (its modification time, which
    a file created or deleted in it moves) under ``root``, hidden ones too."""
    found: dict[str, tuple[bytes | None, int]] = {".": (None, root.stat().st_mtime_ns)}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(directory, name)
            found[f"{path.relative_to(root)}/"] = (None, path.stat().st_mtime_ns)
        for name in files:
            path = Path(directory, name)
            found[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def ranges_of(obj: ObjectState) -> list[dict[str, Any]]:
    return [{"index": r.index, "by": r.by, "low": r.low, "high": r.high} for r in obj.ranges]


def planned_ranges(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in ("index", "by", "low", "high")} for r in obj["ranges"]]


def test_the_plan_is_what_the_export_then_does(
    profiled_emulator: Emulator, profiled_server: RunningServer, source: dict[str, Any], tmp_path: Path
) -> None:
    emu, out = profiled_emulator, tmp_path / "out"
    plan, requests = counted_requests(profiled_server, emu, lambda: dry_run(emu, source["name"], str(out)))
    assert not out.exists()
    # every request was planning: as many as planning sends, and no page among them
    assert plan["requests"] == requests == planning_requests(emu, 3, listings=2)
    assert [o["label"] for o in plan["objects"]] == [source["name"], "dataset:golden", "experiment:exp"]
    assert [o["rows"] for o in plan["objects"]] == [LOGS, DATASET_ROWS, EXPERIMENT_ROWS]
    assert {o["rows_exact"] for o in plan["objects"]} == {not emu.conservative}
    assert [len(o["ranges"]) for o in plan["objects"]] == [4, 1, 1]
    assert (plan["resume"], plan["run_id"], plan["discards"]) == (False, None, None)

    summary, run = export(emu, options(source["name"], out))
    assert [(o.object_type, o.id, o.version, ranges_of(o)) for o in run.objects] == [
        (o["object_type"], o["id"], o["version"], planned_ranges(o)) for o in plan["objects"]
    ]
    assert [(o.rows, o.version) for o in summary.objects] == [
        (o["rows"], o["version"]) for o in plan["objects"]
    ]
    assert plan["manifest"] == str(out / summary.manifest).replace(summary.run_id, NEW_RUN_ID)
    for obj in plan["objects"]:
        directory = obj["directory"].replace(NEW_RUN_ID, summary.run_id)
        files = sorted(str(p) for p in Path(directory).iterdir())
        assert files and all(
            any(fnmatch.fnmatch(f, r["files"].replace(NEW_RUN_ID, summary.run_id)) for r in obj["ranges"])
            for f in files
        )


def test_json_holds_the_exact_plan(
    profiled_emulator: Emulator, profiled_server: RunningServer, tmp_path: Path
) -> None:
    emu = profiled_emulator
    project = post(emu.url, emu.key, "/v1/project", {"name": unique("dry-json")})
    insert(emu.url, emu.key, "project_logs", project["id"], [{"id": f"j{i}", "input": i} for i in range(30)])
    version = max(r["_xact_id"] for r in all_rows(emu.url, emu.key, "project_logs", project["id"]).values())
    out = tmp_path / "out"
    args = ("--objects", "logs", "--ranges-per-object", "1", "--compression", "gzip")
    plan, requests = counted_requests(
        profiled_server, emu, lambda: dry_run(emu, project["name"], str(out), *args)
    )
    directory = f"{out}/object_type=project_logs/object_id={project['id']}/run={NEW_RUN_ID}"
    assert plan == {
        "dry_run": True,
        "out": str(out),
        "project_id": project["id"],
        "project_name": project["name"],
        "format": "jsonl",
        "compression": "gzip",
        "shape": "spans",
        "filter": None,
        "incremental": False,
        "run_id": None,
        "resume": False,
        "discards": None,
        "manifest": f"{out}/_manifests/{NEW_RUN_ID}.json",
        "objects": [
            {
                "label": project["name"],
                "object_type": "project_logs",
                "id": project["id"],
                "name": project["name"],
                "version": version,
                "pinned": True,
                "rows": 30,
                "rows_exact": not emu.conservative,
                "since_field": None,
                "since": None,
                "previous_run": None,
                "directory": directory,
                "rows_written": 0,
                "gone": False,
                "ranges": [
                    {
                        "index": 0,
                        "by": "_pagination_key",
                        "low": None,
                        "high": None,
                        "files": f"{directory}/r00-part-*.jsonl.gz",
                        "rows_written": 0,
                        "done": False,
                    }
                ],
            }
        ],
        "requests": requests,
        "rows": 30,
        "rows_exact": not emu.conservative,
    }
    assert requests == planning_requests(emu, 1, listings=0)
    # the same plan for a person to read, on stdout
    text = btpipe(emu, "export", "--project", project["name"], "--out", str(out), "--objects", "logs",
                  "--format", "jsonl", "--ranges-per-object", "1", "--dry-run")  # fmt: skip
    assert text.exit_code == 0 and not out.exists()
    label = "exact" if not emu.conservative else "estimate"
    assert (
        f"{'about ' if emu.conservative else ''}30 rows ({label}) at version {version}, 1 range"
        in text.stdout
    )
    assert f"-> {directory}/r00-part-*.jsonl\n" in text.stdout


def test_an_incremental_dry_run_shows_only_the_rows_since_and_writes_nothing(
    profiled_emulator: Emulator, profiled_server: RunningServer, tmp_path: Path
) -> None:
    emu, out = profiled_emulator, tmp_path / "out"
    project = post(emu.url, emu.key, "/v1/project", {"name": unique("dry-incremental")})
    insert(
        emu.url, emu.key, "project_logs", project["id"], [{"id": f"a{i:03d}", "input": i} for i in range(120)]
    )
    first, _ = export(emu, options(project["name"], out, objects="logs"))
    before = all_rows(emu.url, emu.key, "project_logs", project["id"])
    insert(
        emu.url, emu.key, "project_logs", project["id"], [{"id": f"b{i:03d}", "input": i} for i in range(30)]
    )
    merges = [{"id": f"a{i:03d}", "_is_merge": True, "metadata": {"merged": True}} for i in range(5)]
    insert(emu.url, emu.key, "project_logs", project["id"], merges)
    (out / "object_type=project_logs" / ".left-behind.jsonl.1234.tmp").write_bytes(
        b"a killed run's temp file"
    )
    untouched = tree(out)

    plan, requests = counted_requests(
        profiled_server,
        emu,
        lambda: dry_run(emu, project["name"], str(out), "--objects", "logs", "--incremental"),
    )
    assert tree(out) == untouched
    assert requests == plan["requests"] == planning_requests(emu, 1, listings=0, incremental=True)
    (obj,) = plan["objects"]
    assert (obj["rows"], obj["rows_exact"]) == (35, not emu.conservative)
    if emu.conservative:  # keyset: the newest _pagination_key the first run read
        assert (obj["since_field"], obj["since"]) == (
            "_pagination_key",
            max(r["_pagination_key"] for r in before.values()),
        )
    else:
        assert (obj["since_field"], obj["since"]) == ("_xact_id", max(r["_xact_id"] for r in before.values()))
    assert obj["previous_run"] == first.run_id and plan["incremental"] is True
    full = dry_run(emu, project["name"], str(out), "--objects", "logs")
    assert full["objects"][0]["rows"] == 150 and full["objects"][0]["since"] is None
    assert tree(out) == untouched

    summary, run = export(emu, options(project["name"], out, objects="logs", incremental=True))
    assert summary.rows == 35 and ranges_of(run.objects[0]) == planned_ranges(obj)
    assert run.objects[0].version == obj["version"]
    nothing = dry_run(emu, project["name"], str(out), "--objects", "logs", "--incremental")
    assert (nothing["objects"][0]["rows"], nothing["objects"][0]["ranges"]) == (0, [])


class _Unfinished(_PlanRecorder):
    """The export, stopping just before its manifest: its run stays unfinished."""

    async def _finish(self, run: RunState) -> str:
        raise BtpipeError("stopped before the manifest")


def test_an_unfinished_run_is_shown_resumed(
    profiled_emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    emu, out = profiled_emulator, tmp_path / "out"
    with pytest.raises(BtpipeError, match="stopped before the manifest"):
        export(emu, options(source["name"], out, objects="logs"), job=_Unfinished)
    state = next((out / "_state").iterdir())
    unfinished = orjson.loads(state.read_bytes())["run"]
    untouched = tree(out)

    plan = dry_run(emu, source["name"], str(out), "--objects", "logs")
    assert (plan["resume"], plan["run_id"], plan["discards"]) == (True, unfinished["run_id"], None)
    (obj,) = plan["objects"]
    assert obj["rows_written"] == LOGS and all(r["done"] for r in obj["ranges"])
    assert (
        obj["directory"]
        == f"{out}/object_type=project_logs/object_id={source['id']}/run={unfinished['run_id']}"
    )
    restart = dry_run(emu, source["name"], str(out), "--objects", "logs", "--restart")
    assert (restart["resume"], restart["run_id"], restart["discards"]) == (False, None, unfinished["run_id"])
    assert restart["objects"][0]["rows_written"] == 0
    other = btpipe(
        emu, "export", "--project", source["name"], "--out", str(out), "--objects", "logs", "--dry-run"
    )
    assert (
        other.exit_code == 2
        and "an unfinished export" in other.stderr
        and "used other options" in other.stderr
    )
    assert tree(out) == untouched

    summary, _ = export(emu, options(source["name"], out, objects="logs"))
    assert summary.resumed and summary.run_id == plan["run_id"] and summary.rows == LOGS


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with moto_s3(BUCKET) as env:
        yield env


def bucket(env: dict[str, str]) -> dict[str, tuple[bytes, Any]]:
    """Every object of the bucket (directory markers too): its bytes and last modification."""
    client = s3_client(env)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {
        o["Key"]: (client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read(), o["LastModified"])
        for page in pages
        for o in page.get("Contents", [])
    }


def test_an_s3_out_is_not_written_to(
    profiled_emulator: Emulator, source: dict[str, Any], s3_env: dict[str, str]
) -> None:
    emu = profiled_emulator
    prefix = unique("backup")
    out = f"s3://{BUCKET}/{prefix}"
    before = bucket(s3_env)
    plan = dry_run(emu, source["name"], out, env=s3_env)
    assert bucket(s3_env) == before  # nothing under a prefix never written to
    assert plan["out"] == out and plan["manifest"] == f"{out}/_manifests/{NEW_RUN_ID}.json"
    assert (
        plan["objects"][0]["directory"]
        == f"{out}/object_type=project_logs/object_id={source['id']}/run={NEW_RUN_ID}"
    )

    result = btpipe_env(
        emu, s3_env, "export", "--project", source["name"], "--out", out, *flags(SETTINGS), "--json"
    )
    assert result.exit_code == 0, result.output
    run_id = orjson.loads(result.stdout)["run_id"]
    written = bucket(s3_env)
    assert any(key.startswith(f"{prefix}/_manifests/{run_id}") for key in written)
    incremental = dry_run(emu, source["name"], out, "--incremental", env=s3_env)
    full = dry_run(emu, source["name"], out, env=s3_env)
    assert bucket(s3_env) == written
    assert [o["rows"] for o in incremental["objects"]] == [0, 0, 0]
    assert {o["previous_run"] for o in incremental["objects"]} == {run_id}
    assert [o["rows"] for o in full["objects"]] == [LOGS, DATASET_ROWS, EXPERIMENT_ROWS]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "delta"])
def test_unless_told_every_format_reads_twelve_ranges_at_once(
    profiled_emulator: Emulator, source: dict[str, Any], tmp_path: Path, fmt: str
) -> None:
    """Without ``--workers`` or ``--ranges-per-object``, logs of 300 rows at 10 rows a range
    split into 12 ranges whatever the format; the flags still decide when given."""
    ranges = 12
    settings = ["--min-rows-per-range", "10", "--format", fmt, "--dry-run", "--json"]
    result = btpipe_env(profiled_emulator, {}, "export", "--project", source["name"], "--out", str(tmp_path),
                        "--objects", "logs", *settings)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(orjson.loads(result.stdout)["objects"][0]["ranges"]) == ranges
    told = btpipe_env(profiled_emulator, {}, "export", "--project", source["name"], "--out", str(tmp_path),
                      "--objects", "logs", *settings, "--workers", "3")  # fmt: skip
    assert len(orjson.loads(told.stdout)["objects"][0]["ranges"]) == 3
    assert (
        options(source["name"], tmp_path, format=fmt, workers=None, ranges_per_object=None).range_workers
        == ranges
    )
