"""POST /btql with query text (BTQL clauses and SQL), the summary shape, and query errors."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.querylang.ast import binary, from_object, ident, literal
from tests.emulator.conftest import Api

# Two traces: t1 (root r1 with children c1, c2), t2 (root r2 alone).
EVENTS: list[dict[str, Any]] = [
    {
        "id": "r1", "span_id": "r1", "root_span_id": "t1",
        "span_attributes": {"name": "root", "type": "task"}, "metadata": {"orgName": "qawolf", "user_id": "u1"},
        "scores": {"response quality": 1, "acc": 0.5}, "tags": ["x"],
        "metrics": {"start": 10, "end": 20, "prompt_tokens": 3, "cost": 7}, "input": "Alpha",
    },
    {
        "id": "c1", "span_id": "c1", "root_span_id": "t1", "span_parents": ["r1"],
        "span_attributes": {"name": "llm", "type": "llm"}, "scores": {"acc": 1.0},
        "metrics": {"start": 5, "end": 12, "prompt_tokens": 4, "completion_tokens": 6, "cost": 1}, "input": "beta",
    },
    {
        "id": "c2", "span_id": "c2", "root_span_id": "t1", "span_parents": ["r1"],
        "span_attributes": {"name": "tool", "type": "tool"}, "scores": {"acc": None},
        "metrics": {"start": 11, "end": 25}, "input": "gamma",
    },
    {
        "id": "r2", "span_id": "r2", "root_span_id": "t2",
        "span_attributes": {"name": "root", "type": "task"}, "metadata": {"orgName": "acme", "user_id": "u2"},
        "scores": {"acc": 0.25}, "metrics": {"start": 1, "end": 4, "tokens": 9}, "input": "delta",
    },
]  # fmt: skip


@pytest.fixture
async def pid(api: Api) -> str:
    project_id = (await api.project())["id"]
    await api.insert("project_logs", project_id, EVENTS)
    return project_id


async def run(api: Api, text: str, **body: Any) -> list[dict[str, Any]]:
    reply = await api.call("POST", "/btql", {"query": text, "fmt": "json", **body})
    assert reply.status == 200, (text, reply.text)
    data: list[dict[str, Any]] = reply.json["data"]
    return data


async def ids(api: Api, text: str) -> list[str]:
    return [r["id"] for r in await run(api, text)]


async def test_filters_in_both_syntaxes(api: Api, pid: str) -> None:
    src = f"project_logs('{pid}')"
    cases = {
        "metadata.orgName = 'qawolf'": ["r1"],
        'scores."response quality" IS NOT NULL': ["r1"],
        "scores.acc IS NULL": ["c2"],
        "scores.acc >= 0.5 AND NOT is_root": ["c1"],
        "is_root": ["r1", "r2"],
        "id IN ('c1', 'r2', 'nope')": ["c1", "r2"],
        "input LIKE 'b%'": ["c1"],
        "input ILIKE 'ALPHA'": ["r1"],
        "tags includes 'x'": ["r1"],
        "span_attributes.type = 'tool' OR metrics.tokens > 8": ["c2", "r2"],
        "metrics.end - metrics.start > 5": ["r1", "c1", "c2"],
        "lower(input) = 'alpha' and length(input) = 5": ["r1"],
        "coalesce(metrics.prompt_tokens, 0) = 0": ["c2", "r2"],
        "abs(metrics.start - 12) = 1": ["c2"],
        "upper(span_attributes.name) = 'LLM'": ["c1"],
    }
    for condition, expected in cases.items():
        sql = f"SELECT * FROM {src} WHERE {condition}"
        btql = f"select: *\nfrom: {src}\nfilter: {condition}"
        piped = f"select: * | from: {src} | filter: {condition}"
        for text in (sql, btql, piped):
            assert await ids(api, text) == expected, text


async def test_projection_case_arithmetic_and_sort(api: Api, pid: str) -> None:
    text = (
        "SELECT id, CASE WHEN is_root THEN 'root' ELSE span_attributes.name END AS kind,"
        " metrics.end - metrics.start AS took, metadata"
        f" FROM project_logs('{pid}') ORDER BY took DESC, id LIMIT 3"
    )
    assert await run(api, text) == [
        {"id": "c2", "kind": "tool", "took": 14, "metadata": None},
        {"id": "r1", "kind": "root", "took": 10, "metadata": {"orgName": "qawolf", "user_id": "u1"}},
        {"id": "c1", "kind": "llm", "took": 7, "metadata": None},
    ]
    btql = f"select: id | from: project_logs('{pid}') | sort: metrics.start asc | limit: 2"
    assert await ids(api, btql) == ["r2", "c1"]


async def test_aggregates_in_both_syntaxes(api: Api, pid: str) -> None:
    sql = (
        'SELECT sum(CASE WHEN scores."response quality" IS NOT NULL THEN 1 ELSE 0 END) AS reviewed,'
        f" sum(CASE WHEN is_root THEN 1 ELSE 0 END) AS total FROM project_logs('{pid}')"
    )
    assert await run(api, sql) == [{"reviewed": 1, "total": 2}]
    btql = (
        f"from: project_logs('{pid}')\n"
        'measures: sum(scores."response quality" IS NOT NULL) AS reviewed, count(1) AS total\n'
        "filter: is_root -- only traces"
    )
    assert await run(api, btql) == [{"reviewed": 1, "total": 2}]
    grouped = (
        "SELECT span_attributes.type AS type, count(1) AS n, min(metrics.start) AS first,"
        " max(metrics.end) AS last, avg(scores.acc) AS acc, sum(metrics.prompt_tokens) AS tokens"
        f" FROM project_logs('{pid}') GROUP BY 1 ORDER BY n DESC, type"
    )
    assert await run(api, grouped) == [
        {"type": "task", "n": 2, "first": 1, "last": 20, "acc": 0.375, "tokens": 3},
        {"type": "llm", "n": 1, "first": 5, "last": 12, "acc": 1.0, "tokens": 4},
        {"type": "tool", "n": 1, "first": 11, "last": 25, "acc": None, "tokens": None},
    ]
    dims = f"from: project_logs('{pid}') | dimensions: is_root | measures: count(1) AS n | sort: is_root desc"
    assert await run(api, dims) == [{"is_root": True, "n": 2}, {"is_root": False, "n": 2}]


async def test_traces_and_summary_shapes(api: Api, pid: str) -> None:
    traces = f"SELECT id FROM project_logs('{pid}', shape => 'traces') WHERE span_attributes.name = 'tool'"
    assert await ids(api, traces) == ["r1", "c1", "c2"]
    summary = await run(api, f"select: * | from: project_logs('{pid}') summary")
    assert [r["id"] for r in summary] == ["r1", "r2"]
    first, second = summary
    assert first["scores"] == {"response quality": 1.0, "acc": 0.75}
    assert first["metrics"] == {"start": 5, "end": 25, "prompt_tokens": 7, "cost": 7, "completion_tokens": 6}
    assert first["metadata"] == EVENTS[0]["metadata"] and first["span_attributes"]["name"] == "root"
    assert second["scores"] == {"acc": 0.25} and second["metrics"] == {"start": 1, "end": 4, "tokens": 9}
    filtered = (
        "SELECT id, scores.acc AS acc, metrics.end - metrics.start AS took"
        f" FROM project_logs('{pid}', shape => 'summary') WHERE span_attributes.type = 'llm'"
    )
    assert await run(api, filtered) == [{"id": "r1", "acc": 0.75, "took": 20}]
    counted = (
        f"from: project_logs('{pid}') summary | measures: sum(metrics.prompt_tokens) AS t, count(1) AS n"
    )
    assert await run(api, counted) == [{"t": 7, "n": 2}]


async def test_summary_pages_with_a_cursor(api: Api, pid: str) -> None:
    text = f"select: id | from: project_logs('{pid}') summary | limit: 1"
    first = await api.call("POST", "/btql", {"query": text, "fmt": "jsonl"})
    cursor = first.headers["x-bt-cursor"]
    second = await api.call("POST", "/btql", {"query": text, "fmt": "jsonl", "cursor": cursor})
    third = await api.call("POST", "/btql", {"query": text, "fmt": "jsonl", "cursor": second.headers["x-bt-cursor"]})  # fmt: skip
    assert [r["id"] for r in first.lines + second.lines] == ["r1", "r2"] and third.lines == []


async def test_text_cursor_in_body_or_clause(api: Api, pid: str) -> None:
    text = f"SELECT id FROM project_logs('{pid}') LIMIT 3"
    first = await api.call("POST", "/btql", {"query": text, "fmt": "jsonl"})
    cursor = first.headers["x-bt-cursor"]
    rest = await api.call("POST", "/btql", {"query": text, "fmt": "jsonl", "cursor": cursor})
    assert [r["id"] for r in first.lines + rest.lines] == ["r1", "c1", "c2", "r2"]
    clause = f"select: id | from: project_logs('{pid}') | limit: 3 | cursor: '{cursor}'"
    assert await ids(api, clause) == ["r2"]
    both = f"select: id | from: project_logs('{pid}') | sort: id | cursor: '{cursor}'"
    reply = await api.call("POST", "/btql", {"query": both})
    assert reply.status == 400 and "cursors page in the server's own order" in reply.text
    reply = await api.call("POST", "/btql", {"query": f"SELECT id FROM project_logs('{pid}') ORDER BY id", "cursor": cursor})  # fmt: skip
    assert reply.status == 400 and "drop 'sort'" in reply.text


async def test_text_and_parsed_queries_agree(api: Api, pid: str) -> None:
    parsed = {
        "from": from_object("project_logs", pid, shape="traces"),
        "select": [{"alias": "id", "expr": ident("id")}],
        "filter": binary("eq", ident("metadata", "orgName"), literal("qawolf")),
    }
    text = f"SELECT id FROM project_logs('{pid}', shape => 'traces') WHERE metadata.orgName = 'qawolf'"
    by_object = (await api.btql(parsed, fmt="json")).json["data"]
    assert by_object == await run(api, text) == [{"id": "r1"}, {"id": "c1"}, {"id": "c2"}]


async def test_bad_text_queries_say_what_and_where(api: Api, pid: str) -> None:
    other = await api.ok("POST", "/v1/project", {"name": "foreign"}, key=api.emulator.other_org_key)
    unknown_id = "00000000-0000-4000-8000-000000000000"
    cases = [
        (f"SELECT id FROM project_logs('{pid}') WHERE (id = 'a'", "line 1"),
        (f"select: id\nfrom: project_logs('{pid}')\nfilter: id = = 'a'", "line 3"),
        (f"SELECT frob(id) FROM project_logs('{pid}')", "unknown function 'frob'"),
        (f"select: id | from: project_logs('{pid}') | having: id", "unsupported clause 'having' at line 1"),
        (f"SELECT id FROM project_logs('{pid}') a JOIN dataset('x') b ON a.id = b.id", "unsupported clause 'join'"),
        (f"SELECT count(1) FROM project_logs('{pid}') GROUP BY id ORDER BY bogus", "sorts by one of its dimensions"),
        (f"SELECT id FROM nowhere('{pid}')", "nowhere"),
    ]  # fmt: skip
    for text, message in cases:
        reply = await api.call("POST", "/btql", {"query": text})
        assert reply.status == 400 and message in reply.text, (text, reply.status, reply.text)
    replies = {}
    for object_id in (unknown_id, other["id"]):
        reply = await api.call("POST", "/btql", {"query": f"SELECT id FROM project_logs('{object_id}')"})
        replies[object_id] = (reply.status, reply.text.replace(object_id, "<id>"))
    assert replies[unknown_id] == replies[other["id"]] == (400, "query.from: unknown project id '<id>'")
