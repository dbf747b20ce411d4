"""A busy deployment times out scans past a budget (``--query-timeout-rows``, 504): every
command still works there, through the paged reads the official clients make, and says so
where it could not count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.emulator.server import RunningServer, ServerConfig
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, read_export_files, unique

ROWS = 2000


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A server whose queries may read 1,500 rows: a count of the whole object times out."""
    db = tmp_path_factory.mktemp("busy") / "e.db"
    with RunningServer(ServerConfig(port=0, db=str(db), query_timeout_rows=1500)) as server:
        yield Emulator(url=server.url)


def test_every_command_works_where_a_count_of_the_object_times_out(busy: Emulator, tmp_path: Path) -> None:
    project = post(busy.url, busy.key, "/v1/project", {"name": unique("busy")})
    insert(busy.url, busy.key, "project_logs", project["id"],
           [{"id": f"r{i}", "input": i, "metadata": {"g": i % 5}} for i in range(ROWS)])  # fmt: skip
    rows = all_rows(busy.url, busy.key, "project_logs", project["id"])
    out = tmp_path / "out"
    exported = btpipe(busy, "export", "--project", project["name"], "--out", str(out), "--json")
    assert exported.exit_code == 0, exported.output
    assert {r["id"]: r for r in read_export_files(out, "project_logs", project["id"])} == rows
    checked = btpipe(busy, "verify", "--in", str(out), "--to-project", project["name"])
    assert checked.exit_code == 0, checked.output
    dry = btpipe(
        busy, "delete", "--project", project["name"], "--filter", "metadata.g = 0", "--dry-run", "--json"
    )
    assert dry.exit_code == 0, dry.output
    assert orjson.loads(dry.stdout)["matched"] is None  # not counted, and not claimed to be 0
    copy = unique("busy-copy")
    moved = btpipe(busy, "migrate", "--from-project", project["name"], "--to-project", copy, "--create-project",
                   "--state-dir", str(tmp_path / "m"))  # fmt: skip
    assert moved.exit_code == 0, moved.output
    deleted = btpipe(
        busy, "delete", "--project", project["name"], "--filter", "metadata.g = 0", "--yes", "--json"
    )
    assert deleted.exit_code == 0, deleted.output
    assert orjson.loads(deleted.stdout)["deleted"] == ROWS // 5
    left = all_rows(busy.url, busy.key, "project_logs", project["id"])
    assert set(left) == {f"r{i}" for i in range(ROWS) if i % 5}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "delta"])
def test_rows_deleted_by_the_newest_write_stay_deleted_where_nothing_can_be_counted(
    busy: Emulator, tmp_path: Path, fmt: str
) -> None:
    """The newest writes are deletes, which leave the newest visible row's version before them,
    and the server times out every count that would show it: a full run and an incremental one
    still export only the rows that are there (a pinned read brought the deleted ones back).
    The incremental run can count the rows since the last run, not the whole object, so the
    deletes of older rows are unknown to it until its tombstone pass records them."""
    project = post(busy.url, busy.key, "/v1/project", {"name": unique("busy-deletes")})
    insert(
        busy.url, busy.key, "project_logs", project["id"], [{"id": f"r{i}", "input": i} for i in range(1600)]
    )
    out = tmp_path / "out"
    args = ("export", "--project", project["name"], "--objects", "logs", "--out", str(out), "--format", fmt)
    insert(
        busy.url,
        busy.key,
        "project_logs",
        project["id"],
        [{"id": f"r{i}", "_object_delete": True} for i in range(10)],
    )
    full = btpipe(busy, *args, "--incremental")
    assert full.exit_code == 0, full.output
    insert(busy.url, busy.key, "project_logs", project["id"], [{"id": "new", "input": -1}])
    insert(
        busy.url,
        busy.key,
        "project_logs",
        project["id"],
        [{"id": f"r{i}", "_object_delete": True} for i in range(10, 20)],
    )
    later = btpipe(busy, *args, "--incremental")
    assert later.exit_code == 0, later.output
    restored = unique("busy-restored")
    imported = btpipe(busy, "import", "--in", str(out), "--to-project", restored, "--create-project",
                      "--state-dir", str(tmp_path / "s"))  # fmt: skip
    assert imported.exit_code == 0, imported.output
    copy = post(busy.url, busy.key, "/v1/project", {"name": restored})
    assert set(all_rows(busy.url, busy.key, "project_logs", copy["id"])) == set(
        all_rows(busy.url, busy.key, "project_logs", project["id"])
    )
