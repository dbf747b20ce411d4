"""Pure units of the import stage: transform, batcher, prefix checkpoint, destinations, inputs."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.common.checkpoint import PrefixTracker
from pipeline.common.errors import UsageError
from pipeline.common.rows import READ_ONLY_FIELDS
from pipeline.common.selection import Selector, config_selection, parse_selection
from pipeline.load.batcher import ENVELOPE_BYTES, Batcher, Item, request_body
from pipeline.load.destinations import creation_body, experiments_in_dependency_order
from pipeline.load.transform import SourceObject, to_event
from pipeline.sources.inputs import InputObject, select_inputs, split_input

ROW = {
    "id": "r1", "_xact_id": "1000", "_pagination_key": "p", "org_id": "o", "project_id": "P",
    "dataset_id": "D", "created": "2024-01-01T00:00:00Z", "is_root": True, "span_id": "s",
    "root_span_id": "s", "span_parents": None, "input": {"q": 1}, "expected": "x",
    "metadata": {"user": "u1"}, "_object_delete": True, "comments": [], "audit_data": [],
}  # fmt: skip


def test_transform_drops_server_fields_keeps_identity_and_sets_origin() -> None:
    event = to_event(ROW, SourceObject("dataset", "D"))
    assert not (READ_ONLY_FIELDS & event.keys())
    assert "_object_delete" not in event and "project_id" not in event and "dataset_id" not in event
    assert {k: event[k] for k in ("id", "span_id", "root_span_id", "created")} == {
        "id": "r1", "span_id": "s", "root_span_id": "s", "created": "2024-01-01T00:00:00Z"
    }  # fmt: skip
    assert event["origin"] == {
        "object_type": "dataset", "object_id": "D", "id": "r1", "_xact_id": "1000", "created": "2024-01-01T00:00:00Z"
    }  # fmt: skip
    assert ROW["_object_delete"] is True  # the input row is untouched


def test_transform_keeps_an_existing_origin_and_finds_the_object_from_the_row() -> None:
    origin = {"object_type": "experiment", "object_id": "E", "id": "x"}
    assert to_event({**ROW, "origin": origin}, SourceObject("dataset"))["origin"] == origin
    assert (
        to_event({"id": "a", "project_id": "P"}, SourceObject("project_logs"))["origin"]["object_id"] == "P"
    )


def test_an_origin_naming_a_copied_object_names_the_copy_and_any_other_stays() -> None:
    copies = {"D1": "D2"}
    origin = {"object_type": "dataset", "object_id": "D1", "id": "r", "_xact_id": "5"}
    event = to_event({**ROW, "origin": origin}, SourceObject("experiment", "E", copies))
    assert event["origin"] == {**origin, "object_id": "D2"}
    for odd in (["D1"], {"x": 1}, 7, None, "elsewhere"):  # left for the server to judge, as before
        kept = {"object_type": "dataset", "object_id": odd, "id": "r"}
        assert to_event({**ROW, "origin": kept}, SourceObject("experiment", "E", copies))["origin"] == kept


def _items(sizes: list[int]) -> list[Item]:
    return [
        Item(orjson.dumps({"id": str(i), "p": "x" * n}), str(i), f"f:{i}", ("f", i))
        for i, n in enumerate(sizes)
    ]


@given(st.lists(st.integers(0, 300), max_size=60), st.integers(1, 7), st.integers(40, 900))
def test_batches_respect_both_bounds_and_keep_every_event_in_order(
    sizes: list[int], rows: int, limit: int
) -> None:
    items = _items(sizes)
    batcher = Batcher("/v1/dataset/D", max_rows=rows, max_bytes=limit)
    batches = [b for item in items for b in batcher.add(item)] + batcher.flush()
    assert [b.seq for b in batches] == list(range(len(batches)))
    assert [i for b in batches for i in b.items] == items
    for batch in batches:
        body = request_body(batch.items)
        assert len(body) == batch.nbytes
        assert [e["id"] for e in orjson.loads(body)["events"]] == [i.id for i in batch.items]
        if batch.oversize:
            assert len(batch.items) == 1 and len(body) > limit
        else:
            assert len(batch.items) <= rows and len(body) <= limit
        assert batch.mark == batch.items[-1].mark


def test_an_oversize_event_gets_its_own_batch_between_its_neighbours() -> None:
    small, big = _items([1, 500, 1])[0], _items([1, 500, 1])[1]
    batcher = Batcher("/p", max_rows=10, max_bytes=ENVELOPE_BYTES + 100)
    first = batcher.add(small)
    out = batcher.add(big)
    assert first == [] and [b.oversize for b in out] == [False, True] and out[1].items == [big]


@given(st.integers(1, 40), st.randoms())
def test_checkpoint_advances_only_over_the_contiguous_prefix(count: int, rnd: random.Random) -> None:
    tracker = PrefixTracker()
    for seq in range(count):
        tracker.register(seq, None if seq % 3 == 1 else f"m{seq}", rows=2)
    order = list(range(count))
    rnd.shuffle(order)
    done: set[int] = set()
    for seq in order:
        done.add(seq)
        _advanced, mark = tracker.finish(seq)
        prefix = 0
        while prefix in done:
            prefix += 1
        assert tracker.applied == prefix and tracker.rows == 2 * prefix
        if mark is not None:
            assert mark == f"m{max(s for s in range(prefix) if s % 3 != 1)}"
    assert tracker.pending == 0


def test_experiment_creation_remaps_references_and_drops_unknown_ones() -> None:
    info: dict[str, Any] = {"id": "e2", "base_exp_id": "e1", "dataset_id": "d1", "dataset_version": "9",
                            "description": "why", "metadata": {"a": 1}}  # fmt: skip
    body = creation_body("experiment", "exp", "P2", info, {"e1": "E1", "d1": "D1"})
    assert body == {"project_id": "P2", "name": "exp", "description": "why", "metadata": {"a": 1},
                    "base_exp_id": "E1", "dataset_id": "D1"}  # fmt: skip
    assert creation_body("experiment", "exp", "P2", info, {}) == {
        "project_id": "P2", "name": "exp", "description": "why", "metadata": {"a": 1}
    }  # fmt: skip
    ordered = experiments_in_dependency_order(
        [{"id": "c", "base_exp_id": "b"}, {"id": "b", "base_exp_id": "a"}, {"id": "a"}]
    )
    assert [e["id"] for e in ordered] == ["a", "b", "c"]


def test_split_input() -> None:
    assert split_input("out/_manifests/R.json") == ("out", "_manifests/R.json")
    assert split_input("out/x/part-00000.parquet") == ("out/x", "part-00000.parquet")
    assert split_input("s3://b/out/") == ("s3://b/out", "")
    # a root's Delta table: opened at the root, whose manifests name the table's objects
    assert split_input("s3://b/out/delta/dataset/") == ("s3://b/out", "delta/dataset")
    assert split_input("delta/project_logs") == (".", "delta/project_logs")
    assert split_input("out/delta/other") == ("out/delta/other", "")


def test_objects_selection_is_parsed_once_for_projects_and_files() -> None:
    assert parse_selection(" logs, datasets,,experiment:e 1,dataset:d") == [
        Selector("project_logs"), Selector("dataset"), Selector("experiment", "e 1"), Selector("dataset", "d")
    ]  # fmt: skip
    with pytest.raises(UsageError, match=r"--objects: cannot understand 'dataset:' \(expected logs, "):
        parse_selection("logs,dataset:")
    # a name holding a comma, or blanks at its ends, is a JSON string
    assert parse_selection('dataset:"a,b", dataset:" padded ",experiment:"say \\"hi\\"",logs') == [
        Selector("dataset", "a,b"), Selector("dataset", " padded "), Selector("experiment", 'say "hi"'),
        Selector("project_logs"),
    ]  # fmt: skip
    assert config_selection('dataset:"x,prompts"') == []  # not a kind named inside a name
    # a quote after another colon of the name is a character of it
    assert parse_selection('dataset:a:"b,logs') == [Selector("dataset", 'a:"b'), Selector("project_logs")]
    for bad in ('dataset:"open', 'dataset:"a"b'):
        with pytest.raises(UsageError, match="--objects: "):
            parse_selection(bad)
    logs = InputObject("project_logs", "P", "proj")
    d1, d2 = InputObject("dataset", "D1", "one"), InputObject("dataset", "D2", "two")
    exp = InputObject("experiment", "E1", "exp")
    inputs = [logs, d1, d2, exp]
    assert select_inputs(inputs, None) == inputs
    assert select_inputs(inputs, "dataset:D2,datasets,logs") == [d2, d1, logs]
    assert select_inputs(inputs, "experiments,experiment:exp") == [exp]
    with pytest.raises(UsageError, match="the input holds no experiment named 'two'"):
        select_inputs(inputs, "experiment:two")
