"""POST /btql: filters, projections, aggregates, shapes, cursors, versions, errors."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.querylang.ast import MAX_LIMIT, binary, from_object, function, ident, literal
from tests.emulator.conftest import Api

EVENTS = [
    {
        "id": "1",
        "span_id": "s1",
        "root_span_id": "t1",
        "tags": ["a", "b"],
        "metadata": {"orgName": "qawolf", "user id": "u1"},
        "scores": {"acc": 0.9},
        "input": "Hello Wörld",
    },
    {
        "id": "2",
        "span_id": "s2",
        "root_span_id": "t1",
        "span_parents": ["s1"],
        "tags": ["b"],
        "metadata": {"orgName": "acme"},
        "scores": {"acc": 0.2},
        "input": "bye",
    },
    {
        "id": "3",
        "span_id": "s3",
        "root_span_id": "t2",
        "metadata": {"orgName": "qawolf"},
        "scores": {"acc": None},
        "input": "hello again",
    },
    {
        "id": "4",
        "span_id": "s4",
        "root_span_id": "t3",
        "metadata": {"orgName": "acme"},
        "scores": {"acc": 0.5},
        "input": {"q": "x"},
    },
]


async def seeded(api: Api) -> str:
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, EVENTS)
    return pid


async def ids_of(api: Api, pid: str, flt: dict[str, Any] | None, shape: str = "spans") -> set[str]:
    query: dict[str, Any] = {
        "from": from_object("project_logs", pid, shape=shape),
        "select": [{"op": "star"}],
    }
    if flt is not None:
        query["filter"] = flt
    return {r["id"] for r in await api.all_rows(query)}


async def test_filters(api: Api) -> None:
    pid = await seeded(api)
    org = ident("metadata", "orgName")
    cases: list[tuple[dict[str, Any], set[str]]] = [
        (binary("eq", org, literal("qawolf")), {"1", "3"}),
        (binary("ne", org, literal("qawolf")), {"2", "4"}),
        (binary("gt", ident("scores", "acc"), literal(0.4)), {"1", "4"}),
        (binary("le", ident("scores", "acc"), literal(0.5)), {"2", "4"}),
        ({"op": "isnull", "expr": ident("scores", "acc")}, {"3"}),
        ({"op": "isnotnull", "expr": ident("metadata", "user id")}, {"1"}),
        (binary("includes", ident("tags"), literal("a")), {"1"}),
        (binary("includes", ident("input"), literal("ello")), {"1", "3"}),
        (binary("ilike", ident("input"), literal("hello%")), {"1", "3"}),
        (binary("like", ident("input"), literal("Hello%")), {"1"}),
        (binary("ilike", ident("input"), literal("%wÖrld")), {"1"}),
        (binary("in", ident("id"), literal(["2", "3", "9"])), {"2", "3"}),
        (
            {
                "op": "and",
                "children": [
                    binary("eq", org, literal("acme")),
                    binary("gt", ident("scores", "acc"), literal(0.3)),
                ],
            },
            {"4"},
        ),
        (
            {
                "op": "or",
                "left": binary("eq", ident("id"), literal("1")),
                "right": binary("eq", ident("id"), literal("4")),
            },
            {"1", "4"},
        ),
        ({"op": "not", "expr": binary("eq", org, literal("acme"))}, {"1", "3"}),
        (binary("eq", ident("input", "q"), literal("x")), {"4"}),
        (binary("eq", ident("is_root"), literal(False)), {"2"}),
        (binary("eq", function("lower", ident("input")), literal("bye")), {"2"}),
    ]
    for flt, expected in cases:
        assert await ids_of(api, pid, flt) == expected, flt


async def test_traces_shape_returns_whole_traces(api: Api) -> None:
    pid = await seeded(api)
    flt = binary("eq", ident("metadata", "orgName"), literal("acme"))
    assert await ids_of(api, pid, flt, shape="traces") == {"1", "2", "4"}


async def test_xact_id_compares_as_integer(api: Api) -> None:
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [{"id": "old"}])
    await api.insert("project_logs", pid, [{"id": "new"}])
    rows = await api.all_rows({"from": from_object("project_logs", pid)})
    old = next(r["_xact_id"] for r in rows if r["id"] == "old")
    assert await ids_of(api, pid, binary("gt", ident("_xact_id"), literal(old))) == {"new"}
    assert await ids_of(api, pid, binary("gt", ident("_xact_id"), literal(int(old)))) == {"new"}


async def test_projection_sort_and_json_format(api: Api) -> None:
    pid = await seeded(api)
    query = {
        "from": from_object("project_logs", pid),
        "select": [{"alias": "id", "expr": ident("id")}, {"alias": "org", "expr": ident("metadata", "orgName")},
                   {"alias": "inp", "expr": ident("input")}],
        "sort": [{"expr": ident("id"), "dir": "desc"}],
    }  # fmt: skip
    reply = await api.btql(query)
    assert reply.status == 200, reply.text
    body = reply.json
    assert [r["id"] for r in body["data"]] == ["4", "3", "2", "1"]
    assert body["data"][0] == {"id": "4", "org": "acme", "inp": {"q": "x"}}
    assert body["cursor"] is None and set(body["schema"]["items"]["properties"]) == {"id", "org", "inp"}


async def test_aggregates(api: Api) -> None:
    pid = await seeded(api)
    query = {
        "from": from_object("project_logs", pid),
        "dimensions": [{"alias": "org", "expr": ident("metadata", "orgName")}],
        "measures": [
            {"alias": "n", "expr": function("count", literal(1))},
            {"alias": "total", "expr": function("sum", ident("scores", "acc"))},
            {"alias": "v", "expr": function("max", ident("_xact_id"))},
        ],
    }
    data = (await api.btql(query)).json["data"]
    xact = (await api.all_rows({"from": from_object("project_logs", pid)}))[0]["_xact_id"]
    assert data == [
        {"org": "acme", "n": 2, "total": 0.7, "v": xact},
        {"org": "qawolf", "n": 2, "total": 0.9, "v": xact},
    ]
    (total,) = (await api.btql({"from": from_object("project_logs", pid), "measures": [{"alias": "n", "expr": function("count", {"op": "star"})}]})).json["data"]  # fmt: skip
    assert total == {"n": 4}


async def test_pagination_over_5000_rows_returns_each_once(api: Api) -> None:
    pid = (await api.project())["id"]
    for start in range(0, 5200, 1300):
        await api.insert(
            "project_logs", pid, [{"id": f"r{i}", "input": i} for i in range(start, start + 1300)]
        )
    query = {"from": from_object("project_logs", pid), "limit": 700}
    rows = await api.all_rows(query)
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(5200))


async def test_pinned_pagination_under_concurrent_writes(api: Api) -> None:
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [{"id": f"r{i}", "input": i} for i in range(3000)])
    expected = {f"r{i}": i for i in range(3000)}
    stop = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop.is_set():
            # new rows, rewrites and deletes of rows the reader has not reached yet
            await api.insert("project_logs", pid, [{"id": f"new{n}"}, {"id": f"r{2999 - n}", "input": -1}, {"id": f"r{n}", "_object_delete": True}])  # fmt: skip
            n += 1

    query = {"from": from_object("project_logs", pid), "limit": 250}
    first = await api.btql(query, fmt="jsonl")  # pins the version before any concurrent write
    task = asyncio.create_task(writer())
    try:
        rows = first.lines + await api.all_rows(query, cursor=first.headers["x-bt-cursor"])
    finally:
        stop.set()
        await task
    assert len(rows) == 3000
    assert {r["id"]: r["input"] for r in rows} == expected


async def test_cursor_pins_version_without_explicit_version(api: Api) -> None:
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [{"id": "a"}, {"id": "b"}])
    first = await api.btql({"from": from_object("project_logs", pid), "limit": 1}, fmt="jsonl")
    await api.insert("project_logs", pid, [{"id": "c"}])
    second = await api.btql({"from": from_object("project_logs", pid), "limit": 5}, fmt="jsonl", cursor=first.headers["x-bt-cursor"])  # fmt: skip
    assert [r["id"] for r in first.lines + second.lines] == ["a", "b"]


async def test_multiple_ids_and_datasets(api: Api) -> None:
    pid = (await api.project())["id"]
    d1, d2 = await api.dataset(pid), await api.dataset(pid)
    await api.insert("dataset", d1["id"], [{"id": "x"}])
    await api.insert("dataset", d2["id"], [{"id": "y"}])
    rows = await api.all_rows({"from": from_object("dataset", d1["id"], d2["id"])})
    assert {r["id"] for r in rows} == {"x", "y"}


async def test_query_errors(api: Api) -> None:
    pid = await seeded(api)
    src = from_object("project_logs", pid)
    other = await api.ok("POST", "/v1/project", {"name": "x"}, key=api.emulator.other_org_key)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"query": {"from": src, "limit": MAX_LIMIT + 1}}, 400, "capped at 1000"),
        ({"query": {"from": src, "limit": 0}}, 400, "out of range"),
        ({"query": {"from": src, "bogus": 1}}, 400, "unknown field 'bogus'"),
        ({"query": {"from": src}, "bogus": 1}, 400, "unknown field 'bogus'"),
        ({"query": {"from": src, "filter": {"op": "zap"}}}, 400, "unknown op 'zap'"),
        ({"query": {"from": src, "filter": function("frob", literal(1))}}, 400, "unknown function 'frob'"),
        (
            {"query": {"from": src, "filter": binary("eq", ident("_xact_id"), literal("abc"))}},
            400,
            "not a transaction id",
        ),
        ({"query": {"from": src}, "version": str(2**64)}, 400, "is not a transaction id"),
        (
            {"query": {"from": src, "filter": binary("gt", ident("_xact_id"), literal(str(2**70)))}},
            400,
            "not a transaction id",
        ),
        ({"query": {"from": src, "sort": [{"expr": ident("id")}]}, "cursor": "MTox"}, 400, "need no sort"),
        ({"query": {"from": src}, "cursor": "!!!"}, 400, "malformed cursor"),
        ({"query": "select: *"}, 400, "query: query has no 'from:' clause"),
        ({"query": {"from": from_object("nothing", pid)}}, 400, "unknown source"),
        (
            {"query": {"from": from_object("project_logs", "00000000-0000-4000-8000-000000000000")}},
            400,
            "unknown project id",
        ),
        (
            {"query": {"from": from_object("project_logs", other["id"])}},
            400,
            f"unknown project id {other['id']!r}",
        ),
        ({"query": {"from": src}, "fmt": "xml"}, 400, "fmt"),
    ]
    for body, status, message in cases:
        reply = await api.call("POST", "/btql", body)
        assert reply.status == status and message in reply.text, (body, reply.status, reply.text)
    bad_json = await api.call("POST", "/btql", raw=b"{")
    assert bad_json.status == 400 and "invalid JSON" in bad_json.text


async def test_equality_with_a_list_or_object_compares_as_json(api: Api) -> None:
    """``eq``/``ne`` with a list or object literal (the SDKs' span filters send them): equal as
    JSON, object keys in any order, ``true`` not ``1``; an absent field matches neither."""
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [
        {"id": "a", "metadata": {"ids": [1, 2], "o": {"x": 1, "y": [True]}}},
        {"id": "b", "metadata": {"ids": [2, 1], "o": {"y": [True], "x": 1}}},
        {"id": "c", "metadata": {"ids": [1, 2.0], "o": {"x": 1, "y": [1]}}},
        {"id": "d", "metadata": {}},
        {"id": "e", "metadata": {"ids": None}},
    ])  # fmt: skip
    ids = ident("metadata", "ids")
    obj = ident("metadata", "o")
    assert await ids_of(api, pid, binary("eq", ids, literal([1, 2]))) == {"a", "c"}
    assert await ids_of(api, pid, binary("eq", literal([2, 1]), ids)) == {"b"}
    assert await ids_of(api, pid, binary("ne", ids, literal([1, 2]))) == {"b"}  # null and absent: neither
    assert await ids_of(api, pid, binary("eq", obj, literal({"y": [True], "x": 1}))) == {"a", "b"}
    assert await ids_of(api, pid, binary("eq", ids, literal([]))) == set()
    refused = await api.call("POST", "/btql", {"query": {
        "from": from_object("project_logs", pid), "filter": binary("lt", ids, literal([1]))}})  # fmt: skip
    assert refused.status == 400 and "only allowed with 'in', '=' and '!='" in refused.text


async def test_a_body_nested_too_deep_is_a_400(api: Api) -> None:
    """A request body nested deeper than the decoder goes is refused with a 400 naming the
    problem, not a 500: a /btql filter literal and an object create alike."""
    import orjson

    pid = (await api.project())["id"]
    deep = b"[" * 3000 + b"1" + b"]" * 3000
    query = {
        "from": from_object("project_logs", pid),
        "filter": binary("eq", ident("metadata", "x"), literal("DEEP")),
    }
    bodies = {
        "/btql": orjson.dumps({"query": query}).replace(b'"DEEP"', deep),
        "/v1/dataset": b'{"project_id": "'
        + pid.encode()
        + b'", "name": "d", "metadata": {"x": '
        + deep
        + b"}}",
    }
    for path, raw in bodies.items():
        reply = await api.call("POST", path, raw=raw)
        assert reply.status == 400 and "nested too deep" in reply.text, (path, reply.status, reply.text[:200])
