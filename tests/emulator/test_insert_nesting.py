"""A row may nest ``MAX_NESTING_DEPTH`` (200) levels of objects and arrays on every insert route;
deeper rows get a 400 naming the limit (never a 500), and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.emulator.nesting import MAX_NESTING_DEPTH, nests_deeper_than
from pipeline.querylang.ast import from_object
from tests.emulator.conftest import Api


def nested(levels: int) -> str:
    """JSON text of a value nesting ``levels`` levels (objects and arrays alternating)."""
    opens, closes = [], []
    for level in range(levels):
        opens.append('{"k":' if level % 2 else "[")
        closes.append("}" if level % 2 else "]")
    return "".join(opens) + '"leaf"' + "".join(reversed(closes))


# Each route's path and body for one row (JSON text) of the project ``pid``.
def _insert(pid: str, row: str) -> tuple[str, str]:
    return f"/v1/project_logs/{pid}/insert", f'{{"events": [{row}]}}'


def _cross_insert(pid: str, row: str) -> tuple[str, str]:
    return "/v1/insert", f'{{"project_logs": {{"{pid}": {{"events": [{row}]}}}}}}'


def _logs3(pid: str, row: str) -> tuple[str, str]:
    keys = f', "project_id": "{pid}", "log_id": "g"}}'
    return "/logs3", f'{{"rows": [{row[:-1]}{keys}], "api_version": 2}}'


ROUTES: dict[str, Callable[[str, str], tuple[str, str]]] = {
    "insert": _insert,
    "cross insert": _cross_insert,
    "logs3": _logs3,
}


def row(levels: int, row_id: str) -> str:
    """A row nesting ``levels`` levels: the row object and ``levels - 1`` in its input."""
    return f'{{"id": "{row_id}", "input": {nested(levels - 1)}}}'


async def stored(api: Api, pid: str) -> dict[str, Any]:
    reply = await api.btql({"from": from_object("project_logs", pid)}, fmt="jsonl")
    assert reply.status == 200, reply.text
    return {r["id"]: r["input"] for r in reply.lines}


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_rows_at_the_limit_are_stored_and_read_back(api: Api, route: str) -> None:
    pid = (await api.project())["id"]
    path, body = ROUTES[route](pid, row(MAX_NESTING_DEPTH, "deep"))
    reply = await api.call("POST", path, raw=body.encode())
    assert reply.status == 200, reply.text
    assert await stored(api, pid) == {"deep": orjson.loads(nested(MAX_NESTING_DEPTH - 1))}
    fetched = await api.ok("POST", f"/v1/project_logs/{pid}/fetch", {"limit": 10})
    assert [e["input"] for e in fetched["events"]] == [orjson.loads(nested(MAX_NESTING_DEPTH - 1))]


@pytest.mark.parametrize("levels", [MAX_NESTING_DEPTH + 1, 260, 5000])
@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_deeper_rows_get_400_naming_the_limit(api: Api, route: str, levels: int) -> None:
    pid = (await api.project())["id"]
    path, body = ROUTES[route](pid, row(levels, "too-deep"))
    reply = await api.call("POST", path, raw=body.encode())
    assert reply.status == 400, reply.text
    assert f"nests deeper than {MAX_NESTING_DEPTH} levels" in reply.text
    assert await stored(api, pid) == {}


async def test_brackets_inside_strings_are_data(api: Api) -> None:
    pid = (await api.project())["id"]
    text = '[{"\\"[' * 300  # brackets, quotes and escapes inside a string
    events = [{"id": "s", "input": text, "metadata": {"k": "]}" * 300}}]
    await api.insert("project_logs", pid, events)
    assert await stored(api, pid) == {"s": text}


def _depth(value: Any) -> int:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(child) for child in children), default=0)
    return 0


_tricky_text = st.text(alphabet='[]{}"\\:,a\n\u2028', max_size=6)
_json = st.recursive(
    st.none() | st.integers() | _tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_json, spaced=st.booleans())
def test_the_byte_level_depth_matches_the_decoded_depth(value: Any, spaced: bool) -> None:
    raw = json.dumps(value, separators=(", ", ": ") if spaced else (",", ":"), ensure_ascii=spaced).encode()
    depth = _depth(value)
    for levels in range(max(depth - 2, 0), depth + 2):
        assert nests_deeper_than(raw, levels) == (depth > levels), (raw, levels)
