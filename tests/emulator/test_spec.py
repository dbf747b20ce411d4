"""The emulator's row tables come from the OpenAPI spec it ships, not from the client.

The expected tables here are read straight from the spec JSON by schema name, written apart
from ``pipeline.emulator.spec`` (which walks the insert and fetch operations instead), so a
mistake in the derivation cannot agree with itself.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

import pipeline.emulator
from pipeline.emulator import spec, validate
from pipeline.querylang.ast import OBJECT_TYPES, ObjectType, from_object
from tests.emulator.conftest import Api

SHIPPED = Path(pipeline.emulator.__file__).with_name("openapi.json")
#: SHA-256 of the reference Braintrust OpenAPI spec the emulator ships; a new spec changes it on purpose.
REFERENCE_SHA256 = "a9fd391568b7dcd26e02db4d28208ae2470712b1c07359f8dbb43ac7e8133e3b"
SCHEMAS = {
    "project_logs": ("InsertProjectLogsEvent", "ProjectLogsEvent"),
    "dataset": ("InsertDatasetEvent", "DatasetEvent"),
    "experiment": ("InsertExperimentEvent", "ExperimentEvent"),
}
KEYS = {
    "project_logs": ("project_id", "log_id"),
    "dataset": ("project_id", "dataset_id"),
    "experiment": ("project_id", "experiment_id"),
}
CONTROL = {"_object_delete", "_is_merge", "_merge_paths", "_array_delete", "_parent_id"}
#: Read fields the emulator never fills: it has no comments, audit log, async scoring or classifiers.
NEVER_STAMPED = {"comments", "audit_data", "_async_scoring_state", "classifications"}
#: A valid value for every data field some insert event schema lists.
DATA_VALUES: dict[str, Any] = {
    "input": {"q": 1}, "output": [1, "two"], "expected": "three", "error": "boom",
    "scores": {"accuracy": 0.5}, "metadata": {"model": "m", "k": [1]}, "tags": ["t"],
    "metrics": {"start": 1.5, "tokens": 3}, "context": {"caller_lineno": 7},
    "span_attributes": {"name": "step", "type": "task"},
    "origin": {"object_type": "dataset", "object_id": str(uuid.uuid4()), "id": "d1"},
    "facets": {"topic": "x"},
}  # fmt: skip


def raw_spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SHIPPED.read_bytes())
    return loaded


def schema(name: str) -> dict[str, Any]:
    found: dict[str, Any] = raw_spec()["components"]["schemas"][name]
    return found


def test_shipped_spec_is_the_reference_and_is_package_data() -> None:
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == REFERENCE_SHA256
    assert spec.spec() == raw_spec()
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "emulator/openapi.json" in pyproject["tool"]["setuptools"]["package-data"]["pipeline"]


@pytest.mark.parametrize("object_type", OBJECT_TYPES)
def test_tables_are_the_specs(object_type: ObjectType) -> None:
    insert_name, read_name = SCHEMAS[object_type]
    insert = set(schema(insert_name)["properties"])
    read = schema(read_name)
    fields = spec.row_fields(object_type)
    assert fields.insert == insert
    assert fields.control == CONTROL and insert >= CONTROL and not CONTROL & set(read["properties"])
    assert fields.read == tuple(read["properties"])
    assert fields.server == set(read["properties"]) - insert
    assert fields.keys == KEYS[object_type] and set(fields.keys) <= set(read["required"])
    assert f"/v1/{object_type}/{{{fields.object_id_field}}}/insert" in raw_spec()["paths"]
    assert fields.object_id_field == ("project_id" if object_type == "project_logs" else f"{object_type}_id")
    if object_type == "project_logs":
        assert read["properties"]["log_id"]["enum"] == ["g"] and fields.fixed == {"log_id": "g"}
    else:
        assert fields.fixed == {}
    assert set(validate.event_checks(object_type)) == insert


def test_enums_and_key_union_are_the_specs() -> None:
    assert spec.insert_enum("project_logs", "span_attributes", "type") == {
        v for v in schema("SpanType")["enum"] if v is not None
    }
    origin_types = schema("ObjectReferenceNullish")["properties"]["object_type"]["enum"]
    assert spec.insert_enum("dataset", "origin", "object_type") == set(origin_types)
    assert spec.all_key_fields() == {"project_id", "log_id", "dataset_id", "experiment_id"}


async def _objects(api: Api) -> dict[str, str]:
    pid = (await api.project())["id"]
    ds = await api.dataset(pid)
    exp = await api.ok("POST", "/v1/experiment", {"project_id": pid, "name": "e"})
    return {"project_logs": pid, "dataset": ds["id"], "experiment": exp["id"]}


async def test_rows_carry_exactly_the_fields_the_spec_lists(api: Api) -> None:
    ids = await _objects(api)
    for object_type, object_id in ids.items():
        insert_name, read_name = SCHEMAS[object_type]
        data = {k: v for k, v in DATA_VALUES.items() if k in schema(insert_name)["properties"]}
        await api.insert(object_type, object_id, [{"id": "full", **data}])
        star = {"from": from_object(object_type, object_id), "select": [{"op": "star"}]}
        (row,) = await api.all_rows(star)
        (fetched,) = (await api.ok("POST", f"/v1/{object_type}/{object_id}/fetch", {}))["events"]
        assert fetched == row
        assert set(row) == set(schema(read_name)["properties"]) - NEVER_STAMPED, object_type
        assert {k: row[k] for k in data} == data
        assert [row[k] for k in KEYS[object_type]] == (
            [object_id, "g"] if object_type == "project_logs" else [ids["project_logs"], object_id]
        )


async def test_dataset_rows_take_span_parents_but_do_not_show_them(api: Api) -> None:
    ds = (await _objects(api))["dataset"]
    await api.insert("dataset", ds, [{"id": "c", "span_id": "c", "root_span_id": "r", "span_parents": ["r"]}])
    (row,) = await api.all_rows({"from": from_object("dataset", ds), "select": [{"op": "star"}]})
    assert "span_parents" not in row and row["is_root"] is False and row["root_span_id"] == "r"


async def test_fields_the_spec_does_not_list_are_accepted_and_not_stored(api: Api) -> None:
    """The spec's insert events allow properties they do not list (no ``additionalProperties:
    false``), and the generated REST client sends some (an experiment event's
    ``dataset_record_id``): a REST insert takes them and stores only the fields it knows."""
    ids = await _objects(api)
    unlisted = {
        "dataset": ["output", "error", "scores", "metrics", "context", "span_attributes", "dataset_id"],
        "experiment": ["dataset_record_id", "log_id", "experiment_id"],
        "project_logs": ["org_id", "is_root", "_xact_id", "comments", "classifications", "bogus"],
    }
    for object_type, names in unlisted.items():
        path = f"/v1/{object_type}/{ids[object_type]}/insert"
        event = {"id": "x", "input": 1, **{name: "r0" for name in names}}
        assert (await api.ok("POST", path, {"events": [event]}))["row_ids"] == ["x"]
    await api.ok("POST", "/v1/insert", {"dataset": {ids["dataset"]: {"events": [{"id": "y", "output": 1}]}}})
    for object_type, object_id in ids.items():
        rows = await api.all_rows({"from": from_object(object_type, object_id), "select": [{"op": "star"}]})
        for row in rows:
            assert "bogus" not in row and "r0" not in row.values(), (object_type, row)
            assert object_type != "dataset" or "output" not in row
    data = await api.ok("POST", f"/v1/dataset/{ids['dataset']}/fetch", {})
    assert {e["id"] for e in data["events"]} == {"x", "y"}


async def test_logs3_drops_object_keys_and_other_unlisted_fields(api: Api) -> None:
    """The SDKs' rows carry fields the spec's events do not list (the JavaScript SDK forwards
    ``datasetRecordId``); the real service takes them, so they are accepted and not stored."""
    ids = await _objects(api)
    pid, exp = ids["project_logs"], ids["experiment"]
    rows = [
        {"id": "k", "project_id": pid, "log_id": "g", "input": 1},
        {"id": "e", "experiment_id": exp, "project_id": pid, "output": 2, "_audit_source": "sdk"},
    ]
    assert (await api.ok("POST", "/logs3", {"rows": rows, "api_version": 2}))["row_ids"] == ["k", "e"]
    (row,) = await api.all_rows({"from": from_object("experiment", exp), "select": [{"op": "star"}]})
    assert row["output"] == 2 and row["project_id"] == pid and "_audit_source" not in row
    extra = {"id": "o", "project_id": pid, "log_id": "g", "org_id": "x", "datasetRecordId": "d", "input": 3}
    assert (await api.ok("POST", "/logs3", {"rows": [extra], "api_version": 2}))["row_ids"] == ["o"]
    logged = await api.all_rows({"from": from_object("project_logs", pid), "select": [{"op": "star"}]})
    (row,) = [r for r in logged if r["id"] == "o"]
    assert row["input"] == 3 and row["org_id"] != "x" and "datasetRecordId" not in row
    wrong = {"rows": [{"id": "w", "project_id": pid, "log_id": "g", "tags": "one"}], "api_version": 2}
    reply = await api.call("POST", "/logs3", wrong)
    assert reply.status == 400 and reply.text == "rows[0].tags: expected array, got string"


async def test_logs3_comment_rows_attach_to_the_row_they_name(api: Api) -> None:
    """``log_feedback``'s comment row (``{id, created, origin: {id}, comment: {text}, ...}``)
    joins the ``comments`` of the row it names, written in the same batch or before, its
    ``created`` spelled as a row's is; one about a row the object does not hold is accepted
    with nothing to show on."""
    pid = (await _objects(api))["project_logs"]
    keys = {"project_id": pid, "log_id": "g"}
    said = {"id": "c1", "created": "2026-01-01T00:00:00+00:00", "origin": {"id": "r"}, "comment": {"text": "hi"},
            "_audit_source": "app", "_audit_metadata": {"who": "me"}, **keys}  # fmt: skip
    lost = {"id": "c2", "origin": {"id": "missing"}, "comment": {"text": "lost"}, **keys}
    body = {"rows": [{"id": "r", "input": 1, **keys}, said, lost], "api_version": 2}
    assert (await api.ok("POST", "/logs3", body))["row_ids"] == ["r", "c1", "c2"]
    again = {
        "rows": [{"id": "c3", "origin": {"id": "r"}, "comment": {"text": "again"}, **keys}],
        "api_version": 2,
    }
    await api.ok("POST", "/logs3", again)
    (row,) = await api.all_rows({"from": from_object("project_logs", pid), "select": [{"op": "star"}]})
    assert (row["id"], row["input"]) == ("r", 1)
    first, second = row["comments"]
    assert {k: v for k, v in first.items() if k != "user_id"} == {
        "id": "c1", "created": "2026-01-01T00:00:00.000Z", "origin": {"id": "r"}, "comment": {"text": "hi"},
        "source": "app", "metadata": {"who": "me"},
    }  # fmt: skip
    assert (second["id"], second["comment"], second["source"]) == ("c3", {"text": "again"}, "external")
    bad = {"rows": [{"origin": {"id": "r"}, "comment": "hi", **keys}], "api_version": 2}
    reply = await api.call("POST", "/logs3", bad)
    assert reply.status == 400 and reply.text == "rows[0].comment: expected {text: string}"


async def test_span_types_are_the_specs_and_the_sdks(api: Api) -> None:
    """The spec's ``SpanType``, and the three the SDKs' generated one adds (``logger.info()``
    writes ``log``)."""
    pid = (await _objects(api))["project_logs"]
    types = ["classifier", "log", "decision", "question"]
    await api.insert("project_logs", pid, [{"id": t, "span_attributes": {"type": t}} for t in types])
    reply = await api.call(
        "POST", f"/v1/project_logs/{pid}/insert", {"events": [{"span_attributes": {"type": "nope"}}]}
    )
    assert reply.status == 400 and "events[0].span_attributes.type: expected one of" in reply.text
    assert "classifier" in reply.text and "review" in reply.text
