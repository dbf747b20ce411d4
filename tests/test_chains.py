"""Chains of runs: runs ordered by what they read, and per object the base and the later runs
of its scope that restore it; manifests written before the chain fields are read as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.common.chains import BrokenChain, RunIndex, Scope, is_complete, order_runs
from pipeline.common.errors import UsageError
from pipeline.common.manifest import FileInfo, Manifest, ObjectManifest, write_manifest
from pipeline.common.storage import LocalStorage
from pipeline.sources.inputs import find_inputs


def read(object_id: str, version: int | None, *, since: int | None = None, previous: str | None = None,
         tombstones: FileInfo | None = None) -> ObjectManifest:  # fmt: skip
    return ObjectManifest(
        "dataset", object_id, name=object_id, snapshot_version=None if version is None else str(version),
        since_version=None if since is None else str(since), previous_run=previous, tombstones=tombstones,
        files=(FileInfo(f"{object_id}/{version}.jsonl", 1, 1, "0"),),
    )  # fmt: skip


def run(
    run_id: str, *objects: ObjectManifest, started: str = "2026-01-01T00:00:00", **options: Any
) -> Manifest:
    return Manifest(run_id, started, "http://x", options={"shape": "spans", "filter": None, **options},
                    objects=objects)  # fmt: skip


def ids(runs: list[Manifest]) -> list[str]:
    return [m.run_id for m in runs]


def test_runs_are_ordered_by_the_versions_they_read_not_their_clock() -> None:
    # Run ids and start times come from clocks two hours apart: "b" ran first.
    late = run("a", read("D", 20), started="2026-01-01T00:00:00")
    early = run("b", read("D", 10), started="2026-01-01T02:00:00")
    assert ids(order_runs([late, early])) == ["b", "a"]


def test_a_run_naming_another_as_previous_comes_after_it_at_the_same_version() -> None:
    # Only deletes between the runs: the version did not move, the link orders them.
    full = run("z", read("D", 10))
    after = run("a", read("D", 10, since=10, previous="z"))
    assert ids(order_runs([after, full])) == ["z", "a"]


def test_an_object_read_by_both_runs_orders_them_whatever_the_other_objects() -> None:
    # "n" read a dataset written since "o" ran, but "o" read another object written later still.
    older = run("o", read("D", 10), read("E", 50))
    newer = run("n", read("D", 20))
    assert ids(order_runs([newer, older])) == ["o", "n"]
    unrelated = run("u", read("F", 30))  # shares no object: placed by the newest version it read
    assert ids(order_runs([newer, unrelated, older])) == ["u", "o", "n"]


def test_contradicting_orders_still_give_every_run_once() -> None:
    # Two runs written at once before roots had a lease: each read one object before the other.
    one = run("x", read("D", 10), read("E", 40))
    two = run("y", read("D", 20), read("E", 30))
    assert sorted(ids(order_runs([one, two]))) == ["x", "y"]


def test_a_restore_starts_at_the_newest_base_and_reads_the_later_runs_of_its_scope() -> None:
    runs = [
        run("r1", read("D", 10)),
        run("r2", read("D", 20, since=10, previous="r1")),
        run("r3", read("D", 30)),  # a full run: the base
        run("r4", read("D", 35), filter="input = 1"),  # another scope: apart
        run("r5", read("D", 40, since=30, previous="r3")),
        run("r6", read("D", 50, since=40, previous="r5")),
    ]
    index = RunIndex(runs, "root")
    assert [e.run_id for e in index.restore_chain("D")] == ["r3", "r5", "r6"]
    assert [e.run_id for e in index.until("r5").restore_chain("D")] == ["r3", "r5"]
    assert [e.run_id for e in index.until("r2").restore_chain("D")] == ["r1", "r2"]
    assert [e.run_id for e in index.chain_to("D", Scope(), "r5")] == ["r3", "r5"]
    with pytest.raises(UsageError, match=r"^--until: no run r9 in root \(the newest runs: r4, r5, r6\)$"):
        index.until("r9")


def test_an_object_read_only_through_one_filter_restores_from_that_scope() -> None:
    runs = [
        run("r1", read("D", 10), filter="x = 1"),
        run("r2", read("D", 20, since=10, previous="r1"), filter="x = 1"),
    ]
    assert [e.run_id for e in RunIndex(runs, "root").restore_chain("D")] == ["r1", "r2"]
    runs.append(run("r3", read("D", 30), shape="traces"))
    with pytest.raises(UsageError, match="root holds only partial reads of it"):
        RunIndex(runs, "root").restore_chain("D")


def test_a_chain_missing_a_link_is_broken() -> None:
    runs = [run("r1", read("D", 10)), run("r3", read("D", 30, since=20, previous="r2"))]
    with pytest.raises(BrokenChain, match=r"^dataset:D: run r3 continues run r2, which is not in root"):
        RunIndex(runs, "root").restore_chain("D")
    with pytest.raises(BrokenChain, match="this run continues run r2, which is not in root"):
        RunIndex(runs, "root").chain_to("D", Scope(), "r2")


def old_manifest(run_id: str, version: int, since: int | None, **options: Any) -> Manifest:
    """A manifest as versions before the chain fields wrote it."""
    raw = {
        "run_id": run_id, "started_at": run_id, "api_url": "http://x", "format": "jsonl",
        "options": {"objects": "datasets", "shape": "spans", "filter": None, "incremental": True, **options},
        "objects": [{"object_type": "dataset", "object_id": "D", "snapshot_version": str(version),
                     "since_version": None if since is None else str(since), "rows_written": 1,
                     "files": [{"path": f"D/{run_id}.jsonl", "rows": 1, "bytes": 1, "sha256": "0"}]}],
    }  # fmt: skip
    return Manifest.from_json(orjson.dumps(raw))


def test_manifests_from_before_the_chain_fields_are_chained_by_order() -> None:
    runs = [old_manifest("r1", 10, None), old_manifest("r2", 20, 10), old_manifest("r3", 30, None),
            old_manifest("r4", 40, 30), old_manifest("r5", 45, None, filter="x = 1")]  # fmt: skip
    first = runs[0].objects[0]
    assert first.complete is None and first.previous_run is None and first.tombstones is None
    assert is_complete(runs[0], first) and not is_complete(runs[1], runs[1].objects[0])
    assert not is_complete(runs[4], runs[4].objects[0])  # a filtered read is no complete id set
    assert [e.run_id for e in RunIndex(runs, "root").restore_chain("D")] == ["r3", "r4"]
    with pytest.raises(BrokenChain, match="run r2 holds only rows written after an earlier run"):
        RunIndex(runs[1:2], "root").restore_chain("D")


def test_the_chain_fields_survive_a_round_trip() -> None:
    obj = read("D", 20, since=10, previous="r1", tombstones=FileInfo("_tombstones/t.jsonl", 2, 30, "ab" * 32))
    manifest = run("r2", obj)
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_a_read_that_found_the_object_gone_is_left_out(tmp_path: Path) -> None:
    # The dataset was deleted at the source while r2 read it: r2 holds nothing of it.
    gone = ObjectManifest("dataset", "D", name="D", since_version="10", previous_run="r1", gone=True)
    runs = [run("r1", read("D", 10), read("E", 11)), run("r2", gone, read("E", 20, since=11, previous="r1"))]
    index = RunIndex(runs, "root")
    assert [e.run_id for e in index.restore_chain("D")] == ["r1"]
    assert [e.run_id for e in index.restore_chain("E")] == ["r1", "r2"]
    storage = LocalStorage(str(tmp_path))
    for manifest in runs:
        write_manifest(storage, manifest)
    assert [obj.id for obj in find_inputs(storage, "_manifests/r2.json")] == ["E"]
