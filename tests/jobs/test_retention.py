"""Retention keeps the newest runs and every run their incremental chain needs, nothing else."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pipeline.common.manifest import FileInfo, Manifest, ObjectManifest, write_manifest
from pipeline.common.storage import LocalStorage
from pipeline.jobs.retention import RunRecord, full_run_due, plan_retention, project_runs, prune_runs


def chain(bases: list[bool]) -> list[RunRecord]:
    return [
        RunRecord(f"r{i:03d}", f"2026-01-01T00:00:{i:02d}", "p", f"_manifests/r{i:03d}.json", (), base)
        for i, base in enumerate(bases)
    ]


@given(st.lists(st.booleans(), max_size=40), st.integers(min_value=1, max_value=12))
def test_plan_keeps_newest_runs_and_their_base(bases: list[bool], keep_runs: int) -> None:
    runs = chain(bases)
    plan = plan_retention(runs, keep_runs)
    assert plan.prune + plan.keep == runs
    assert runs[-keep_runs:] == plan.keep[-keep_runs:] if runs else plan.keep == []
    if plan.prune:
        # The oldest kept run is the newest base at or before the oldest of the newest N.
        oldest_wanted = len(runs) - keep_runs
        first = len(plan.prune)
        assert runs[first].base
        assert not any(r.base for r in runs[first + 1 : oldest_wanted + 1])
    else:
        assert len(runs) <= keep_runs or not any(r.base for r in runs[1 : len(runs) - keep_runs + 1])
    assert (plan.warning is not None) == (len(plan.keep) > keep_runs)


def test_plan_without_a_later_base_prunes_nothing_and_warns() -> None:
    runs = chain([True, False, False, False])
    plan = plan_retention(runs, 2)
    assert plan.prune == [] and plan.keep == runs
    assert plan.warning == (
        "keeping 4 runs instead of 2: the oldest kept runs are incremental and need the full run "
        "r000 (set full_every to re-base)"
    )


def test_full_run_due_counts_runs_since_the_newest_base() -> None:
    assert not full_run_due([], 3)
    assert not full_run_due(chain([True, False]), 3)
    assert full_run_due(chain([True, False, False]), 3)
    assert not full_run_due(chain([True, False, False, True]), 3)
    assert full_run_due(chain([False]), 3)  # no base at all: re-base
    assert not full_run_due(chain([True, False, False]), None)


def write_run(storage: LocalStorage, run_id: str, project_id: str, since: str | None) -> list[str]:
    files = [
        f"object_type=project_logs/object_id={project_id}/run={run_id}/r00-part-0000{i}.parquet"
        for i in range(2)
    ]
    for path in files:
        storage.write_bytes(path, b"data")
    obj = ObjectManifest("project_logs", project_id, project_id=project_id, since_version=since,
                         files=tuple(FileInfo(p, 1, 4, "0" * 64) for p in files))  # fmt: skip
    write_manifest(
        storage, Manifest(run_id, run_id, "http://x", options={"project_id": project_id}, objects=(obj,))
    )
    return files


def test_prune_deletes_manifest_and_files_of_old_runs_of_one_project(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    write_run(storage, "2026-01-01", "p1", None)
    write_run(storage, "2026-01-02", "p1", "10")
    kept = write_run(storage, "2026-01-03", "p1", None) + write_run(storage, "2026-01-04", "p1", "20")
    other = write_run(storage, "2026-01-00", "p2", None)
    runs = project_runs(storage, "p1")
    assert [(r.run_id, r.base) for r in runs] == [
        ("2026-01-01", True), ("2026-01-02", False), ("2026-01-03", True), ("2026-01-04", False)
    ]  # fmt: skip
    plan = plan_retention(runs, 2)
    assert prune_runs(storage, plan.prune) == 6
    assert storage.list_files() == sorted(
        [
            *kept,
            *other,
            "_manifests/2026-01-03.json",
            "_manifests/2026-01-04.json",
            "_manifests/2026-01-00.json",
        ]
    )
