"""Reading rows through ``POST /btql``: snapshot preflight, range planning, the cursor pager.

Queries are always built as parsed query objects (:mod:`pipeline.querylang.ast`): user
filters arrive here as expression trees, so a value is a ``literal`` node and can never
change the meaning of the query around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import anyio

from pipeline.api.client import BraintrustClient, PageTooLargeError, Response
from pipeline.common import jsoncodec
from pipeline.common.errors import ApiError, UsageError
from pipeline.querylang.ast import (
    MAX_LIMIT,
    Expr,
    Query,
    all_of,
    binary,
    from_object,
    function,
    ident,
    literal,
)

CURSOR_HEADERS = ("x-bt-cursor", "x-amz-meta-bt_cursor")
SHRINK_STATUSES = frozenset({500, 504})


@dataclass(frozen=True)
class Snapshot:
    """What the preflight learned about one object: row count and the version range."""

    rows: int
    version: str | None  # highest _xact_id visible now (None for an empty object)
    min_version: str | None
    pinnable: bool = True  # False when deletes newer than every visible row exist

    @property
    def read_version(self) -> str | None:
        """The version reads should pass.

        Normally ``version``. A delete leaves no visible row, so when the newest write to an
        object was a delete, ``version`` predates it and reading there would resurrect the
        deleted rows; then reads go unpinned and the server's first-page cursor pins them.
        """
        return self.version if self.pinnable else None


@dataclass(frozen=True)
class XactRange:
    """A slice of one object by ``_xact_id``: ``low < _xact_id <= high`` (bounds optional)."""

    low: str | None = None
    high: str | None = None

    def expr(self) -> Expr | None:
        parts = []
        if self.low is not None:
            parts.append(binary("gt", ident("_xact_id"), literal(self.low)))
        if self.high is not None:
            parts.append(binary("le", ident("_xact_id"), literal(self.high)))
        return all_of(*parts)


@dataclass(frozen=True)
class Page:
    raw: bytes  # the jsonl body, exactly as served
    rows: int
    cursor: str | None  # cursor for the page after this one


def count_jsonl_rows(body: bytes) -> int:
    """Lines of a JSONL body. ``find`` (memchr) beats ``count``, which tests every byte in a
    loop, about five times on pages of 1,000 rows of a few KB."""
    if not body or body.isspace():  # isspace stops at the first other byte; strip would copy
        return 0
    rows, at = 0, body.find(b"\n")
    while at != -1:
        rows += 1
        at = body.find(b"\n", at + 1)
    return rows + (0 if body.endswith(b"\n") else 1)


def cursor_of(response: Response) -> str | None:
    """The next-page cursor: response headers first, then a json body's ``cursor``."""
    for name in CURSOR_HEADERS:
        value = response.headers.get(name)
        if value:
            return value
    return None


def build_query(
    object_type: str,
    object_id: str,
    *,
    filter_expr: Expr | None = None,
    shape: str = "spans",
    select: list[dict[str, Any]] | None = None,
) -> Query:
    query: Query = {
        "from": from_object(object_type, object_id, shape=shape),
        "select": select or [{"op": "star"}],
    }
    if filter_expr is not None:
        query["filter"] = filter_expr
    return query


async def run_query(
    client: BraintrustClient, query: Query | str, *, version: str | None = None, fmt: str = "json"
) -> Response:
    body: dict[str, Any] = {"query": query, "fmt": fmt}
    if version is not None:
        body["version"] = version
    return await client.post_raw("/btql", jsoncodec.dumps(body))


async def snapshot(client: BraintrustClient, base: Query) -> Snapshot:
    """Count the rows ``base`` selects and find the object's current version.

    The version comes from the whole object (not the filtered rows) so that every page of the
    export, and the next incremental run's watermark, refer to one point in time.
    """
    snap = await preflight(client, base)
    return replace(snap, pinnable=await is_pinnable(client, base, snap))


async def preflight(client: BraintrustClient, base: Query) -> Snapshot:
    """The first round trip of ``snapshot``: the row count and the version range; whether
    reads may be pinned (``is_pinnable``) is left to ask, so a caller can start reading
    meanwhile."""
    versions = {
        "from": {k: v for k, v in base["from"].items() if k != "shape"},
        "measures": [
            {"alias": "hi", "expr": function("max", ident("_xact_id"))},
            {"alias": "lo", "expr": function("min", ident("_xact_id"))},
        ],
    }
    answers: dict[str, Response] = {}

    async def ask(name: str, query: Query) -> None:
        answers[name] = await run_query(client, query)

    async with anyio.create_task_group() as tg:  # independent: one round trip, not two
        tg.start_soon(ask, "versions", versions)
        tg.start_soon(ask, "current", _counted(base))
    row_versions = answers["versions"].json()["data"]
    hi = row_versions[0].get("hi") if row_versions else None
    lo = row_versions[0].get("lo") if row_versions else None
    return Snapshot(
        rows=_count(answers["current"]),
        version=None if hi is None else str(hi),
        min_version=None if lo is None else str(lo),
    )


async def is_pinnable(client: BraintrustClient, base: Query, snap: Snapshot) -> bool:
    """Whether reading at ``snap.version`` sees the rows the server shows now: not when the
    newest writes were deletes (see ``Snapshot.read_version``)."""
    if snap.version is None:
        return True
    return _count(await run_query(client, _counted(base), version=snap.version)) == snap.rows


def _counted(base: Query) -> Query:
    return {
        "from": base["from"],
        "measures": [{"alias": "n", "expr": function("count", literal(1))}],
        **({"filter": base["filter"]} if "filter" in base else {}),
    }


def _count(response: Response) -> int:
    data = response.json()["data"]
    return int(data[0].get("n") or 0) if data else 0


def plan_ranges(snap: Snapshot, wanted: int, *, low: str | None = None) -> list[XactRange]:
    """Split ``(low or min, version]`` into up to ``wanted`` equal ``_xact_id`` intervals.

    Transaction ids grow with time, so equal intervals are equal slices of write history;
    that spreads evenly for logs written steadily, and is still correct (just less parallel)
    when it does not.
    """
    if not snap.pinnable:
        return [XactRange(low=low)]
    if snap.version is None or snap.min_version is None or wanted <= 1:
        return [XactRange(low=low, high=snap.version)]
    start = int(low) if low is not None else int(snap.min_version) - 1
    end = int(snap.version)
    span = end - start
    if span <= 1:
        return [XactRange(low=low, high=snap.version)]
    count = min(wanted, span)
    bounds = [start + (span * i) // count for i in range(count + 1)]
    ranges = [XactRange(low=str(bounds[i]), high=str(bounds[i + 1])) for i in range(count)]
    # The first range keeps the caller's lower bound exactly (None means "from the start").
    return [replace(ranges[0], low=low), *ranges[1:]]


@dataclass
class Pager:
    """Cursor pager state for one range: the initial query, the cursor, the page size.

    The page size halves when the server fails on a big page (500/504) and grows back after
    a run of good pages, within ``[min_limit, max_limit]``.
    """

    client: BraintrustClient
    query: Query
    version: str | None
    cursor: str | None = None
    max_limit: int = MAX_LIMIT
    min_limit: int = 10
    limit: int = MAX_LIMIT
    good_pages: int = 0
    done: bool = False

    def __post_init__(self) -> None:
        self.limit = min(self.limit, self.max_limit)

    async def next_page(self, at_most: int | None = None) -> Page | None:
        """Fetch the next page, of at most ``at_most`` rows when given (a caller ending files
        at exact row counts); ``None`` once the last (empty) page has been seen."""
        if self.done:
            return None
        while True:
            limit = self.limit if at_most is None else min(self.limit, at_most)
            body: dict[str, Any] = {"query": {**self.query, "limit": limit}, "fmt": "jsonl"}
            if self.cursor is not None:
                body["query"]["cursor"] = self.cursor
            if self.version is not None:
                body["version"] = self.version
            shrink = SHRINK_STATUSES if limit > self.min_limit else frozenset()
            try:
                response = await self.client.post_raw("/btql", jsoncodec.dumps(body), shrink_on=shrink)
            except PageTooLargeError:
                self.limit = max(self.min_limit, self.limit // 2)
                self.good_pages = 0
                continue
            break
        self._grow()
        rows = count_jsonl_rows(response.body)
        cursor = cursor_of(response)
        if rows == 0 or cursor is None:
            self.done = True
        if rows > 0 and cursor is None and rows >= limit:
            raise ApiError("the server returned a full page without a cursor; cannot continue paging")
        if rows == 0:
            return None
        self.cursor = cursor
        return Page(response.body, rows, cursor)

    def _grow(self) -> None:
        self.good_pages += 1
        if self.limit < self.max_limit and self.good_pages >= 4:
            self.limit = min(self.max_limit, self.limit * 2)
            self.good_pages = 0

    async def pages(self) -> AsyncIterator[Page]:
        while (page := await self.next_page()) is not None:
            yield page


async def query_pages(
    client: BraintrustClient, text: str, *, page_all: bool, version: str | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """Run a text query (BTQL or SQL) as the server parses it; with ``page_all``, follow
    cursors until the last page. The first page's snapshot pins the rest."""
    cursor: str | None = None
    while True:
        body: dict[str, Any] = {"query": text, "fmt": "json"}
        if version is not None:
            body["version"] = version
        if cursor is not None:
            body["cursor"] = cursor
        response = await client.post_raw("/btql", jsoncodec.dumps(body))
        payload = response.json() or {}
        rows = payload.get("data") or []
        if rows:
            yield rows
        cursor = cursor_of(response) or payload.get("cursor")
        if not page_all or not rows or not cursor:
            return


def parse_filter(text: str | None) -> Expr | None:
    """A user's filter text (``--filter``) as an expression tree; errors name the flag."""
    if not text:
        return None
    from pipeline.querylang.parse import parse_expression  # sqlglot loads only for a filter
    from pipeline.querylang.syntax import QuerySyntaxError

    try:
        return parse_expression(text)
    except QuerySyntaxError as exc:
        raise UsageError(f"--filter: {exc}") from None
