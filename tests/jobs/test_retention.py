"""Retention keeps the newest runs and every run their chains need, nothing else; runs of
another scope are left alone, and runs are ordered by what they read, not by the clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.common.manifest import FileInfo, Manifest, ObjectManifest, write_manifest
from pipeline.common.storage import LocalStorage
from pipeline.jobs.retention import (
    RunRecord,
    RunScope,
    full_run_due,
    plan_retention,
    project_runs,
    prune_runs,
)

JOB = RunScope("logs,datasets")


def read(object_id: str, version: int, *, since: int | None = None, previous: str | None = None,
         files: tuple[FileInfo, ...] = (), tombstones: FileInfo | None = None) -> ObjectManifest:  # fmt: skip
    return ObjectManifest(
        "dataset", object_id, project_id="p", snapshot_version=str(version),
        since_version=None if since is None else str(since), previous_run=previous, files=files,
        tombstones=tombstones,
    )  # fmt: skip


def run(run_id: str, *objects: ObjectManifest, started: str | None = None, **options: Any) -> RunRecord:
    options = {"objects": JOB.objects, "shape": "spans", "filter": None, "project_id": "p", **options}
    return RunRecord(Manifest(run_id, started or run_id, "http://x", options=options, objects=objects))


def chain(bases: list[bool]) -> list[RunRecord]:
    """Runs r000, r001, ... of one object, each a full read or continuing the one before."""
    runs = []
    for i, base in enumerate(bases):
        previous = f"r{i - 1:03d}" if i else None
        since = None if base else 10 * i
        runs.append(run(f"r{i:03d}", read("D", 10 * (i + 1), since=since, previous=previous)))
    return runs


@given(st.lists(st.booleans(), max_size=40), st.integers(min_value=1, max_value=12))
def test_plan_keeps_newest_runs_and_their_base(bases: list[bool], keep_runs: int) -> None:
    runs = chain(bases)
    plan = plan_retention(runs, keep_runs, JOB)
    assert plan.prune + plan.keep == runs and plan.apart == []
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


def test_a_chain_within_full_every_is_kept_without_a_warning() -> None:
    """With ``full_every`` K, keeping up to K - 1 runs more than ``keep_runs`` (the chain back
    to the newest base the oldest kept run needs) is how the root is meant to look: no warning
    (``--quiet`` keeps warnings that need action). Beyond that, a base is overdue: a warning."""
    runs = chain([True, False, True, False, False])
    plan = plan_retention(runs, 2, JOB, full_every=3)
    assert plan.keep == runs[2:] and plan.warning is None
    overdue = plan_retention(chain([True, False, False, False, False]), 2, JOB, full_every=3)
    assert overdue.warning is not None and "set full_every" not in overdue.warning
    assert "need the full run r000, older than full_every (3) runs allows" in overdue.warning


def test_plan_without_a_later_base_prunes_nothing_and_warns() -> None:
    runs = chain([True, False, False, False])
    plan = plan_retention(runs, 2, JOB)
    assert plan.prune == [] and plan.keep == runs
    assert plan.warning == (
        "keeping 4 runs instead of 2: the oldest kept runs are incremental and need the full run "
        "r000 (set full_every to re-base)"
    )


def test_a_run_is_a_base_only_for_the_objects_it_read_whole() -> None:
    # r2 read logs whole but the dataset from where r1 stopped: the dataset still needs r0.
    logs, dataset = "L", "D"
    runs = [
        run("r0", read(logs, 10), read(dataset, 11)),
        run("r1", read(logs, 20, since=10, previous="r0"), read(dataset, 21, since=11, previous="r0")),
        run("r2", read(logs, 30), read(dataset, 31, since=21, previous="r1")),
    ]
    plan = plan_retention(runs, 1, JOB)
    assert plan.prune == [] and [r.run_id for r in plan.keep] == ["r0", "r1", "r2"]


def test_runs_of_another_scope_are_neither_counted_nor_pruned() -> None:
    nightly_full = run("n0", read("L", 10), read("D", 11))
    ad_hoc = run("a1", read("L", 20), objects="logs")  # every log row, but only the logs
    filtered = run("a2", read("L", 25), filter="input.q < 5")
    nightly = run("n3", read("L", 30, since=25, previous="a1"), read("D", 31, since=11, previous="n0"))
    runs = [nightly_full, ad_hoc, filtered, nightly]
    plan = plan_retention(runs, 1, JOB)
    assert plan.prune == [] and plan.keep == [nightly_full, nightly] and plan.apart == [ad_hoc, filtered]
    assert not full_run_due([r for r in runs if r.scope == JOB], 3)
    assert full_run_due([r for r in runs if r.scope == JOB], 2)


def test_a_broken_chain_prunes_nothing() -> None:
    runs = [run("r0", read("D", 10)), run("r2", read("D", 30, since=20, previous="r1"))]
    plan = plan_retention(runs, 1, JOB)
    assert plan.prune == [] and plan.warning is not None
    assert "run r2 continues run r1, which is not in the output root" in plan.warning


def test_full_run_due_counts_runs_since_the_newest_base() -> None:
    assert not full_run_due([], 3)
    assert not full_run_due(chain([True, False]), 3)
    assert full_run_due(chain([True, False, False]), 3)
    assert not full_run_due(chain([True, False, False, True]), 3)
    assert full_run_due(chain([False]), 3)  # no base at all: re-base
    assert not full_run_due(chain([True, False, False]), None)


def write_run(storage: LocalStorage, record: RunRecord) -> list[str]:
    for path in record.files:
        storage.write_bytes(path, b"data")
    write_manifest(storage, record.manifest)
    return [*record.files, f"_manifests/{record.run_id}.json"]


def parts(run_id: str, project_id: str = "p") -> tuple[FileInfo, ...]:
    base = f"object_type=project_logs/object_id={project_id}/run={run_id}"
    return tuple(FileInfo(f"{base}/r00-part-0000{i}.parquet", 1, 4, "0" * 64) for i in range(2))


def tombstones(run_id: str) -> FileInfo:
    return FileInfo(
        f"_tombstones/object_type=project_logs/object_id=p/run={run_id}/tombstones.jsonl", 1, 4, "0"
    )


def test_prune_deletes_manifest_data_and_tombstones_of_old_runs_of_one_project(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    days = [f"2026-01-0{i}" for i in range(5)]

    def logs(day: int, *, since: int | None = None, started: str | None = None) -> RunRecord:
        previous = days[day - 1] if since is not None else None
        dropped = tombstones(days[day]) if since is not None else None
        obj = read("p", 10 * day, since=since, previous=previous, files=parts(days[day]), tombstones=dropped)
        return run(days[day], obj, started=started)

    # Start times from clocks that disagree: the runs are ordered by the versions they read.
    write_run(storage, logs(1, started="2026-01-05"))
    write_run(storage, logs(2, since=10))
    kept = write_run(storage, logs(3, started="2025-12-01")) + write_run(storage, logs(4, since=30))
    objects = (ObjectManifest("project_logs", "p2", files=parts("x", "p2")),)
    other = Manifest(days[0], days[0], "http://x", options={"project_id": "p2"}, objects=objects)
    kept += write_run(storage, RunRecord(other))
    runs = project_runs(storage, "p")
    assert [(r.run_id, r.base) for r in runs] == [
        ("2026-01-01", True), ("2026-01-02", False), ("2026-01-03", True), ("2026-01-04", False)
    ]  # fmt: skip
    plan = plan_retention(runs, 2, JOB)
    assert prune_runs(storage, plan.prune) == 7
    assert storage.list_files() == sorted([*kept, "_pruned.json"])  # the record of pruned runs


class _StopsAfter(LocalStorage):
    """Local storage whose process "dies" after ``left`` more deletions (as kill -9 would)."""

    def __init__(self, root: str, left: int) -> None:
        super().__init__(root)
        self.left = left

    def delete(self, relpath: str) -> None:
        super().delete(relpath)
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt


def test_a_pruning_stopped_part_way_is_finished_by_the_next_one(tmp_path: Path) -> None:
    """The manifest goes first; the files a stopped pruning left (which a glob over the root
    still reads as rows) go at the next pruning, even one with nothing new to prune."""
    storage = LocalStorage(str(tmp_path))
    days = [f"2026-02-0{i}" for i in range(4)]
    kept: list[str] = []
    for day in (1, 2, 3):
        files = write_run(storage, run(days[day], read("p", 10 * day, files=parts(days[day]))))
        if day > 1:
            kept += files
    plan = plan_retention(project_runs(storage, "p"), 2, JOB)
    assert [r.run_id for r in plan.prune] == [days[1]]
    with pytest.raises(KeyboardInterrupt):
        prune_runs(_StopsAfter(str(tmp_path), 1), plan.prune)  # only the manifest went
    assert [r.run_id for r in project_runs(storage, "p")] == days[2:]
    assert prune_runs(storage, []) == 2  # the two data files the stopped pruning left
    assert storage.list_files() == sorted([*kept, "_pruned.json"])


def test_a_run_of_another_scope_keeps_the_jobs_runs_its_chain_needs() -> None:
    """Two jobs on one root: job b's run continues the logs chain through job a's runs (the
    watermark is the object's, not the job's), so job a keeps them while b's run is there; a
    run of another scope whose chain is already broken protects nothing."""
    mine = RunScope("logs")
    a0 = run("a0", read("L", 10), objects="logs")
    a1 = run("a1", read("L", 20, since=10, previous="a0"), objects="logs")
    b2 = run("b2", read("L", 30, since=20, previous="a1"), read("D", 31))  # job b: logs and a dataset
    a3 = run("a3", read("L", 40), objects="logs")  # job a's new base
    a4 = run("a4", read("L", 50, since=40, previous="a3"), objects="logs")
    plan = plan_retention([a0, a1, b2, a3, a4], 1, mine)
    assert plan.prune == [] and plan.keep == [a0, a1, a3, a4] and plan.apart == [b2]
    assert plan.warning == (
        "keeping 4 runs instead of 1: run(s) of another scope go back to some of them (b2); "
        "they are kept while those runs are there"
    )
    broken = run("b9", read("L", 60, since=55, previous="gone"), read("D", 61))
    plan = plan_retention([a0, a1, a3, a4, broken], 1, mine)
    assert plan.prune == [a0, a1] and plan.keep == [a3, a4]
