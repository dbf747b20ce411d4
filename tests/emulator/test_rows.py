"""Inserts (all forms), upsert/merge/delete semantics, validation, limits, legacy fetch."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.emulator.app import DEFAULT_MAX_REQUEST_BYTES
from pipeline.querylang.ast import from_object
from tests.emulator.conftest import Api


def star(object_type: str, object_id: str) -> dict[str, Any]:
    return {"from": from_object(object_type, object_id), "select": [{"op": "star"}]}


async def rows_by_id(api: Api, object_type: str, object_id: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in await api.all_rows(star(object_type, object_id))}


async def test_insert_returns_ids_and_rows_carry_system_fields(api: Api) -> None:
    project = await api.project()
    pid = project["id"]
    ids = await api.insert(
        "project_logs", pid, [{"id": "a", "input": "hi", "scores": {"s": 0.5}}, {"input": 2}]
    )
    assert ids[0] == "a" and len(ids) == 2
    rows = await rows_by_id(api, "project_logs", pid)
    row = rows["a"]
    assert row["log_id"] == "g" and row["project_id"] == pid and row["org_id"] == project["org_id"]
    assert row["is_root"] is True and row["span_parents"] is None and row["root_span_id"] == row["span_id"]
    assert row["_xact_id"].isdigit() and row["_pagination_key"].startswith("p")
    assert row["created"].endswith("Z") and row["input"] == "hi" and row["scores"] == {"s": 0.5}
    assert rows[ids[1]]["_xact_id"] == row["_xact_id"]  # one request, one transaction


async def test_same_id_replaces_and_collapses(api: Api) -> None:
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [{"id": "r", "input": 1, "created": "2024-05-01T00:00:00Z"}])
    await api.insert("project_logs", pid, [{"id": "r", "input": 2}, {"id": "r", "output": 3}])
    rows = await api.all_rows(star("project_logs", pid))
    assert len(rows) == 1
    assert "input" not in rows[0] and rows[0]["output"] == 3


async def test_merge_and_merge_paths(api: Api) -> None:
    pid = (await api.project())["id"]
    base = {"id": "m", "input": {"a": 1, "b": {"x": 1}}, "metadata": {"k": {"p": 1, "q": 2}}, "created": "2024-05-01T00:00:00Z"}  # fmt: skip
    await api.insert("project_logs", pid, [base])
    await api.insert("project_logs", pid, [{"id": "m", "_is_merge": True, "input": {"b": {"y": 2}}, "metadata": {"k": {"p": 9}}, "_merge_paths": [["metadata", "k"]]}])  # fmt: skip
    row = (await rows_by_id(api, "project_logs", pid))["m"]
    assert row["input"] == {"a": 1, "b": {"x": 1, "y": 2}}
    assert row["metadata"] == {"k": {"p": 9}}
    assert row["created"] == "2024-05-01T00:00:00.000Z"  # the canonical spelling of the time sent
    assert "_is_merge" not in row and "_merge_paths" not in row


async def test_a_merge_or_a_comment_keeps_the_rows_classifications(api: Api) -> None:
    """``classifications`` (written through ``/logs3``, as an ``Eval`` writes them) stay on the
    row when a later merge (``log_feedback``'s scores) or a comment does not name them."""
    pid = (await api.project())["id"]

    async def logs3(*rows: dict[str, Any]) -> None:
        body = {"rows": [{"project_id": pid, "log_id": "g", **r} for r in rows], "api_version": 2}
        assert (await api.call("POST", "/logs3", body)).status == 200

    classes = {"topic": [{"id": "t2", "label": "M"}]}
    await logs3({"id": "c", "input": 1, "classifications": classes})
    await logs3({"id": "c", "_is_merge": True, "scores": {"s": 1}})
    await api.ok("POST", f"/v1/project_logs/{pid}/feedback", {"feedback": [{"id": "c", "comment": "ok"}]})
    row = (await rows_by_id(api, "project_logs", pid))["c"]
    assert (row["classifications"], row["scores"], row["input"]) == (classes, {"s": 1}, 1)


async def test_merge_within_one_request(api: Api) -> None:
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [{"id": "x", "input": {"a": 1}}, {"id": "x", "_is_merge": True, "input": {"b": 2}}])  # fmt: skip
    assert (await rows_by_id(api, "project_logs", pid))["x"]["input"] == {"a": 1, "b": 2}


async def test_delete_hides_row_but_old_version_stays_readable(api: Api) -> None:
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [{"id": "d", "input": 1}, {"id": "keep", "input": 2}])
    before = (await rows_by_id(api, "project_logs", pid))["d"]["_xact_id"]
    await api.insert("project_logs", pid, [{"id": "d", "_object_delete": True}])
    assert set(await rows_by_id(api, "project_logs", pid)) == {"keep"}
    pinned = {r["id"] for r in await api.all_rows(star("project_logs", pid), version=before)}
    assert pinned == {"d", "keep"}


async def test_dataset_and_experiment_inserts(api: Api) -> None:
    pid = (await api.project())["id"]
    ds = await api.dataset(pid)
    exp = await api.ok("POST", "/v1/experiment", {"project_id": pid, "name": "e"})
    await api.insert("dataset", ds["id"], [{"id": "d1", "input": 1, "expected": 2}])
    await api.insert("experiment", exp["id"], [{"id": "e1", "input": 1, "scores": {"acc": 1}}])
    assert (await rows_by_id(api, "dataset", ds["id"]))["d1"]["dataset_id"] == ds["id"]
    assert (await rows_by_id(api, "experiment", exp["id"]))["e1"]["experiment_id"] == exp["id"]


async def test_cross_object_insert_and_logs3(api: Api) -> None:
    pid = (await api.project())["id"]
    ds = await api.dataset(pid)
    reply = await api.ok("POST", "/v1/insert", {"project_logs": {pid: {"events": [{"id": "c1"}]}}, "dataset": {ds["id"]: {"events": [{"id": "c2"}]}}})  # fmt: skip
    assert reply == {"project_logs": {pid: {"row_ids": ["c1"]}}, "dataset": {ds["id"]: {"row_ids": ["c2"]}}}
    logs3 = {"rows": [{"id": "s1", "project_id": pid, "log_id": "g", "input": 1, "_audit_source": "sdk"},
                      {"id": "s2", "dataset_id": ds["id"], "input": 2}], "api_version": 2}  # fmt: skip
    assert (await api.ok("POST", "/logs3", logs3))["row_ids"] == ["s1", "s2"]
    assert set(await rows_by_id(api, "project_logs", pid)) == {"c1", "s1"}
    assert set(await rows_by_id(api, "dataset", ds["id"])) == {"c2", "s2"}


async def test_validation_messages(api: Api) -> None:
    pid = (await api.project())["id"]
    path = f"/v1/project_logs/{pid}/insert"
    cases = [
        (
            {"events": [{}, {}, {}, {"scores": {"accuracy": 2}}]},
            "events[3].scores.accuracy: expected number between 0 and 1 or null",
        ),
        ({"events": [{"tags": "x"}]}, "events[0].tags: expected array, got string"),
        ({"events": [{"created": "yesterday"}]}, "events[0].created: expected an ISO-8601 date-time"),
        (
            {"events": [{"span_attributes": {"type": "nope"}}]},
            "events[0].span_attributes.type: expected one of",
        ),
        (  # the spec's SpanAttributes.purpose is "scorer" or null, all the SDKs write
            {"events": [{"span_attributes": {"purpose": "judge"}}]},
            "events[0].span_attributes.purpose: expected one of scorer",
        ),
        ({"events": "x"}, "events: expected array"),
    ]
    for body, message in cases:
        reply = await api.call("POST", path, body)
        assert reply.status == 400 and message in reply.text, reply.text
    assert await api.all_rows(star("project_logs", pid)) == []  # nothing was written


async def test_413_and_gzip_bodies(api: Api) -> None:
    pid = (await api.project())["id"]
    path = f"/v1/project_logs/{pid}/insert"
    big = {"events": [{"input": "x" * DEFAULT_MAX_REQUEST_BYTES}]}
    assert (await api.call("POST", path, big)).status == 413
    body = gzip.compress(orjson.dumps({"events": [{"id": "gz", "input": "zipped"}]}))
    reply = await api.call("POST", path, raw=body, headers={"Content-Encoding": "gzip"})
    assert reply.status == 200, reply.text
    resp = await api.call("POST", "/btql", {"query": star("project_logs", pid)}, headers={"Accept-Encoding": "gzip"})  # fmt: skip
    assert resp.json["data"][0]["input"] == "zipped"


async def test_unknown_object_insert_is_404(api: Api) -> None:
    reply = await api.call("POST", "/v1/dataset/00000000-0000-4000-8000-000000000000/insert", {"events": []})
    assert reply.status == 404


async def test_legacy_fetch_walks_history_newest_first_each_row_once_a_page(api: Api) -> None:
    """A later page may repeat a row in an older version (the spec's ``FetchLimitParam``); one
    page holds each row once, newest: the Python SDK's ``dataset.fetch()`` joins pages as is."""
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [{"id": "a", "input": 1}, {"id": "b", "input": 1}])
    await api.insert("project_logs", pid, [{"id": "a", "input": 2}])
    await api.insert("project_logs", pid, [{"id": "b", "_object_delete": True}])
    seen = []
    cursor = None
    while True:
        body = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = await api.ok("POST", f"/v1/project_logs/{pid}/fetch", body)
        if not page["events"]:
            assert page["cursor"] is None
            break
        seen += [(e["id"], e["input"]) for e in page["events"]]
        cursor = page["cursor"]
    assert seen == [("a", 2), ("a", 1)]
    got = await api.ok("GET", f"/v1/project_logs/{pid}/fetch", params={"limit": "10"})
    assert [(e["id"], e["input"]) for e in got["events"]] == [("a", 2)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values, metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=3))
async def test_round_trip_any_json(api: Api, value: Any, metadata: dict[str, Any]) -> None:
    pid = (await api.project())["id"]
    metadata.pop("model", None)
    await api.insert("project_logs", pid, [{"id": "rt", "input": value, "metadata": metadata}])
    (row,) = await api.all_rows(star("project_logs", pid))
    assert row["input"] == value and row["metadata"] == metadata


async def test_versions_read_back_through_the_sdks_pretty_spelling(api: Api) -> None:
    """The SDKs print a version as 16 hex digits and read one back setting the top bits every
    real transaction id has (``load_pretty_xact``): the emulator's ids have them too, so a
    version an SDK printed names the same transaction again."""
    from braintrust.xact_ids import load_pretty_xact, prettify_xact

    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [{"id": "v", "input": 1}])
    (row,) = (await rows_by_id(api, "project_logs", pid)).values()
    assert load_pretty_xact(prettify_xact(row["_xact_id"])) == row["_xact_id"]
