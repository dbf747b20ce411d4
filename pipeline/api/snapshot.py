"""A snapshot of one object and the ranges that read it in parallel, through proven requests.

A read is pinned to one version (``_xact_id``): every page of every range passes it, so rows
written, merged or deleted meanwhile do not move rows between pages or ranges, and every row
that existed at that version is read exactly once. The version is the ``_xact_id`` of the
newest row, found as ``bt sync`` finds it: a sort on ``_pagination_key`` (which grows with
every write) with ``limit: 1``. The oldest row comes the same way and a plain ``count(1)``
(the walkthrough's measure) estimates the size; all go out together, one round trip.

Ranges split the snapshot into disjoint slices that together cover it: by ``_pagination_key``
(``braintrust-migrate``'s keyset filter), between the oldest and newest rows' keys where those
are a prefix and a fixed-width number, as a server writing in order makes them (a key per row
version, so equal slices hold about equal rows); else by ``_xact_id`` (equal slices of write
history, however many rows each version wrote) where the server serves comparisons on it;
else by ``created`` between its earliest and latest values, found by sorts on it
(as the Python SDK's span fetcher sorts; one more round trip). The first range is open below
and the last open above, so every row falls in exactly one range whatever its key or time.
Incremental runs select rows written since the last run by ``_xact_id`` where served, else by
``_pagination_key``.

When the server counts at a pinned version (a probed capability), :func:`count_now_and_at`
gives the exact number of rows the snapshot holds; the export compares what it wrote against it.

Deletes leave no visible row, so when an object's newest writes are deletes the newest row
predates them and a read pinned at its version brings the deleted rows back. Rows counted now,
just after the version was found, show it: inserts and merges only add or keep rows, so fewer
rows now than at the version means deletes newer than it (:func:`count_now_and_at`). Where
the server counts at a version that is known before reading; elsewhere only once the pinned
read has written more rows than were counted now.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio

from pipeline.api.btql import SHRINK_STATUSES, TIMED_OUT, answer_rows, request_body, run_query
from pipeline.api.capabilities import Capabilities, capabilities
from pipeline.api.client import BadRequestError, BraintrustClient, PageTooLargeError
from pipeline.querylang.ast import Expr, Query, all_of, binary, function, ident, literal

RangeField = Literal["_xact_id", "_pagination_key", "created"]


@dataclass(frozen=True)
class Snapshot:
    """What planning learned about one object (``version`` None: it holds no row)."""

    version: str | None
    newest_key: str | None = None  # _pagination_key of the newest row: the keyset watermark
    oldest_key: str | None = None  # _pagination_key of the oldest row: where key ranges start
    oldest_version: str | None = None  # _xact_id of the oldest row: where _xact_id ranges start
    earliest_created: str | None = None  # the span created ranges split (see take_snapshot)
    latest_created: str | None = None
    estimate: int | None = None  # rows the read selects now, unpinned: sizes the ranges only


@dataclass(frozen=True)
class Range:
    """A slice of one object: ``low < _xact_id <= high``, ``low < _pagination_key <= high`` or
    ``low <= created < high``.

    A missing bound is open; the bounds of consecutive ranges meet, so ranges never overlap.
    """

    by: RangeField = "_xact_id"
    low: str | None = None
    high: str | None = None

    def expr(self) -> Expr | None:
        lower, upper = ("ge", "lt") if self.by == "created" else ("gt", "le")
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


def _created_edge(source: dict[str, Any], filter_expr: Expr | None, direction: str) -> Query:
    """The earliest or latest ``created`` of the rows ``filter_expr`` selects: a sort on
    ``created``, as the Python SDK's span fetcher sorts."""
    query: Query = {
        "from": source,
        "select": [{"alias": "created", "expr": ident("created")}],
        "sort": [{"expr": ident("created"), "dir": direction}],
        "limit": 1,
    }
    if filter_expr is not None:
        query["filter"] = filter_expr
    return query


async def take_snapshot(
    client: BraintrustClient,
    source: dict[str, Any],
    filter_expr: Expr | None,
    *,
    by_created: bool | Callable[[], Awaitable[bool]] = False,
) -> Snapshot:
    """The newest and oldest rows of the whole object, an estimate of the rows ``filter_expr``
    selects and, where ranges will split by ``created`` (``by_created``, or what it answers
    when it is a function, asked only then, so the caller may still be probing), the earliest
    and latest ``created`` among them (one more round trip). ``created`` need not grow with the write order (an import keeps a row's time, a
    merge rewrites an old row), so the oldest and newest rows' times bound the rows only by
    chance: they stand in only where the server cannot sort the rows by ``created``."""
    whole = {k: v for k, v in source.items() if k != "shape"}
    found: dict[str, Any] = {}

    async def edge(name: str, direction: str) -> None:
        data = answer_rows(client, await run_query(client, _edge(whole, direction)))
        found[name] = data[0] if data else None

    async def created_edge(name: str, direction: str) -> None:
        found[name] = await _first_if_served(client, _created_edge(whole, filter_expr, direction))

    async def estimate() -> None:
        found["estimate"] = await _count_if_served(client, counted(source, filter_expr))

    async with anyio.create_task_group() as tg:
        tg.start_soon(edge, "newest", "desc")
        tg.start_soon(edge, "oldest", "asc")
        tg.start_soon(estimate)
    newest, oldest = found["newest"], found["oldest"]
    if newest is None:
        return Snapshot(version=None, estimate=found["estimate"])
    keys = (None if oldest is None else oldest.get("_pagination_key"), newest.get("_pagination_key"))
    if key_bounds(*keys, 2) is None and (by_created if isinstance(by_created, bool) else await by_created()):
        async with anyio.create_task_group() as tg:
            tg.start_soon(created_edge, "earliest", "asc")
            tg.start_soon(created_edge, "latest", "desc")
    earliest, latest = found.get("earliest") or oldest, found.get("latest") or newest
    return Snapshot(
        version=str(newest["_xact_id"]),
        newest_key=newest.get("_pagination_key"),
        oldest_key=None if oldest is None else oldest.get("_pagination_key"),
        oldest_version=None if oldest is None else str(oldest["_xact_id"]),
        earliest_created=None if earliest is None else earliest.get("created"),
        latest_created=latest.get("created"),
        estimate=found["estimate"],
    )


async def _first_if_served(client: BraintrustClient, query: Query) -> dict[str, Any] | None:
    """The first row ``query`` selects, unpinned; None when there is none, or when the scan is
    too big for the server (a 500 or 504, not retried) or refused."""
    try:
        response = await client.post_raw("/btql", request_body(query, fmt="json"), shrink_on=SHRINK_STATUSES)
    except (PageTooLargeError, BadRequestError):
        return None
    data = answer_rows(client, response)
    return data[0] if data else None


async def _count_if_served(client: BraintrustClient, query: Query, version: str | None = None) -> int | None:
    """The count ``query`` measures (at ``version``, else unpinned); None when the server
    timed the scan out (a 504, not retried: it would time out again; a 500 is retried, as a
    passing failure) or refused it."""
    try:
        body = request_body(query, fmt="json", version=version)
        response = await client.post_raw("/btql", body, shrink_on=TIMED_OUT)
    except (PageTooLargeError, BadRequestError):
        return None
    return _count(answer_rows(client, response))


async def count_now_and_at(
    client: BraintrustClient,
    source: dict[str, Any],
    filter_expr: Expr | None,
    version: str,
    *,
    at_version: bool,
) -> tuple[int | None, int | None]:
    """(rows now, rows at ``version``), asked together once ``version`` was found; rows at the
    version only when ``at_version`` (the server counts at a pinned version), rows now None
    when the server cannot count them. Fewer rows now than at the version means deletes newer
    than it (see the module docstring); a filter on fields that merges change can make it so
    too, which costs a slower read, never a wrong one."""
    found: dict[str, int | None] = {"at": None}
    query = counted(source, filter_expr)

    async def now() -> None:
        found["now"] = await _count_if_served(client, query)

    async def at() -> None:
        found["at"] = await _count_if_served(client, query, version)

    async with anyio.create_task_group() as tg:
        tg.start_soon(now)
        if at_version:
            tg.start_soon(at)
    return found["now"], found["at"]


def plan_ranges(snap: Snapshot, wanted: int, caps: Capabilities, since: Since) -> list[Range]:
    """Up to ``wanted`` disjoint ranges covering the snapshot (see the module docstring)."""
    if snap.version is None:
        return []
    # Keys first: one per row version, so equal slices of their numbers hold about equal rows;
    # a version may hold any number of rows (one bulk insert can be most of an object).
    start_key = since.key if since.key is not None else snap.oldest_key
    cuts = key_bounds(start_key, snap.newest_key, wanted) if since.version is None or since.key else None
    if cuts is not None:
        if not cuts:
            return [Range("_pagination_key")]
        key_edges: list[str | None] = [None, *cuts, None]
        return [Range("_pagination_key", key_edges[i], key_edges[i + 1]) for i in range(len(key_edges) - 1)]
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


_KEY = re.compile(r"^(\D*)(\d+)$")


def key_bounds(low: str | None, high: str | None, wanted: int) -> list[str] | None:
    """``wanted - 1`` inner boundaries spread evenly between two ``_pagination_key`` values,
    where both are a common prefix and a fixed-width number (as the keys a server writes in
    order are); None when the keys are of another form (then ranges split by ``created``).

    Any key compares with any other as text, so the ranges these bound are disjoint and cover
    every row whatever the keys mean; an even split of the numbers is only the likely one."""
    if low is None or high is None:
        return None
    a, b = _KEY.match(low), _KEY.match(high)
    if a is None or b is None or a.group(1) != b.group(1) or len(a.group(2)) != len(b.group(2)):
        return None
    start, end, width = int(a.group(2)), int(b.group(2)), len(a.group(2))
    if wanted <= 1 or end - start <= 1:
        return []
    count = min(wanted, end - start)
    cuts = sorted({start + (end - start) * i // count for i in range(1, count)})
    return [f"{a.group(1)}{cut:0{width}d}" for cut in cuts]


def _created_bounds(snap: Snapshot, wanted: int) -> list[str]:
    """``wanted - 1`` inner boundaries spread evenly between the snapshot's earliest and
    latest ``created``, as ISO 8601 UTC text; none when the times are unknown or equal."""
    if wanted <= 1 or not snap.earliest_created or not snap.latest_created:
        return []
    try:
        low = _parse_time(snap.earliest_created)
        high = _parse_time(snap.latest_created)
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
    """How to read one query at one point in time: the ``version`` to pass and the rows, exactly
    at that version when ``exact``, else as counted just before (for progress and
    confirmations only). ``version`` None reads without one, as one cursor the server pins at
    its first page: the object holds no row (``rows`` 0), or its newest writes may be deletes."""

    version: str | None
    rows: int | None
    exact: bool


async def pin_read(client: BraintrustClient, query: Query) -> PinnedRead:
    """Snapshot what ``query`` reads (its ``from`` and ``filter``), for a sequential read.

    The read is pinned at the newest row's version only where the server counts at a pinned
    version, which shows whether deletes came after it (see the module docstring). Elsewhere
    a sequential reader, which hands rows on as it reads them, could learn that only once it
    had copied the deleted rows, so it reads without a version."""
    source, filter_expr = query["from"], query.get("filter")
    caps = await capabilities(client, source)
    snap = await take_snapshot(client, source, filter_expr)
    if snap.version is None:
        return PinnedRead(None, 0, True)
    if not caps.count_at_version:
        return PinnedRead(None, snap.estimate, False)
    now, at = await count_now_and_at(client, source, filter_expr, snap.version, at_version=True)
    if at is None or (now is not None and now < at):
        return PinnedRead(None, now, False)
    return PinnedRead(snap.version, at, True)
