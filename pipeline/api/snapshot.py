"""A snapshot of one object and the ranges that read it in parallel, through proven requests.

A read is pinned to one version (``_xact_id``): every page of every range passes it, so rows
written, merged or deleted meanwhile do not move rows between pages or ranges, and every row
that existed at that version is read exactly once. The version is the ``_xact_id`` of the
newest row, found as ``bt sync`` finds it: a sort on ``_pagination_key`` (which grows with
every write) with ``limit: 1``. The oldest row comes the same way, and a plain ``count(1)``
(the walkthrough's measure) estimates the size; the three go out together, one round trip.

Ranges split the snapshot into disjoint slices that together cover it: by ``_xact_id`` (equal
slices of write history) where the server serves comparisons on it, else by ``created``
between the oldest and newest rows' times, the first range open below and the last open
above, so a row with any ``created`` falls in exactly one range. Incremental runs select rows
written since the last run by ``_xact_id`` where served, else by ``_pagination_key``
(``braintrust-migrate``'s keyset).

When the server counts at a pinned version (a probed capability), :func:`count_at` gives the
exact number of rows the snapshot holds; the export compares what it wrote against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio

from pipeline.api.btql import SHRINK_STATUSES, run_query
from pipeline.api.capabilities import Capabilities, capabilities
from pipeline.api.client import BadRequestError, BraintrustClient, PageTooLargeError
from pipeline.querylang.ast import Expr, Query, all_of, binary, function, ident, literal

RangeField = Literal["_xact_id", "created"]


@dataclass(frozen=True)
class Snapshot:
    """What planning learned about one object (``version`` None: it holds no row)."""

    version: str | None
    newest_key: str | None = None  # _pagination_key of the newest row: the keyset watermark
    oldest_version: str | None = None
    oldest_created: str | None = None
    newest_created: str | None = None
    estimate: int | None = None  # rows the read selects now, unpinned: sizes the ranges only


@dataclass(frozen=True)
class Range:
    """A slice of one object: ``low < _xact_id <= high``, or ``low <= created < high``.

    A missing bound is open; the bounds of consecutive ranges meet, so ranges never overlap.
    """

    by: RangeField = "_xact_id"
    low: str | None = None
    high: str | None = None

    def expr(self) -> Expr | None:
        lower, upper = ("gt", "le") if self.by == "_xact_id" else ("ge", "lt")
        return all_of(
            None if self.low is None else binary(lower, ident(self.by), literal(self.low)),
            None if self.high is None else binary(upper, ident(self.by), literal(self.high)),
        )


@dataclass(frozen=True)
class Since:
    """Where the last run stopped: its version and its newest ``_pagination_key``."""

    version: str | None = None
    key: str | None = None

    def bound(self, caps: Capabilities) -> tuple[str | None, str | None]:
        """(field, value) that rows written after the last run exceed, by the means the server
        serves; (None, None) reads everything (a watermark lacking the key the server needs
        reads everything again, which is correct, only slower)."""
        if caps.xact_filters and self.version is not None:
            return "_xact_id", self.version
        if self.key is not None:
            return "_pagination_key", self.key
        return None, None

    def expr(self, caps: Capabilities) -> Expr | None:
        return since_expr(*self.bound(caps))


def since_expr(field: str | None, value: str | None) -> Expr | None:
    """``field > value``, or None when there is no bound."""
    if field is None or value is None:
        return None
    return binary("gt", ident(field), literal(value))


def _edge(source: dict[str, Any], direction: str) -> Query:
    return {
        "from": source,
        "select": [
            {"alias": name, "expr": ident(name)} for name in ("_xact_id", "_pagination_key", "created")
        ],
        "sort": [{"expr": ident("_pagination_key"), "dir": direction}],
        "limit": 1,
    }


def counted(source: dict[str, Any], filter_expr: Expr | None) -> Query:
    query: Query = {"from": source, "measures": [{"alias": "n", "expr": function("count", literal(1))}]}
    if filter_expr is not None:
        query["filter"] = filter_expr
    return query


def _count(data: list[dict[str, Any]]) -> int:
    return int(data[0].get("n") or 0) if data else 0


async def take_snapshot(
    client: BraintrustClient, source: dict[str, Any], filter_expr: Expr | None
) -> Snapshot:
    """The newest and oldest rows of the whole object and an estimate of the rows
    ``filter_expr`` selects, in one round trip."""
    whole = {k: v for k, v in source.items() if k != "shape"}
    found: dict[str, Any] = {}

    async def edge(name: str, direction: str) -> None:
        data = (await run_query(client, _edge(whole, direction))).json()["data"]
        found[name] = data[0] if data else None

    async def estimate() -> None:
        try:
            response = await client.post_raw(
                "/btql", _body(counted(source, filter_expr)), shrink_on=SHRINK_STATUSES
            )
        except (PageTooLargeError, BadRequestError):  # a scan too big for the server: unknown
            found["estimate"] = None
        else:
            found["estimate"] = _count(response.json()["data"])

    async with anyio.create_task_group() as tg:
        tg.start_soon(edge, "newest", "desc")
        tg.start_soon(edge, "oldest", "asc")
        tg.start_soon(estimate)
    newest, oldest = found["newest"], found["oldest"]
    if newest is None:
        return Snapshot(version=None, estimate=found["estimate"])
    return Snapshot(
        version=str(newest["_xact_id"]),
        newest_key=newest.get("_pagination_key"),
        oldest_version=None if oldest is None else str(oldest["_xact_id"]),
        oldest_created=None if oldest is None else oldest.get("created"),
        newest_created=newest.get("created"),
        estimate=found["estimate"],
    )


def _body(query: Query) -> bytes:
    from pipeline.common import jsoncodec

    return jsoncodec.dumps({"query": query, "fmt": "json"})


async def count_at(
    client: BraintrustClient, source: dict[str, Any], filter_expr: Expr | None, version: str
) -> int:
    """The exact number of rows ``filter_expr`` selects at ``version`` (needs
    ``Capabilities.count_at_version``)."""
    return _count((await run_query(client, counted(source, filter_expr), version=version)).json()["data"])


async def count_now_and_at(
    client: BraintrustClient, source: dict[str, Any], filter_expr: Expr | None, version: str
) -> list[int]:
    """[rows now, rows at ``version``], asked together after ``version`` was found: fewer rows
    now means deletes newer than every visible row (inserts and merges only add or keep)."""
    found: dict[str, int] = {}

    async def ask(name: str, at: str | None) -> None:
        found[name] = _count(
            (await run_query(client, counted(source, filter_expr), version=at)).json()["data"]
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, "now", None)
        tg.start_soon(ask, "at", version)
    return [found["now"], found["at"]]


def plan_ranges(snap: Snapshot, wanted: int, caps: Capabilities, since: Since) -> list[Range]:
    """Up to ``wanted`` disjoint ranges covering the snapshot (see the module docstring)."""
    if snap.version is None:
        return []
    if caps.xact_filters:
        low = since.version if since.version is not None else None
        start_text = low if low is not None else snap.oldest_version
        if wanted <= 1 or start_text is None:
            return [Range("_xact_id", low, snap.version)]
        start = int(start_text) - (0 if low is not None else 1)
        span = int(snap.version) - start
        count = min(wanted, span)
        if count <= 1:
            return [Range("_xact_id", low, snap.version)]
        bounds = [start + (span * i) // count for i in range(count + 1)]
        ranges = [Range("_xact_id", str(bounds[i]), str(bounds[i + 1])) for i in range(count)]
        return [Range("_xact_id", low, ranges[0].high), *ranges[1:]]
    times = _created_bounds(snap, wanted)
    if not times:
        return [Range("created")]
    edges: list[str | None] = [None, *times, None]
    return [Range("created", edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def _created_bounds(snap: Snapshot, wanted: int) -> list[str]:
    """``wanted - 1`` inner boundaries spread evenly between the oldest and newest rows'
    ``created`` times, as ISO 8601 UTC text; none when the times are unknown or equal."""
    if wanted <= 1 or not snap.oldest_created or not snap.newest_created:
        return []
    try:
        low = _parse_time(snap.oldest_created)
        high = _parse_time(snap.newest_created)
    except ValueError:
        return []
    if high <= low:
        return []
    step = (high - low) / wanted
    cuts = sorted({low + step * i for i in range(1, wanted)})
    return [_format_time(t) for t in cuts if low < t <= high]


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("a time without an offset")
    return value


def _format_time(value: datetime) -> str:
    return (value - (value.utcoffset() or timedelta(0))).replace(tzinfo=None).isoformat(
        timespec="microseconds"
    ) + "Z"


@dataclass(frozen=True)
class PinnedRead:
    """How to read one query at one point in time: the ``version`` to pass (None: the object
    holds no row) and its rows, exactly at that version when ``exact``, else as counted just
    before (for progress and confirmations only)."""

    version: str | None
    rows: int | None
    exact: bool


async def pin_read(client: BraintrustClient, query: Query) -> PinnedRead:
    """Snapshot what ``query`` reads (its ``from`` and ``filter``), for a sequential read."""
    source, filter_expr = query["from"], query.get("filter")
    caps = await capabilities(client, source)
    snap = await take_snapshot(client, source, filter_expr)
    if snap.version is None:
        return PinnedRead(None, 0, True)
    if caps.count_at_version:
        return PinnedRead(snap.version, await count_at(client, source, filter_expr, snap.version), True)
    return PinnedRead(snap.version, snap.estimate, False)
