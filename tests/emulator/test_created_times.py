"""``created`` is a time: any ISO-8601 spelling in, one canonical UTC spelling out, and filters
and sorts (BTQL text, SQL, parsed queries) compare instants, not texts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.querylang.ast import binary, from_object, function, ident, literal
from tests.emulator.conftest import Api

# id -> created as written; the instant in a comment. b, d, e are the same instant.
WRITTEN = {
    "a": "2026-01-01T00:03:19.999Z",  # 00:03:19.999
    "b": "2026-01-01T00:03:20.000Z",  # 00:03:20
    "c": "2026-01-01T00:03:20.000001+00:00",  # 00:03:20.000001 (the Python SDK's spelling)
    "d": "2026-01-01T05:03:20+05:00",  # 00:03:20
    "e": "2026-01-01T00:03:20Z",  # 00:03:20
    "f": "2025-12-31T19:03:21-05:00",  # 00:03:21
    "g": "2026-01-01 00:03:20.5",  # 00:03:20.5 (no offset: UTC)
}
READ_BACK = {
    "a": "2026-01-01T00:03:19.999Z",
    "b": "2026-01-01T00:03:20.000Z",
    "c": "2026-01-01T00:03:20.000001Z",
    "d": "2026-01-01T00:03:20.000Z",
    "e": "2026-01-01T00:03:20.000Z",
    "f": "2026-01-01T00:03:21.000Z",
    "g": "2026-01-01T00:03:20.500Z",
}
EXPECTED = {
    "ge": {"b", "c", "d", "e", "f", "g"},
    "gt": {"c", "f", "g"},
    "le": {"a", "b", "d", "e"},
    "lt": {"a"},
    "eq": {"b", "d", "e"},
    "ne": {"a", "c", "f", "g"},
}
OPERATORS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "eq": "=", "ne": "!="}
#: Spellings of 2026-01-01T00:03:20 UTC a filter may use.
SPELLINGS = [
    "2026-01-01T00:03:20Z", "2026-01-01T00:03:20.000Z", "2026-01-01T00:03:20.000000+00:00",
    "2026-01-01T05:03:20+05:00", "2025-12-31T14:33:20-09:30", "2026-01-01T00:03:20",
]  # fmt: skip


@pytest.fixture
async def pid(api: Api) -> str:
    project_id = (await api.project())["id"]
    await api.insert("project_logs", project_id, [{"id": i, "created": c} for i, c in WRITTEN.items()])
    return project_id


async def rows(api: Api, query: Any) -> list[dict[str, Any]]:
    reply = await api.call("POST", "/btql", {"query": query})
    assert reply.status == 200, (query, reply.text)
    data: list[dict[str, Any]] = reply.json["data"]
    return data


async def test_created_reads_back_in_the_canonical_spelling(api: Api, pid: str) -> None:
    found = {r["id"]: r["created"] for r in await rows(api, f"select: * | from: project_logs('{pid}')")}
    assert found == READ_BACK


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_comparisons_compare_instants_in_every_syntax(api: Api, pid: str, spelling: str) -> None:
    for op, expected in EXPECTED.items():
        btql = f"select: id | from: project_logs('{pid}') | filter: created {OPERATORS[op]} '{spelling}'"
        sql = f"SELECT id FROM project_logs('{pid}') WHERE created {OPERATORS[op]} '{spelling}'"
        parsed = {"from": from_object("project_logs", pid), "filter": binary(op, ident("created"), literal(spelling))}  # fmt: skip
        for query in (btql, sql, parsed):
            assert {r["id"] for r in await rows(api, query)} == expected, (op, query)
    mirrored = f"select: id | from: project_logs('{pid}') | filter: '{spelling}' <= created"
    assert {r["id"] for r in await rows(api, mirrored)} == EXPECTED["ge"]


async def test_sorts_lists_and_aggregates_use_the_instant(api: Api, pid: str) -> None:
    by_time = ["a", "b", "d", "e", "c", "g", "f"]  # ties keep the write order
    asc = await rows(api, f"select: id | from: project_logs('{pid}') | sort: created asc")
    assert [r["id"] for r in asc] == by_time
    desc = await rows(api, f"SELECT id FROM project_logs('{pid}') ORDER BY created DESC, id DESC")
    assert [r["id"] for r in desc] == ["f", "g", "c", "e", "d", "b", "a"]
    listed = f"select: id | from: project_logs('{pid}') | filter: created IN ('2026-01-01T05:03:21+05:00', '2026-01-01T00:03:19.999000Z')"  # fmt: skip
    assert {r["id"] for r in await rows(api, listed)} == {"a", "f"}
    extremes = {
        "from": from_object("project_logs", pid),
        "measures": [
            {"alias": "first", "expr": function("min", ident("created"))},
            {"alias": "last", "expr": function("max", ident("created"))},
        ],
    }
    assert await rows(api, extremes) == [{"first": READ_BACK["a"], "last": READ_BACK["f"]}]
    pattern = f"select: id | from: project_logs('{pid}') | filter: created LIKE '%:20.000Z'"
    assert {r["id"] for r in await rows(api, pattern)} == {"b", "d", "e"}  # patterns match the stored text


async def test_a_literal_that_is_not_a_time_is_refused(api: Api, pid: str) -> None:
    for bad in ("'yesterday'", "17"):
        reply = await api.call("POST", "/btql", {"query": f"select: id | from: project_logs('{pid}') | filter: created > {bad}"})  # fmt: skip
        assert reply.status == 400 and "created compares with ISO-8601 times" in reply.text, reply.text


# -- any spelling, any offset -------------------------------------------------------------------

BASE = datetime(2026, 1, 1, 0, 3, 20, tzinfo=UTC)
#: Instants close together (ties at the millisecond and the microsecond are likely).
instants = st.builds(lambda n: BASE + timedelta(microseconds=250 * n), st.integers(-8, 8))
offsets = st.integers(-14 * 4, 14 * 4).map(lambda quarters: timedelta(minutes=15 * quarters))


@st.composite
def spelled(draw: st.DrawFn, instant: datetime) -> str:
    """``instant`` as some client might write it: any offset, a fraction as long as it needs or
    longer, ``Z`` or ``+00:00`` at UTC, or no offset at all (UTC)."""
    offset = draw(offsets)
    local = instant.astimezone(timezone(offset))
    needed = 0 if not instant.microsecond else 3 if instant.microsecond % 1000 == 0 else 6
    digits = draw(st.sampled_from([d for d in (0, 3, 6) if d >= needed]))
    fraction = f".{local.microsecond:06d}"[: digits + 1] if digits else ""
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + fraction
    if offset:
        return text + local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]
    return text + draw(st.sampled_from(["Z", "+00:00", ""]))


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[tuple[datetime, str]], tuple[datetime, str], str]:
    stamps = draw(st.lists(instants, min_size=1, max_size=8))
    written = [(t, draw(spelled(t))) for t in stamps]
    pivot = draw(instants)
    return written, (pivot, draw(spelled(pivot))), draw(st.sampled_from(sorted(OPERATORS)))


def _holds(op: str, left: datetime, right: datetime) -> bool:
    return {"ge": left >= right, "gt": left > right, "le": left <= right, "lt": left < right,
            "eq": left == right, "ne": left != right}[op]  # fmt: skip


def _canonical(instant: datetime) -> str:
    naive = instant.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds" if naive.microsecond % 1000 else "milliseconds") + "Z"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
async def test_mixed_spellings_filter_and_sort_as_instants(api: Api, case: Any) -> None:
    written, (pivot, pivot_text), op = case
    pid = (await api.project())["id"]
    await api.insert(
        "project_logs", pid, [{"id": f"r{i}", "created": text} for i, (_, text) in enumerate(written)]
    )
    stored = await rows(api, f"select: id, created | from: project_logs('{pid}') | sort: created asc")
    by_time = sorted(range(len(written)), key=lambda i: (written[i][0], i))
    assert [(r["id"], r["created"]) for r in stored] == [
        (f"r{i}", _canonical(written[i][0])) for i in by_time
    ]
    filtered = await rows(api, f"select: id | from: project_logs('{pid}') | filter: created {OPERATORS[op]} '{pivot_text}'")  # fmt: skip
    assert {r["id"] for r in filtered} == {
        f"r{i}" for i, (t, _) in enumerate(written) if _holds(op, t, pivot)
    }
