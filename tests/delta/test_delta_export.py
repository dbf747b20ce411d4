"""``--format delta`` against the emulator: after every run each Delta table equals the source,
row for row, with inserts, updates and deletes in between; one commit per table per run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from deltalake import DeltaTable

from pipeline.common.arrow_schema import OBJECT_ID_COLUMNS, restore_table
from pipeline.sinks.delta import APP_ID, RUN_ID_KEY, run_number
from pipeline.sources.decode import table_to_rows
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, make_project, post, send, unique
from tests.reliability.support import hashes

TYPES = ("project_logs", "dataset", "experiment")


def table_rows(root: Path, object_type: str, object_id: str, version: int | None = None) -> dict[str, Any]:
    """The rows of one object in its Delta table (as of ``version``), read with deltalake and
    decoded back to the source's rows, by id; an id twice fails."""
    column = OBJECT_ID_COLUMNS[object_type]  # type: ignore[index]
    table = DeltaTable(str(root / "delta" / object_type), version=version)
    arrow = table.to_pyarrow_table(filters=[(column, "=", object_id)])
    rows = table_to_rows(restore_table(arrow, object_type), object_type)  # type: ignore[arg-type]
    found = {r["id"]: r for r in rows}
    assert len(found) == len(rows), "an id is in the table twice"
    return found


def polars_ids(root: Path, object_type: str, object_id: str) -> dict[str, str]:
    """id -> _xact_id (a decimal column, as text) of one object, read with polars."""
    column = OBJECT_ID_COLUMNS[object_type]  # type: ignore[index]
    frame = pl.read_delta(str(root / "delta" / object_type)).filter(pl.col(column) == object_id)
    assert frame.height == frame["id"].n_unique()
    return dict(zip(frame["id"].to_list(), [str(v) for v in frame["_xact_id"].to_list()], strict=True))


def manifest_of(root: Path, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((root / "_manifests" / f"{run_id}.json").read_bytes())
    return data


def export(emulator: Emulator, project: dict[str, Any], root: Path) -> dict[str, Any]:
    result = btpipe(emulator, "export", "--project", project["name"], "--out", str(root), "--format", "delta",
                    "--incremental", "--json", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = orjson.loads(result.stdout)
    return summary


def assert_equal_to_source(emulator: Emulator, objects: dict[str, dict[str, Any]], root: Path) -> None:
    for object_type, obj in objects.items():
        source = all_rows(emulator.url, emulator.key, object_type, obj["id"])
        assert table_rows(root, object_type, obj["id"]) == source, object_type
        assert polars_ids(root, object_type, obj["id"]) == {i: r["_xact_id"] for i, r in source.items()}


@pytest.fixture
def objects(emulator: Emulator) -> dict[str, dict[str, Any]]:
    logs = [{"id": f"l{i:03d}", "input": {"q": i}, "output": None if i % 5 == 0 else f"a{i}",
             "metrics": {"tokens": 2**60 + i, "latency": i / 7}, "scores": {"ok": i % 2},
             "tags": ["x"], "metadata": {"n": [i, None]}} for i in range(60)]  # fmt: skip
    made = make_project(
        emulator.url, emulator.key, "delta", logs=logs,
        dataset_rows=[{"id": f"d{i}", "input": f"q{i} ✓", "expected": {"a": i}} for i in range(20)],
        experiment_name="exp", experiment_rows=[{"id": f"e{i}", "input": i, "scores": {"acc": i / 20}}
                                                for i in range(15)],
    )  # fmt: skip
    return {"project_logs": made["project"], "dataset": made["dataset"], "experiment": made["experiment"]}


def change(emulator: Emulator, objects: dict[str, dict[str, Any]], step: int) -> None:
    """Inserts, updates of existing ids and deletes in every object."""
    ids = {"project_logs": "l", "dataset": "d", "experiment": "e"}
    for object_type, obj in objects.items():
        p = ids[object_type]
        events: list[dict[str, Any]] = [
            {"id": f"{p}new{step}-{i}", "input": {"step": step, "i": i}} for i in range(4)
        ]
        events += [{"id": f"{p}{i}" if p != "l" else f"l{i:03d}", "input": {"updated": step}, "tags": [f"s{step}"]}
                   for i in range(step, step + 3)]  # fmt: skip
        events += [{"id": f"{p}{i}" if p != "l" else f"l{i:03d}", "_object_delete": True}
                   for i in range(10 + 2 * step, 12 + 2 * step)]  # fmt: skip
        insert(emulator.url, emulator.key, object_type, obj["id"], events)


def test_a_series_of_runs_keeps_each_table_equal_to_the_source(
    emulator: Emulator, objects: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    root = tmp_path / "out"
    project = objects["project_logs"]
    versions: list[dict[str, int]] = []
    for step in range(3):
        if step:
            change(emulator, objects, step)
        summary = export(emulator, project, root)
        assert_equal_to_source(emulator, objects, root)
        manifest = manifest_of(root, summary["run_id"])
        versions.append(manifest["tables"])
        for object_type in TYPES:
            table = DeltaTable(str(root / "delta" / object_type))
            assert manifest["tables"][object_type] == table.version()
            assert table.transaction_version(APP_ID) == run_number(summary["run_id"])
            assert table.history(1)[0][RUN_ID_KEY] == summary["run_id"]
    # one commit per table per run, and each version is the source as of its run
    assert [v["project_logs"] for v in versions] == [0, 1, 2]
    assert versions[1] == {t: 1 for t in TYPES} and versions[2] == {t: 2 for t in TYPES}
    before = table_rows(root, "dataset", objects["dataset"]["id"], version=1)
    assert "dnew2-0" not in before and "dnew1-0" in before and "d14" in before

    # a run with nothing new commits nothing
    summary = export(emulator, project, root)
    assert manifest_of(root, summary["run_id"])["tables"] == versions[-1]
    assert_equal_to_source(emulator, objects, root)


def test_a_full_run_deletes_what_the_source_no_longer_holds(
    emulator: Emulator, objects: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    root = tmp_path / "out"
    project = objects["project_logs"]
    export(emulator, project, root)
    change(emulator, objects, 1)
    result = btpipe(emulator, "export", "--project", project["name"], "--out", str(root), "--format", "delta",
                    "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_equal_to_source(emulator, objects, root)
    assert DeltaTable(str(root / "delta" / "project_logs")).version() == 1


def test_import_from_a_delta_table_round_trips(
    emulator: Emulator, objects: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Each table, imported into a new project, gives back the source's rows, in objects named
    as the source's; ``--until`` takes an earlier table version."""
    root = tmp_path / "out"
    project = objects["project_logs"]
    export(emulator, project, root)
    first = all_rows(emulator.url, emulator.key, "project_logs", project["id"])
    change(emulator, objects, 1)
    export(emulator, project, root)
    for object_type, until in (("project_logs", None), ("dataset", None), ("project_logs", "0")):
        target = unique("delta-import")
        args = ["import", "--in", str(root / "delta" / object_type), "--to-project", target, "--create-project",
                "--state-dir", str(tmp_path / "state"), "--quiet", "--json"]  # fmt: skip
        result = btpipe(emulator, *args, *(["--until", until] if until else []))
        assert result.exit_code == 0, result.output
        (done,) = orjson.loads(result.stdout)["objects"]
        got = all_rows(emulator.url, emulator.key, object_type, done["destination_id"])
        source = objects[object_type]["id"]
        want = first if until else all_rows(emulator.url, emulator.key, object_type, source)
        assert hashes(got.values()) == hashes(want.values()), (object_type, until)
        if object_type == "dataset":  # named as the export root's manifests name it, not by its id
            made = send("GET", emulator.url, emulator.key, f"/v1/dataset/{done['destination_id']}")
            assert made["name"] == objects["dataset"]["name"]


def test_a_table_missing_a_data_file_is_refused_before_any_row_is_sent(
    emulator: Emulator, objects: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The log names every data file; one removed from the directory stops the import with one
    line naming it, and nothing reaches the destination (the files are read through first)."""
    root = tmp_path / "out"
    project = objects["project_logs"]
    result = btpipe(emulator, "export", "--project", project["name"], "--out", str(root), "--format", "delta",
                    "--objects", "logs", "--file-rows", "20", "--workers", "1", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    files = sorted((root / "delta" / "project_logs").rglob("*.parquet"))
    assert len(files) == 3
    files[-1].unlink()
    target = unique("delta-half")
    args = ["import", "--in", str(root / "delta" / "project_logs"), "--to-project", target, "--create-project",
            "--state-dir", str(tmp_path / "state"), "--quiet", "--batch-rows", "5"]  # fmt: skip
    refused = btpipe(emulator, *args)
    assert refused.exit_code == 1, refused.output
    (line,) = refused.stderr.splitlines()
    assert line.endswith(f"{files[-1].name}: missing (the input names it, but it is not there)"), line
    made = post(emulator.url, emulator.key, "/v1/project", {"name": target})  # the one import created
    assert all_rows(emulator.url, emulator.key, "project_logs", made["id"]) == {}


def test_an_object_deleted_at_the_source_leaves_its_table(
    emulator: Emulator, objects: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """A dataset and an experiment deleted at the source are gone from their tables after the
    next run that lists every object of their kind, incremental or not; another project's
    objects in the same tables, and a run of one named dataset, leave them alone."""
    root = tmp_path / "out"
    project = objects["project_logs"]
    other = make_project(emulator.url, emulator.key, "delta-other", logs=[{"id": "o1", "input": 1}],
                         dataset_rows=[{"id": "od1", "input": 1}], experiment_name="oexp",
                         experiment_rows=[{"id": "oe1", "input": 1}])  # fmt: skip
    kept = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": "kept"})
    insert(emulator.url, emulator.key, "dataset", kept["id"], [{"id": "k1", "input": 1}])
    export(emulator, project, root)
    export(emulator, other["project"], root)
    for kind in ("dataset", "experiment"):
        send("DELETE", emulator.url, emulator.key, f"/v1/{kind}/{objects[kind]['id']}")
    named = btpipe(emulator, "export", "--project", project["name"], "--out", str(root), "--format", "delta",
                   "--objects", "dataset:kept", "--incremental", "--quiet")  # fmt: skip
    assert named.exit_code == 0, named.output
    assert len(table_rows(root, "dataset", objects["dataset"]["id"])) == 20  # not a run of every dataset
    export(emulator, project, root)
    for kind in ("dataset", "experiment"):
        assert table_rows(root, kind, objects[kind]["id"]) == {}
        assert table_rows(root, kind, other[kind]["id"]) == all_rows(emulator.url, emulator.key, kind, other[kind]["id"])  # fmt: skip
    assert table_rows(root, "dataset", kept["id"]) == all_rows(
        emulator.url, emulator.key, "dataset", kept["id"]
    )
    assert_equal_to_source(emulator, {"project_logs": project}, root)


def test_runs_a_table_cannot_take_are_refused_before_anything_is_read(
    emulator: Emulator, objects: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """A Delta table holds one row per span: summary rows (one per trace, under its root span's
    id) would overwrite root spans, so ``--shape summary`` is refused; a run reading part of
    the rows (``--filter``, ``--shape traces``) cannot create a table. Both exit 2 naming the
    flag, before anything is read or written, so the plain run after them starts afresh."""
    root = tmp_path / "out"
    project = objects["project_logs"]
    base = ("export", "--project", project["name"], "--out", str(root), "--format", "delta", "--quiet")
    summary = btpipe(emulator, *base, "--shape", "summary")
    assert summary.exit_code == 2 and "--shape summary" in summary.stderr, summary.output
    for flags in (("--filter", "input = 0"), ("--shape", "traces")):
        refused = btpipe(emulator, *base, *flags)
        assert refused.exit_code == 2 and flags[0] in refused.stderr and "no Delta table" in refused.stderr
        assert not root.exists() or not any(root.rglob("*.json")), refused.output
    export(emulator, project, root)
    assert_equal_to_source(emulator, objects, root)
    before = DeltaTable(str(root / "delta" / "project_logs")).version()
    assert btpipe(emulator, *base, "--shape", "summary").exit_code == 2  # a table there: still refused
    assert DeltaTable(str(root / "delta" / "project_logs")).version() == before
    assert_equal_to_source(emulator, objects, root)


def test_an_incremental_run_whose_table_is_gone_is_refused_before_anything_is_read(
    emulator: Emulator, objects: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The table was removed by hand after a run: an incremental run would read only the
    changes since, which cannot make a table. It is refused before reading, naming what to do,
    and leaves no unfinished run, so the full run it asks for goes through."""
    root = tmp_path / "out"
    project = objects["project_logs"]
    base = (
        "export",
        "--project",
        project["name"],
        "--objects",
        "logs",
        "--out",
        str(root),
        "--format",
        "delta",
    )
    assert btpipe(emulator, *base, "--incremental").exit_code == 0
    shutil.rmtree(root / "delta" / "project_logs")
    refused = btpipe(emulator, *base, "--incremental")
    assert refused.exit_code == 2 and "--incremental" in refused.stderr and "full run" in refused.stderr
    rebuilt = btpipe(emulator, *base)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert_equal_to_source(emulator, {"project_logs": project}, root)
