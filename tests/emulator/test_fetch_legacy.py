"""The legacy fetch (``GET/POST /v1/{type}/{id}/fetch``) as the spec describes it: the version
history newest first by ``(_xact_id, root_span_id)``, ``limit`` counting traces
(``FetchLimitParam``), pages continued by ``cursor`` or by the old ``max_xact_id`` +
``max_root_span_id`` pair (``MaxXactId``), ``version`` pinning a snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.emulator import query as emulator_query
from tests.emulator.conftest import Api


def _span(span: str, root: str, **fields: Any) -> dict[str, Any]:
    parents = {"span_parents": [root]} if span != root else {}
    return {"id": span, "span_id": span, "root_span_id": root, "input": span, **parents, **fields}


@dataclass
class History:
    project_id: str
    xacts: list[str]  # the _xact_id of the four writes that left rows
    # the spec's history walk: (xact index, root span, row ids in the page), latest first
    pairs: list[tuple[int, str, list[str]]]


@pytest.fixture
async def history(api: Api) -> History:
    pid = (await api.project())["id"]
    writes = [
        [_span("ta", "ta"), _span("ta-1", "ta"), _span("ta-2", "ta"), _span("tb", "tb"), _span("tb-1", "tb")],
        [_span("tc", "tc")],
        [_span("ta-1", "ta", input="ta-1 again")],
        [_span("td", "td"), _span("td-1", "td")],
        [{"id": "tb-1", "_object_delete": True}],
    ]
    for events in writes:
        await api.insert("project_logs", pid, events)
    rows = (await api.ok("POST", f"/v1/project_logs/{pid}/fetch", {"limit": 1000}))["events"]
    xacts = sorted({r["_xact_id"] for r in rows}, key=int)
    pairs = [(3, "td", ["td-1", "td"]), (2, "ta", ["ta-1"]), (1, "tc", ["tc"]), (0, "tb", ["tb"]),
             (0, "ta", ["ta-2", "ta-1", "ta"])]  # fmt: skip
    return History(pid, xacts, pairs)


def _page(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["_xact_id"], e["root_span_id"], e["id"]) for e in events]


def _expected(history: History, pairs: list[tuple[int, str, list[str]]]) -> list[tuple[str, str, str]]:
    return [(history.xacts[x], root, row) for x, root, rows in pairs for row in rows]


async def test_limit_counts_traces_and_the_cursor_walks_the_history(api: Api, history: History) -> None:
    path = f"/v1/project_logs/{history.project_id}/fetch"
    for limit in (1, 2, 3):
        pages = []
        cursor = None
        while True:
            page = await api.ok("POST", path, {"limit": limit, **({"cursor": cursor} if cursor else {})})
            if not page["events"]:
                assert page["cursor"] is None
                break
            pages.append(_page(page["events"]))
            cursor = page["cursor"]
        chunks = [history.pairs[i : i + limit] for i in range(0, len(history.pairs), limit)]
        assert pages == [_expected(history, chunk) for chunk in chunks], limit


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_the_old_max_cursor_returns_the_next_page(api: Api, history: History, method: str) -> None:
    path = f"/v1/project_logs/{history.project_id}/fetch"
    pages = []
    bound: dict[str, str] = {}
    for _ in range(len(history.pairs) + 1):
        params = {"limit": "1" if method == "GET" else 1, **bound}
        page = await api.ok(method, path, params if method == "POST" else None, params=params if method == "GET" else None)  # fmt: skip
        if not page["events"]:
            break
        pages.append(_page(page["events"]))
        earliest = min((int(e["_xact_id"]), e["root_span_id"]) for e in page["events"])
        bound = {"max_xact_id": str(earliest[0]), "max_root_span_id": earliest[1]}
    assert pages == [_expected(history, [pair]) for pair in history.pairs]


async def test_version_pins_the_history_and_combines_with_the_old_cursor(api: Api, history: History) -> None:
    path = f"/v1/project_logs/{history.project_id}/fetch"
    at_second = history.xacts[1]
    page = await api.ok("POST", path, {"limit": 10, "version": at_second})
    # tb-1 was live then; ta-1's rewrite and td came later
    assert _page(page["events"]) == [
        (history.xacts[1], "tc", "tc"),
        (history.xacts[0], "tb", "tb-1"), (history.xacts[0], "tb", "tb"),
        (history.xacts[0], "ta", "ta-2"), (history.xacts[0], "ta", "ta-1"), (history.xacts[0], "ta", "ta"),
    ]  # fmt: skip
    below = {"limit": 1, "version": at_second, "max_xact_id": history.xacts[0], "max_root_span_id": "tb"}
    assert _page((await api.ok("POST", path, below))["events"]) == _expected(history, [history.pairs[-1]])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_xact_id": "1000000000000000001"}, "max_xact_id, max_root_span_id: pass both"),
        ({"max_root_span_id": "ta"}, "max_xact_id, max_root_span_id: pass both"),
        ({"max_xact_id": "soon", "max_root_span_id": "ta"}, "max_xact_id: 'soon' is not a transaction id"),
        ({"cursor": "!!"}, "malformed cursor"),
        ({"limit": -1}, "limit: -1 is out of range (0 or more)"),
        ({"limit": 1.5}, "limit: expected an integer"),
        ({"frobnicate": 1}, "unknown field 'frobnicate'"),
    ],
)
async def test_fetch_errors_name_the_parameter(api: Api, history: History, body: dict[str, Any], message: str) -> None:  # fmt: skip
    reply = await api.call("POST", f"/v1/project_logs/{history.project_id}/fetch", body)
    assert reply.status == 400 and message in reply.text, reply.text


async def test_a_btql_cursor_is_not_a_fetch_cursor(api: Api, history: History) -> None:
    query = {"from": {"op": "function", "name": {"op": "ident", "name": ["project_logs"]},
                      "args": [{"op": "literal", "value": history.project_id}]}, "limit": 1}  # fmt: skip
    btql_cursor = (await api.btql(query)).json["cursor"]
    reply = await api.call("POST", f"/v1/project_logs/{history.project_id}/fetch", {"cursor": btql_cursor})
    assert reply.status == 400 and "malformed cursor" in reply.text


async def test_limit_takes_what_the_spec_allows(
    api: Api, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spec's fetch limit is an integer from 0, with no maximum: 0 fetches nothing, and a
    limit beyond the page cap (made 2 traces here) gets a page of the cap, whose cursor goes on."""
    path = f"/v1/project_logs/{history.project_id}/fetch"
    for method in ("POST", "GET"):
        params = {"limit": "0"} if method == "GET" else None
        page = await api.ok(method, path, None if method == "GET" else {"limit": 0}, params=params)
        assert page["events"] == [] and page["cursor"] is None
    monkeypatch.setattr(emulator_query, "MAX_LIMIT", 2)
    capped = await api.ok("POST", path, {"limit": 5000})
    assert capped == await api.ok("POST", path, {"limit": 2})
    assert capped == await api.ok("GET", path, params={"limit": "1001"})
    assert _page(capped["events"]) == _expected(history, history.pairs[:2])
    rest = await api.ok("POST", path, {"limit": 5000, "cursor": capped["cursor"]})
    assert _page(rest["events"]) == _expected(history, history.pairs[2:4])
