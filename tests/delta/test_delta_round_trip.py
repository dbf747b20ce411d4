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
