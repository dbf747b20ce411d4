"""Rows through a Delta table come back exactly: created from staged files, then merged into."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.common import layout
from pipeline.common.storage import Storage, open_storage
from pipeline.sinks.delta import StagedObject, commit_run
from pipeline.sinks.parquet import ParquetSink
from pipeline.sources.delta import iter_rows, table_objects
from tests.test_sinks_parquet import canonical, page_of, rows_strategy

PROJECT = "0d8f52ba-6a47-4d4b-9b8c-3b7e8f1a2c11"


def stage(storage: Storage, run_id: str, rows: list[dict[str, Any]]) -> StagedObject:
    with ParquetSink(storage, f"stage/{run_id}", "project_logs", row_group_rows=2) as sink:
        sink.write_page(page_of(rows))
        files = sink.close()
    return StagedObject("project_logs", PROJECT, tuple(f.path for f in files), None, complete=False)


def table_content(storage: Storage) -> dict[str, dict[str, Any]]:
    (obj,) = table_objects(storage, layout.delta_table("project_logs"))
    found = {}
    for path in obj.files:
        for batch in iter_rows(storage, path, "project_logs", PROJECT):
            found.update({r.row["id"]: r.row for r in batch})
    return found


def numbered(rows: list[dict[str, Any]], prefix: str, version: int) -> list[dict[str, Any]]:
    """``rows`` with distinct ids, this project, and a numeric ``_xact_id`` (as the API gives)."""
    return [{**row, "id": f"{prefix}{i}", "project_id": PROJECT, "_xact_id": str(version + i)}
            for i, row in enumerate(rows)]  # fmt: skip


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(rows_strategy, min_size=1, max_size=5), second=st.lists(rows_strategy, max_size=5))
def test_created_then_merged_rows_read_back_exactly(
    tmp_path: Path, first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> None:
    storage = open_storage(str(tmp_path / uuid.uuid4().hex))
    rows = numbered(first, "r", 1000)
    staged = stage(storage, "20250101T000000000000Z", rows)
    commit_run(
        storage,
        "20250101T000000000000Z",
        [StagedObject(**{**staged.__dict__, "complete": True})],
        lambda: None,
    )
    got = table_content(storage)
    assert canonical([got[r["id"]] for r in rows]) == canonical(rows) and len(got) == len(rows)

    # the second run updates the first ids (newer versions) and adds others
    changed = numbered(second, "r", 5000)
    staged = stage(storage, "20250101T010000000000Z", changed)
    commit_run(storage, "20250101T010000000000Z", [staged], lambda: None)
    expected = {r["id"]: r for r in rows} | {r["id"]: r for r in changed}
    got = table_content(storage)
    assert sorted(got) == sorted(expected)
    assert canonical([got[i] for i in sorted(got)]) == canonical([expected[i] for i in sorted(expected)])


def test_a_row_read_and_then_found_deleted_in_one_run_is_deleted(tmp_path: Path) -> None:
    """An incremental run that read a row (unpinned) which was deleted before its tombstone
    pass holds the id both ways; the delete is the newer news, as a restore applies it, and
    the table's merge must not meet the id twice (it refused, and every re-run with it)."""
    storage = open_storage(str(tmp_path / "root"))
    rows = [{"id": f"r{i}", "project_id": PROJECT, "_xact_id": str(1000 + i), "input": i} for i in range(4)]
    first = stage(storage, "20250101T000000000000Z", rows)
    commit_run(storage, "20250101T000000000000Z", [StagedObject(**{**first.__dict__, "complete": True})], lambda: None)  # fmt: skip
    run = "20250101T010000000000Z"
    updated = [
        {**rows[1], "_xact_id": "2001", "input": "new"},
        {**rows[2], "_xact_id": "2002", "input": "gone"},
    ]
    staged = stage(storage, run, updated)
    tombstones = f"stage/{run}/tombstones.jsonl"
    storage.write_bytes(tombstones, b'{"id": "r2"}\n{"id": "r3"}\n')
    commit_run(storage, run, [StagedObject(**{**staged.__dict__, "tombstones": tombstones})], lambda: None)
    got = table_content(storage)
    assert sorted(got) == ["r0", "r1"] and got["r1"]["input"] == "new"
