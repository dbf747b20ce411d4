"""State records and their store: round trips, files from earlier versions, corrupt or foreign
files refused with one line naming the file, no credentials ever stored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.common.errors import UsageError
from pipeline.common.jobstate import JobState
from pipeline.common.manifest import FileInfo
from pipeline.common.state import (
    ExportState,
    FilePosition,
    LoadState,
    ObjectProgress,
    ObjectState,
    RangeState,
    RunState,
    StateStore,
    Watermark,
    export_store,
)
from pipeline.common.storage import open_storage

# -- strategies -----------------------------------------------------------------------------

texts = st.text(max_size=12)
maybe_texts = st.none() | texts
counts = st.integers(min_value=0, max_value=2**63 - 1)
#: Keys spelled from letters that cannot make a credential's name (the store refuses those).
keys = st.text(alphabet="abcdxz_0", min_size=1, max_size=8)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(keys, json_values, max_size=4)

file_infos = st.builds(FileInfo, path=texts, rows=counts, bytes=counts, sha256=texts)
ranges = st.builds(
    RangeState,
    index=counts,
    low=maybe_texts,
    high=maybe_texts,
    cursor=maybe_texts,
    next_part=counts,
    rows=counts,
    done=st.booleans(),
    files=st.lists(file_infos, max_size=3),
)
objects = st.builds(
    ObjectState,
    object_type=texts,
    id=texts,
    name=texts,
    project_id=texts,
    version=maybe_texts,
    expected_rows=counts,
    since=maybe_texts,
    ranges=st.lists(ranges, max_size=3),
    pinned=st.booleans(),
    info=json_objects,
)
runs = st.builds(
    RunState, run_id=texts, started_at=texts, options=json_objects, objects=st.lists(objects, max_size=3)
)
export_states = st.builds(
    ExportState,
    project_id=texts,
    watermarks=st.dictionaries(texts, st.builds(Watermark, version=texts, run_id=texts), max_size=3),
    run=st.none() | runs,
)
marks = st.none() | texts | st.builds(FilePosition, path=texts, position=st.integers(-1, 2**40))
progresses = st.builds(
    ObjectProgress,
    destination=texts,
    rows=counts,
    mark=marks,
    skipped=counts,
    version=maybe_texts,
    expected=st.none() | counts,
)
load_states = st.builds(
    LoadState,
    identity=st.dictionaries(keys, maybe_texts, max_size=4),
    objects=st.dictionaries(texts, progresses, max_size=4),
)


def through_json(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` as the store writes it and reads it back."""
    return orjson.loads(orjson.dumps(document, option=orjson.OPT_SORT_KEYS))


@given(export_states)
def test_export_state_round_trips(state: ExportState) -> None:
    assert ExportState.from_json(through_json(state.to_json())) == state


@given(load_states)
def test_load_state_round_trips(state: LoadState) -> None:
    assert LoadState.from_json(through_json(state.to_json())) == state


@given(load_states)
def test_to_json_is_a_snapshot(state: LoadState) -> None:
    """A save copies the record, so changes made while the write runs are not half in it."""
    document = state.to_json()
    before = orjson.dumps(document)
    for progress in state.objects.values():
        progress.rows += 1
        progress.mark = FilePosition("later", 1)
    assert orjson.dumps(document) == before


# -- files written by earlier versions still resume -----------------------------------------

#: An export state file as written before the records moved here (a run part way through).
EXPORT_FILE = b"""{
  "format": 1,
  "project_id": "p1",
  "run": {
    "objects": [{
      "expected_rows": 9, "id": "d1", "info": {"description": "why", "metadata": {"a": 1}},
      "name": "golden", "object_type": "dataset", "pinned": false, "project_id": "p1",
      "ranges": [
        {"cursor": "c2", "done": false,
         "files": [{"bytes": 1234, "path": "object_type=dataset/object_id=d1/run=R1/r00-part-00000.parquet",
                    "rows": 7, "sha256": "ab"}],
         "high": "1000", "index": 0, "low": null, "next_part": 1, "rows": 7},
        {"cursor": null, "done": false, "files": [], "high": null, "index": 1, "low": "1000",
         "next_part": 0, "rows": 0}
      ],
      "since": "900", "version": "1001"
    }],
    "options": {"format": "parquet", "incremental": true},
    "run_id": "R1",
    "started_at": "2024-01-01T00:00:00+00:00"
  },
  "watermarks": {"[\\"dataset\\",\\"d1\\",\\"spans\\",\\"\\"]": {"run_id": "R0", "version": "900"}}
}"""

#: An import's and a migration's state files as written before the records moved here.
IMPORT_FILE = b"""{"format": 1, "identity": {"input": "/backup", "objects": null},
  "objects": {
    "dataset:d1": {"destination": "D1", "rows": 12, "skipped": 1, "applied_this_run": 12,
                   "mark": ["object_type=dataset/object_id=d1/run=R1/r00-part-00000.jsonl.gz", 11]},
    "dataset:d2": {"destination": "D2", "rows": 0, "mark": null}
  }}"""
MIGRATE_FILE = b"""{"format": 1, "identity": {"source_project": "p1"},
  "objects": {"project_logs:p1": {"destination": "P2", "version": "1001", "expected": 50,
                                  "rows": 20, "mark": "cursor-abc", "applied_this_run": 20,
                                  "skipped": 0}}}"""


def test_an_export_state_file_from_before_loads_and_saves_the_same(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("_state/export-p1.json", EXPORT_FILE)
    store = export_store(storage, "p1")
    state = store.load()
    assert state is not None and state.run is not None and state.run.incremental
    mark = state.watermark('["dataset","d1","spans",""]')
    assert mark is not None and (mark.version, mark.key) == ("900", None) and state.watermark("other") is None
    obj = state.run.objects[0]
    assert (obj.pinned, obj.rows, obj.key) == (False, 7, "dataset:d1")
    assert (obj.since, obj.since_field, obj.newest_key) == ("900", "_xact_id", None)
    assert [r.by for r in obj.ranges] == ["_xact_id", "_xact_id"]
    first, second = obj.ranges
    assert first.files == [
        FileInfo("object_type=dataset/object_id=d1/run=R1/r00-part-00000.parquet", 7, 1234, "ab")
    ]
    assert (first.cursor, first.next_part, second.cursor, second.low) == ("c2", 1, None, "1000")
    store.save(state)
    saved = orjson.loads(storage.read_bytes("_state/export-p1.json"))
    old = orjson.loads(EXPORT_FILE)
    # what the file held is kept; fields added since are written with their defaults
    assert saved["watermarks"] == {k: {**w, "key": None} for k, w in old["watermarks"].items()}
    (saved_obj,), (old_obj,) = saved["run"]["objects"], old["run"]["objects"]
    assert {k: saved_obj[k] for k in old_obj if k != "ranges"} == {
        k: v for k, v in old_obj.items() if k != "ranges"
    }
    assert [
        {k: r[k] for k in o} for r, o in zip(saved_obj["ranges"], old_obj["ranges"], strict=True)
    ] == old_obj["ranges"]
    assert store.load() == state


def test_load_state_files_from_before_load(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("import.json", IMPORT_FILE)
    storage.write_bytes("migrate.json", MIGRATE_FILE)
    imported = StateStore(storage, "import.json", LoadState).load()
    migrated = StateStore(storage, "migrate.json", LoadState).load()
    assert imported == LoadState(
        identity={"input": "/backup", "objects": None},
        objects={
            "dataset:d1": ObjectProgress(
                "D1",
                12,
                FilePosition("object_type=dataset/object_id=d1/run=R1/r00-part-00000.jsonl.gz", 11),
                1,
            ),
            "dataset:d2": ObjectProgress("D2"),
        },
    )
    assert imported.objects["dataset:d1"].cursor is None
    assert migrated == LoadState(
        identity={"source_project": "p1"},
        objects={"project_logs:p1": ObjectProgress("P2", 20, "cursor-abc", 0, "1001", 50)},
    )
    progress = migrated.objects["project_logs:p1"]
    assert (progress.cursor, progress.position) == ("cursor-abc", None)


# -- the store ------------------------------------------------------------------------------


def test_save_and_load(tmp_path: Path) -> None:
    store = StateStore(open_storage(str(tmp_path)), "state/export.json", ExportState)
    assert store.load() is None
    state = ExportState("p1", {"k": Watermark(str(2**63 + 5), "R1")})
    store.save(state)
    assert store.load() == state
    text = (tmp_path / "state" / "export.json").read_bytes()
    assert text.index(b'"format"') < text.index(b'"project_id"') < text.index(b'"watermarks"')  # sorted
    store.save(ExportState("p1"))
    assert store.load() == ExportState("p1")
    assert os.listdir(tmp_path / "state") == ["export.json"]
    store.delete()
    store.delete()
    assert store.load() is None and os.listdir(tmp_path / "state") == []


def test_save_async_writes_the_state_as_it_was_when_called(tmp_path: Path) -> None:
    store = StateStore(open_storage(str(tmp_path)), "s.json", LoadState)
    state = LoadState({"input": "x"}, {"a": ObjectProgress("A", 4, FilePosition("f", 2))})

    async def change_during_write() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.save_async, state)
            await anyio.sleep(0)
            state.objects["a"].rows = 5

    anyio.run(change_during_write)
    assert store.load() == LoadState({"input": "x"}, {"a": ObjectProgress("A", 4, FilePosition("f", 2))})


#: An export state with an unfinished run (``%`` takes its last fields), and one object of it
#: with one range (``%`` takes the range's last fields): files edited by hand.
_RUN = b'{"format": 1, "project_id": "p", "run": {"run_id": "r", "started_at": "t", "options": {}, %s}}'
_OBJECT = (
    b'"objects": [{"object_type": "dataset", "id": "d", "name": "n", "project_id": "p", "version": "1", '
    b'"expected_rows": 1, "since": null, "ranges": [{"index": 0, "low": null, "high": null, %s}]}]'
)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"objects": ', "corrupt state file ("),
        (b"[1, 2]", "corrupt state file (expected a JSON object)"),
        (b'{"format": 1}', "corrupt state file (no 'project_id')"),
        (b'{"format": 1, "project_id": "p", "run": {"run_id": 3}}', "corrupt state file (no 'started_at')"),
        (b'{"format": 1, "project_id": "p", "watermarks": {"k": {"version": "1"}}}', "corrupt state file ("),
        (b'{"format": 2, "project_id": "p"}', "state file format 2, but this btpipe reads format 1"),
        (b'{"project_id": "p"}', "state file format None, but this btpipe reads format 1"),
        (b'{"format": 1, "project_id": "p", "watermarks": [1]}', "corrupt state file ("),
        (_RUN % b'"objects": {}', "corrupt state file (Expected `array`, got `object` - at `$.run.objects`)"),
        (
            _RUN % _OBJECT % b'"rows": "many"',
            "corrupt state file (Expected `int`, got `str` - at `$.run.objects[0].ranges[0].rows`)",
        ),
    ],
)
def test_corrupt_or_foreign_state_names_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("s.json", content)
    with pytest.raises(UsageError) as info:
        StateStore(storage, "s.json", ExportState).load()
    assert str(info.value).startswith(f"{tmp_path}/s.json: {reason}")
    assert "\n" not in str(info.value)


def test_load_state_fields_of_another_type_are_corrupt(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes(
        "s.json", b'{"format": 1, "identity": {}, "objects": {"a": {"destination": "A", "rows": "4"}}}'
    )
    with pytest.raises(
        UsageError,
        match=r"s\.json: corrupt state file \(Expected `int`, got `str` - at `\$\.objects\[\.\.\.\]\.rows`\)",
    ):
        StateStore(storage, "s.json", LoadState).load()


def test_a_mark_that_is_neither_position_nor_cursor_is_corrupt(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes(
        "s.json", b'{"format": 1, "identity": {}, "objects": {"a": {"destination": "A", "mark": 3}}}'
    )
    with pytest.raises(UsageError, match=r"s\.json: corrupt state file \(mark 3 is neither"):
        StateStore(storage, "s.json", LoadState).load()


@pytest.mark.parametrize("key", ["api_key", "API-KEY", "secret", "auth_token", "password"])
def test_refuses_to_store_credentials(tmp_path: Path, key: str) -> None:
    store = StateStore(open_storage(str(tmp_path)), "s.json", LoadState)
    with pytest.raises(ValueError, match="must not store credentials"):
        store.save(LoadState({"source": "x", key: "x"}))
    assert store.load() is None
    export = StateStore(open_storage(str(tmp_path)), "e.json", ExportState)
    obj = ObjectState("dataset", "d", "n", "p", None, 0, None, [], info={"metadata": [{key: "x"}]})
    with pytest.raises(ValueError, match=r"key 'run\.objects\[0\]\.info\.metadata\[0\]"):
        export.save(ExportState("p", run=RunState("R", "t", {}, [obj])))
    store.save(LoadState({"prompt_tokens": "3", "cursor": "c"}))  # ordinary names are fine


# -- a load job's state file ----------------------------------------------------------------


def test_job_state_resumes_only_its_own_job(tmp_path: Path) -> None:
    identity = {"input": "/backup", "project": "dest"}

    async def scenario() -> None:
        job = JobState(str(tmp_path), "import", identity)
        assert not await job.load(restart=False)
        job.objects["dataset:d1"] = ObjectProgress("D1", 5, FilePosition("f.jsonl", 4))
        await job.save()
        again = JobState(str(tmp_path), "import", identity)
        assert await again.load(restart=True) is False and again.objects == {}
        assert await again.load(restart=False)
        assert again.objects == {"dataset:d1": ObjectProgress("D1", 5, FilePosition("f.jsonl", 4))}
        # the file name comes from the identity: another job has another file
        other = JobState(str(tmp_path), "import", {**identity, "project": "else"})
        assert other.location != job.location and not await other.load(restart=False)
        # a file that somehow holds another job's identity is refused
        foreign = StateStore(open_storage(str(tmp_path)), os.path.basename(job.location), LoadState)
        foreign.save(LoadState({"input": "elsewhere"}))
        with pytest.raises(UsageError, match=r"does not belong to this job; pass --restart$"):
            await JobState(str(tmp_path), "import", identity).load(restart=False)
        (tmp_path / os.path.basename(job.location)).write_bytes(b'{"format": 9, "identity": {}}')
        with pytest.raises(UsageError, match=r"format 9, but this btpipe reads format 1; pass --restart$"):
            await JobState(str(tmp_path), "import", identity).load(restart=False)
        await job.clear()
        await job.clear()
        assert os.listdir(tmp_path) == []

    anyio.run(scenario)
