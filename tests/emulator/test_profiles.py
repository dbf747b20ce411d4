"""Capability profiles and the row-scan timeout: ``--profile conservative`` refuses, by name,
what no official client sends and serves everything they do; ``--query-timeout-rows N``
answers 504 to a ``/btql`` query whose scan would read more than N rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.emulator.server import RunningServer, ServerConfig
from pipeline.querylang.ast import binary, from_object, function, ident, literal
from tests.conftest import Emulator, emulator_process
from tests.emulator import clients
from tests.emulator.conftest import Api


@pytest.fixture(scope="module")
def conservative_server() -> Iterator[RunningServer]:
    with RunningServer(ServerConfig(port=0, profile="conservative")) as server:
        yield server


@pytest.fixture
async def strict(conservative_server: RunningServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, Emulator(url=conservative_server.url))


async def _seed(api: Api) -> tuple[str, str, str]:
    """A project with two traces written in two requests, and a dataset; returns the ids and
    the version after the first write."""
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [
        {"id": "r1", "span_id": "r1", "root_span_id": "t1", "created": "2026-01-01T00:00:01Z"},
        {"id": "c1", "span_id": "c1", "root_span_id": "t1", "span_parents": ["r1"], "created": "2026-01-01T00:00:02Z"},
    ])  # fmt: skip
    version = (await clients.py_object_fetcher(api, "project_logs", pid))[0]["_xact_id"]
    await api.insert("project_logs", pid, [{"id": "r2", "span_id": "r2", "root_span_id": "t2"}])
    dataset = (await api.dataset(pid))["id"]
    await api.insert("dataset", dataset, [{"id": f"x{i}", "input": i} for i in range(5)])
    return pid, dataset, version


def _named(alias: str, expr: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"alias": alias, "expr": expr}]


def _refusals(pid: str, version: str) -> list[tuple[dict[str, Any], str]]:
    """Bodies the conservative profile refuses, each with the feature its 400 names."""
    src = from_object("project_logs", pid)
    logs = f"project_logs('{pid}')"
    aggregate_xact = "an aggregate over _xact_id"
    compare_xact = "a comparison on _xact_id in a filter"
    pinned = "an aggregate (such as count(1)) at a pinned version"
    min_xact = {"from": src, "measures": _named("v", function("min", ident("_xact_id")))}
    max_by_id = {**min_xact, "dimensions": _named("d", ident("id")), "measures": _named("v", function("max", ident("_xact_id")))}  # fmt: skip
    count = {"from": src, "measures": _named("n", function("count", literal(1)))}
    return [
        ({"query": f"from: {logs} | measures: max(_xact_id) AS v"}, aggregate_xact),
        ({"query": f"SELECT max(_xact_id) AS v FROM {logs}"}, aggregate_xact),
        ({"query": f"SELECT min(_xact_id) AS v, count(1) AS n FROM {logs}"}, aggregate_xact),
        ({"query": min_xact}, aggregate_xact),
        ({"query": max_by_id}, aggregate_xact),
        ({"query": f"select: * | from: {logs} | filter: _xact_id > '{version}'"}, compare_xact),
        ({"query": f"SELECT * FROM {logs} WHERE id = 'r1' AND _xact_id <= {version}"}, compare_xact),
        ({"query": f"select: * | from: {logs} | filter: _xact_id IN ('{version}')"}, compare_xact),
        ({"query": {"from": src, "filter": binary("eq", ident("_xact_id"), literal(version))}}, compare_xact),
        ({"query": f"from: {logs} | measures: count(1) AS n", "version": version}, pinned),
        ({"query": f"SELECT count(1) AS n FROM {logs}", "version": version}, pinned),
        ({"query": count, "version": version}, pinned),
        ({"query": {"from": src, "dimensions": _named("d", ident("id"))}, "version": version}, pinned),
    ]


async def test_conservative_profile_refuses_each_feature_by_name(strict: Api, api: Api) -> None:
    pid, _, version = await _seed(strict)
    for body, feature in _refusals(pid, version):
        reply = await strict.call("POST", "/btql", body)
        assert reply.status == 400, (body, reply.text)
        assert feature in reply.text and "is refused by the conservative profile" in reply.text, reply.text
    default_pid, _, default_version = await _seed(api)
    for body, _feature in _refusals(default_pid, default_version):
        reply = await api.call("POST", "/btql", body)
        assert reply.status == 200, (body, reply.text)


async def test_conservative_profile_serves_what_the_official_clients_send(strict: Api) -> None:
    pid, dataset, version = await _seed(strict)
    assert [r["id"] for r in await clients.py_object_fetcher(strict, "project_logs", pid, limit=1)] == ["r1", "c1", "r2"]  # fmt: skip
    pinned = await clients.py_object_fetcher(strict, "project_logs", pid, limit=1, version=version)
    assert [r["id"] for r in pinned] == ["r1", "c1"]
    assert [r["id"] for r in await clients.py_span_fetcher(strict, pid, "t1")] == ["c1"]
    expected = [f"x{i}" for i in range(5)]
    assert [r["id"] for r in await clients.js_dataset_iteration(strict, dataset, limit=2)] == expected
    assert [r["id"] for r in await clients.walkthrough(strict, dataset, limit=2)] == expected
    assert [r["id"] for r in await clients.bt_sync(strict, pid, 2, filter_text="created >= '2026-01-01T00:00:02Z'")] == ["r2", "c1"]  # fmt: skip
    for sql in (False, True):
        keyset = await clients.migrate_keyset(strict, f"project_logs('{pid}')", 1, created_after="2026-01-01T00:00:01Z", sql=sql)  # fmt: skip
        assert [r["id"] for r in keyset] == ["r1", "c1", "r2"]
    counted = await strict.call(
        "POST", "/btql", {"query": f"SELECT count(1) AS n FROM project_logs('{pid}')"}
    )
    assert counted.json["data"] == [{"n": 3}]  # aggregates without a pinned version are fine


def test_profiles_and_limits_are_checked_when_configured() -> None:
    with pytest.raises(ValueError, match="unknown profile 'lenient'"):
        ServerConfig(profile="lenient")
    with pytest.raises(ValueError, match="query_timeout_rows must be 0 or more"):
        ServerConfig(query_timeout_rows=-1)


# -- the row-scan timeout ---------------------------------------------------------------------

#: The busy deployment's budget: rows one query may read.
BUDGET = 40


@pytest.fixture(scope="module")
def busy_server() -> Iterator[RunningServer]:
    with RunningServer(ServerConfig(port=0, query_timeout_rows=BUDGET)) as server:
        yield server


@pytest.fixture
async def busy(busy_server: RunningServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, Emulator(url=busy_server.url))


async def _big_project(api: Api) -> str:
    """100 live rows in 100 row versions, then 10 of them rewritten (110 versions in all)."""
    pid = (await api.project())["id"]
    await api.insert("project_logs", pid, [{"id": f"r{i:03d}", "input": i, "metadata": {"g": i % 10}} for i in range(100)])  # fmt: skip
    await api.insert("project_logs", pid, [{"id": f"r{i:03d}", "input": -i} for i in range(0, 100, 10)])
    return pid


async def test_a_query_scanning_past_the_budget_gets_504(busy: Api) -> None:
    pid = await _big_project(busy)
    src = from_object("project_logs", pid)
    over = [
        {"query": {"from": src, "measures": [{"alias": "n", "expr": function("count", literal(1))}]}},
        # rows read count, not rows returned: this filter matches nothing
        {"query": {"from": src, "filter": binary("eq", ident("metadata", "g"), literal(99)), "limit": 5}},
        {"query": f"select: * | from: project_logs('{pid}') | sort: input desc | limit: 1"},
        {"query": f"select: * | from: project_logs('{pid}') traces | filter: metadata.g = 3 | limit: 5"},
        {"query": {"from": src, "limit": 100}},
    ]
    for body in over:
        reply = await busy.call("POST", "/btql", body)
        assert reply.status == 504, (body, reply.status, reply.text)
        assert f"query timed out: it would read more than {BUDGET} rows" in reply.text


async def test_paged_reads_scan_only_their_page(busy: Api) -> None:
    pid = await _big_project(busy)
    live = [f"r{i:03d}" for i in range(100) if i % 10] + [f"r{i:03d}" for i in range(0, 100, 10)]
    paged = await clients.py_object_fetcher(busy, "project_logs", pid, limit=20)
    assert [r["id"] for r in paged] == live
    assert [r["id"] for r in await clients.bt_sync(busy, pid, 20)] == list(reversed(live))
    keyset = await clients.migrate_keyset(busy, f"project_logs('{pid}')", 30)
    assert [r["id"] for r in keyset] == live
    one = await busy.call("POST", "/btql", {"query": {"from": from_object("project_logs", pid), "filter": binary("eq", ident("root_span_id"), literal("none"))}})  # fmt: skip
    assert one.status == 200 and one.json["data"] == []  # the trace index skips every other row


async def test_a_range_of_pagination_keys_scans_only_the_range(busy: Api) -> None:
    """Several bounds on ``_pagination_key`` (a run's watermark, then a range's own, then a
    cursor's): the scan starts at the tightest, whatever their order or nesting, as a real
    deployment's index would; only the rows of the range are read."""
    pid = await _big_project(busy)
    src = from_object("project_logs", pid)
    keys = [
        r["_pagination_key"] for r in await clients.py_object_fetcher(busy, "project_logs", pid, limit=20)
    ]
    low, start, end = keys[5], keys[70], keys[90]

    def key(op: str, value: str) -> dict[str, Any]:
        return binary(op, ident("_pagination_key"), literal(value))

    shapes = [
        {
            "op": "and",
            "children": [key("gt", low), {"op": "and", "children": [key("gt", start), key("le", end)]}],
        },
        {"op": "and", "children": [key("gt", low), key("gt", start), key("le", end), key("lt", keys[-1])]},
        {
            "op": "and",
            "left": key("le", end),
            "right": {"op": "and", "left": key("gt", low), "right": key("gt", start)},
        },
    ]
    for shape in shapes:
        first = await busy.call("POST", "/btql", {"query": {"from": src, "filter": shape, "limit": 10}})
        assert first.status == 200, (shape, first.text)
        assert [r["_pagination_key"] for r in first.json["data"]] == keys[71:81]
        body = {"query": {"from": src, "filter": shape, "limit": 10, "cursor": first.json["cursor"]}}
        second = await busy.call("POST", "/btql", body)
        assert [r["_pagination_key"] for r in second.json["data"]] == keys[81:91]


async def test_a_shorter_client_timeout_shrinks_the_budget(busy: Api) -> None:
    pid = await _big_project(busy)
    page = {"from": from_object("project_logs", pid), "limit": 30}  # reads 30 to 33 rows
    assert (await busy.btql(page)).status == 200
    assert (await busy.btql(page, query_timeout_seconds=120)).status == 200  # cannot lengthen it
    halved = await busy.btql(page, query_timeout_seconds=15)  # 15 s of 30: 20 rows
    assert halved.status == 504 and "more than 20 rows" in halved.text


def test_the_command_takes_both_flags(tmp_path: Path) -> None:
    import requests

    with emulator_process(tmp_path / "e.db", "--profile", "conservative", "--query-timeout-rows", "3") as url:
        headers = {"Authorization": "Bearer bt-local-key"}
        pid = requests.post(f"{url}/v1/project", json={"name": "p"}, headers=headers, timeout=30).json()["id"]
        events = {"events": [{"id": f"r{i}"} for i in range(5)]}
        requests.post(f"{url}/v1/project_logs/{pid}/insert", json=events, headers=headers, timeout=30).raise_for_status()  # fmt: skip

        def btql(query: str) -> requests.Response:
            return requests.post(f"{url}/btql", json={"query": query}, headers=headers, timeout=30)

        refused = btql(f"SELECT max(_xact_id) FROM project_logs('{pid}')")
        assert refused.status_code == 400 and "conservative profile" in refused.text
        assert btql(f"select: id | from: project_logs('{pid}') | limit: 2").status_code == 200
        assert btql(f"select: id | from: project_logs('{pid}')").status_code == 504
