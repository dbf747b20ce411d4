"""POST /btql answers what Braintrust's own clients send as the real service does: their body
fields, their cursor placements, ``sort: _pagination_key`` with a cursor (``bt sync``) and
keyset filters on ``_pagination_key`` (``braintrust-migrate``). Row sets are checked exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.querylang.ast import from_object, ident
from tests.emulator import clients
from tests.emulator.conftest import Api

# Three traces of a root and two children each, written over several requests; created times
# are spelled as different clients write them, so their text order is not their time order.
TRACES: dict[str, list[tuple[str, str]]] = {
    "ta": [("ta", "2026-01-01T00:00:10.000Z"), ("ta-1", "2026-01-01T05:00:12+05:00"),
           ("ta-2", "2026-01-01T00:00:11.500000+00:00")],
    "tb": [("tb", "2025-12-31T19:00:20-05:00"), ("tb-1", "2026-01-01T00:00:22Z"),
           ("tb-2", "2026-01-01T00:00:21.250Z")],
    "tc": [("tc", "2026-01-01T00:00:30.000001+00:00"), ("tc-1", "2026-01-01T00:00:31Z"),
           ("tc-2", "2026-01-01T01:00:30.5+01:00")],
}  # fmt: skip


def _events(trace: str) -> list[dict[str, Any]]:
    root, *children = TRACES[trace]
    events = [
        {"id": root[0], "span_id": root[0], "root_span_id": trace, "created": root[1], "input": root[0]}
    ]
    for span, created in children:
        events.append({"id": span, "span_id": span, "root_span_id": trace, "span_parents": [trace],
                       "created": created, "input": span})  # fmt: skip
    return events


@dataclass
class Seeded:
    project_id: str
    dataset_ids: tuple[str, str]
    order: list[str]  # visible project log ids in write order
    first_version: str  # the version after the first write
    first_ids: list[str]  # the rows visible at first_version, in write order


@pytest.fixture
async def seeded(api: Api) -> Seeded:
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, _events("ta"))
    first = (await clients.py_object_fetcher(api, "project_logs", pid))[0]["_xact_id"]
    await api.insert("project_logs", pid, _events("tb"))
    await api.insert("project_logs", pid, _events("tc"))
    await api.insert("project_logs", pid, [{"id": "ta-1", "span_id": "ta-1", "root_span_id": "ta",
                                           "span_parents": ["ta"], "created": "2026-01-01T00:00:12Z",
                                           "input": "ta-1 again"}])  # fmt: skip
    await api.insert("project_logs", pid, [{"id": "tb-2", "_object_delete": True}])
    d1, d2 = (await api.dataset(pid))["id"], (await api.dataset(pid))["id"]
    await api.insert("dataset", d1, [{"id": f"x{i}", "input": i} for i in range(7)])
    await api.insert("dataset", d2, [{"id": f"y{i}", "input": i} for i in range(4)])
    order = ["ta", "ta-2", "tb", "tb-1", "tc", "tc-1", "tc-2", "ta-1"]
    return Seeded(pid, (d1, d2), order, first, ["ta", "ta-1", "ta-2"])


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


async def test_every_body_field_real_clients_send_is_accepted(api: Api, seeded: Seeded) -> None:
    query = {"from": from_object("project_logs", seeded.project_id), "select": [{"op": "star"}]}
    fields: dict[str, Any] = {
        "api_version": 1, "client_version": "0.4.0", "query_timeout_seconds": 120, "use_brainstore": True,
        "use_columnstore": False, "brainstore_realtime": True, "query_source": "py_sdk_object_fetcher_dataset",
        "tz_offset": -300, "fmt": "json", "version": None, "audit_log": False, "cursor": None,
    }  # fmt: skip
    for name, value in fields.items():
        reply = await api.btql(query, **{name: value})
        assert reply.status == 200, (name, reply.text)
        assert ids(reply.json["data"]) == seeded.order
    together = await api.btql(query, **fields)
    assert together.status == 200 and ids(together.json["data"]) == seeded.order
    jsonl = await api.btql(query, **{**fields, "fmt": "jsonl"})
    assert jsonl.status == 200 and ids(jsonl.lines) == seeded.order


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("api_version", "1", "api_version: expected an integer"),
        ("query_timeout_seconds", 0, "query_timeout_seconds: expected a number of seconds above 0"),
        ("query_timeout_seconds", True, "query_timeout_seconds: expected a number"),
        ("use_brainstore", "yes", "use_brainstore: expected a boolean"),
        ("client_version", 4, "client_version: expected a string"),
        ("tz_offset", "UTC", "tz_offset: expected a number of minutes"),
        ("fmt", "parquet", "fmt: expected json or jsonl"),
        ("frobnicate", 1, "unknown field 'frobnicate'"),
    ],
)
async def test_body_fields_of_the_wrong_type_are_refused_by_name(api: Api, seeded: Seeded, field: str, value: Any, message: str) -> None:  # fmt: skip
    reply = await api.btql({"from": from_object("project_logs", seeded.project_id)}, **{field: value})
    assert reply.status == 400 and message in reply.text, reply.text


async def test_python_sdk_object_fetcher_pages_with_the_cursor_in_the_query(api: Api, seeded: Seeded) -> None:
    pid = seeded.project_id
    assert ids(await clients.py_object_fetcher(api, "project_logs", pid)) == seeded.order
    assert ids(await clients.py_object_fetcher(api, "project_logs", pid, limit=3)) == seeded.order
    pinned = await clients.py_object_fetcher(api, "project_logs", pid, limit=2, version=seeded.first_version)
    assert ids(pinned) == seeded.first_ids
    assert [r["input"] for r in pinned] == seeded.first_ids  # ta-1 as first written
    d1 = seeded.dataset_ids[0]
    assert ids(await clients.py_object_fetcher(api, "dataset", d1, limit=2)) == [f"x{i}" for i in range(7)]


async def test_python_sdk_span_fetcher_reads_children_by_time(api: Api, seeded: Seeded) -> None:
    # by time: tb-1 00:00:22, tb-2 deleted; ta: ta-2 00:00:11.5 before ta-1 00:00:12 (rewritten)
    assert ids(await clients.py_span_fetcher(api, seeded.project_id, "ta")) == ["ta-2", "ta-1"]
    assert ids(await clients.py_span_fetcher(api, seeded.project_id, "tb")) == ["tb-1"]
    # tc-2 is 00:00:30.5 in UTC, before tc-1 at 00:00:31, though its text sorts after it
    assert ids(await clients.py_span_fetcher(api, seeded.project_id, "tc")) == ["tc-2", "tc-1"]


async def test_javascript_sdk_dataset_iteration_and_the_walkthrough(api: Api, seeded: Seeded) -> None:
    d1 = seeded.dataset_ids[0]
    expected = [f"x{i}" for i in range(7)]
    assert ids(await clients.js_dataset_iteration(api, d1, limit=3)) == expected
    assert ids(await clients.walkthrough(api, d1, limit=3)) == expected
    version = (await clients.walkthrough(api, d1, limit=10))[0]["_xact_id"]
    await api.insert("dataset", d1, [{"id": "x0", "_object_delete": True}, {"id": "late"}])
    assert ids(await clients.js_dataset_iteration(api, d1, limit=4, version=version)) == expected
    assert ids(await clients.walkthrough(api, d1, limit=4, version=version)) == expected
    assert ids(await clients.js_dataset_iteration(api, d1, limit=4)) == [*expected[1:], "late"]


async def test_bt_sync_pages_newest_first_with_the_cursor_in_the_text(api: Api, seeded: Seeded) -> None:
    newest_first = list(reversed(seeded.order))
    for limit in (1, 3, 100):
        assert ids(await clients.bt_sync(api, seeded.project_id, limit)) == newest_first
    after = await clients.bt_sync(
        api, seeded.project_id, 2, filter_text="created >= '2026-01-01T00:00:21.25Z'"
    )
    assert ids(after) == ["tc-2", "tc-1", "tc", "tb-1"]


async def test_braintrust_migrate_keyset_paging(api: Api, seeded: Seeded) -> None:
    logs = f"project_logs('{seeded.project_id}')"
    for sql in (False, True):
        assert ids(await clients.migrate_keyset(api, logs, limit=3, sql=sql)) == seeded.order
        since = await clients.migrate_keyset(
            api, logs, limit=2, created_after="2026-01-01T00:00:20Z", sql=sql
        )
        assert ids(since) == ["tb", "tb-1", "tc", "tc-1", "tc-2"]
        both = "dataset('{}', '{}')".format(*seeded.dataset_ids)
        expected = [f"x{i}" for i in range(7)] + [f"y{i}" for i in range(4)]
        assert ids(await clients.migrate_keyset(api, both, limit=4, sql=sql)) == expected


async def test_one_cursor_works_in_each_place_clients_put_it(api: Api, seeded: Seeded) -> None:
    pid = seeded.project_id
    parsed = {"from": from_object("project_logs", pid), "select": [{"op": "star"}], "limit": 3}
    first = await api.btql({**parsed, "cursor": None})
    cursor = first.json["cursor"]
    assert ids(first.json["data"]) == seeded.order[:3] and first.headers["x-bt-cursor"] == cursor
    expected = seeded.order[3:6]
    assert ids((await api.btql({**parsed, "cursor": cursor})).json["data"]) == expected
    assert ids((await api.btql(parsed, cursor=cursor)).json["data"]) == expected
    text = f"select: * | from: project_logs('{pid}') | limit: 3"
    in_text = await api.call("POST", "/btql", {"query": f"{text} | cursor: '{cursor}'"})
    assert ids(in_text.json["data"]) == expected
    beside = await api.call("POST", "/btql", {"query": text, "cursor": cursor})
    assert ids(beside.json["data"]) == expected


async def test_a_sort_on_pagination_key_pages_with_a_cursor_both_ways(api: Api, seeded: Seeded) -> None:
    cursors = []
    for direction, expected in (("asc", seeded.order), ("desc", list(reversed(seeded.order)))):
        query = {"from": from_object("project_logs", seeded.project_id), "limit": 3,
                 "sort": [{"expr": ident("_pagination_key"), "dir": direction}]}  # fmt: skip
        rows: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = (await api.btql({**query, "cursor": cursor})).json
            rows += page["data"]
            if not page["cursor"]:
                break
            cursor = page["cursor"]
            cursors.append(cursor)
        assert ids(rows) == expected
    other_sort = {"from": from_object("project_logs", seeded.project_id), "sort": [{"expr": ident("id")}]}
    reply = await api.btql({**other_sort, "cursor": cursors[0]})
    assert reply.status == 400 and "need no sort other than _pagination_key" in reply.text


async def test_keyset_filters_on_pagination_key(api: Api, seeded: Seeded) -> None:
    pid = seeded.project_id
    keys = {r["id"]: r["_pagination_key"] for r in await clients.py_object_fetcher(api, "project_logs", pid)}
    pivot = keys["tc"]
    cases = {
        f"_pagination_key > '{pivot}'": ["tc-1", "tc-2", "ta-1"],
        f"_pagination_key >= '{pivot}'": ["tc", "tc-1", "tc-2", "ta-1"],
        f"_pagination_key < '{pivot}'": ["ta", "ta-2", "tb", "tb-1"],
        f"_pagination_key <= '{pivot}'": ["ta", "ta-2", "tb", "tb-1", "tc"],
        f"_pagination_key = '{pivot}'": ["tc"],
        f"_pagination_key != '{pivot}'": [i for i in seeded.order if i != "tc"],
        f"'{pivot}' < _pagination_key": ["tc-1", "tc-2", "ta-1"],
        "_pagination_key > '2'": seeded.order,  # a key of another server compares as text
    }
    for condition, expected in cases.items():
        text = f"select: * | from: project_logs('{pid}') | filter: {condition} | sort: _pagination_key asc"
        reply = await api.call("POST", "/btql", {"query": text})
        assert reply.status == 200, reply.text
        assert ids(reply.json["data"]) == expected, condition


async def test_query_timeout_seconds_without_a_row_limit_reads_normally(api: Api, seeded: Seeded) -> None:
    reply = await api.btql(
        {"from": from_object("project_logs", seeded.project_id)}, query_timeout_seconds=0.5
    )
    assert reply.status == 200 and ids(reply.json["data"]) == seeded.order
