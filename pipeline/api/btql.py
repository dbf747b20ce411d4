"""Reading rows through ``POST /btql``: snapshot preflight, range planning, the cursor pager.

Queries are always built as parsed query objects (:mod:`pipeline.querylang.ast`): user
filters arrive here as expression trees, so a value is a ``literal`` node and can never
change the meaning of the query around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from pipeline import __version__
from pipeline.api.client import BraintrustClient, PageTooLargeError, Response
from pipeline.common import jsoncodec
from pipeline.common.errors import ApiError, UsageError
from pipeline.querylang.ast import (
    MAX_LIMIT,
    Expr,
    Query,
    from_object,
)

CURSOR_HEADERS = ("x-bt-cursor", "x-amz-meta-bt_cursor")
SHRINK_STATUSES = frozenset({500, 504})
#: A query's timeout (a scan too big for a busy server): asking again would time out again.
TIMED_OUT = frozenset({504})


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


#: Who asks, in ``query_source`` as the official SDKs name themselves there.
QUERY_SOURCE = f"btpipe_{__version__}"
#: Answers in a row that may not be trusted (cut short in transit) before a read gives up.
PAGE_ATTEMPTS = 8


def request_body(query: Query | str, *, fmt: str, version: str | None = None) -> bytes:
    """A ``/btql`` body as the official SDKs send it: ``version`` beside the query (the
    cursor, if any, is inside it), reads that see rows written just before
    (``brainstore_realtime``), from the row store, and who asks."""
    body: dict[str, Any] = {
        "query": query,
        "fmt": fmt,
        "brainstore_realtime": True,
        "use_columnstore": False,
        "query_source": QUERY_SOURCE,
    }
    if version is not None:
        body["version"] = version
    return jsoncodec.dumps(body)


async def run_query(
    client: BraintrustClient, query: Query | str, *, version: str | None = None, fmt: str = "json"
) -> Response:
    return await client.post_raw("/btql", request_body(query, fmt=fmt, version=version))


def answer_rows(client: BraintrustClient, response: Response) -> list[dict[str, Any]]:
    """The rows of a ``fmt: json`` answer (its ``data``); ApiError when the answer holds none,
    as an answer of something else than the API's ``/btql`` does."""
    payload = response.json()
    rows = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ApiError(
            client.sided("POST /btql: the answer holds no list of rows ('data'); check the API URL")
        )
    return rows


def whole_rows(body: bytes) -> bool:
    """Whether a JSONL body ends in a whole row: a body cut short in transit (with a
    Content-Length that matches the cut) ends in a line that does not parse."""
    end = len(body)  # the last row's end, found without copying the body (rstrip would)
    while end and body[end - 1 : end].isspace():
        end -= 1
    if not end:
        return True
    last = body[body.rfind(b"\n", 0, end) + 1 : end]
    try:
        jsoncodec.loads(last)
    except ValueError:
        return False
    return True


@dataclass
class Pager:
    """Cursor pager state for one range: the initial query, the cursor, the page size.

    The page size halves when the server fails on a big page (500/504) and grows back after
    a run of good pages, within ``[min_limit, max_limit]``.

    A cursor is only as good as the page it came with: a page cut short in transit, yet
    framed as whole, still carries the cursor of the whole page, and following it would
    skip the rows cut off. So a page is handed on only when it can be trusted: it ends in a
    whole row and is either full (as many rows as asked for, which no cut can fake) or the
    last (no cursor). Any other answer (a partial last row, or fewer rows than asked for
    with a cursor: the server's last rows, or a cut) is asked again for just the whole
    rows it holds, so that the answer is full and its cursor right for them; the rows after
    them come with the next page. A cut page loses nothing, wherever it was cut. A full page
    without a cursor is an error (paging could not go on).

    The page after a short one is asked for at its cursor together with the check, so a
    server's genuine last page (short, with a cursor, followed by an empty one) costs no round
    trip more: when the check answers the same rows with the same cursor, that page is the
    next one; otherwise it is dropped. A pager so holds at most one page beyond its budget.
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
    #: The answer at a cursor not yet reached, asked for beside a check: (cursor, limit, page).
    _ahead: tuple[str, int, Page] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.limit = min(self.limit, self.max_limit)

    async def next_page(self, at_most: int | None = None) -> Page | None:
        """Fetch the next page, of at most ``at_most`` rows when given (a caller ending files
        at exact row counts); ``None`` once the last (empty) page has been seen."""
        if self.done:
            return None
        page = await self._trusted(at_most)
        self._grow()
        if page.rows == 0 or page.cursor is None:
            self.done = True
        if page.rows == 0:
            return None
        self.cursor = page.cursor
        return page

    async def _trusted(self, at_most: int | None) -> Page:
        """The page at the current cursor, asked for again until it can be trusted."""
        limit: int | None = None
        checked: tuple[int, Page] | None = None
        for _ in range(PAGE_ATTEMPTS):
            limit, page = checked if checked is not None else await self._fetch(at_most, limit)
            checked = None
            if page.rows > limit:
                raise ApiError(f"the server returned {page.rows} rows for a page of at most {limit}")
            whole = whole_rows(page.raw)
            if whole and page.cursor is None:
                if 0 < page.rows == limit:
                    raise ApiError("the server returned a full page without a cursor; cannot continue paging")
                return page
            if whole and page.rows == limit:
                return page
            if whole and page.rows:
                checked = await self._check_and_look_ahead(page, at_most)
                continue
            limit = (page.rows if whole else page.rows - 1) or limit  # ask for the whole rows only
        raise ApiError(
            f"/btql: {PAGE_ATTEMPTS} answers in a row were cut short (a partial last row, or fewer "
            "rows than asked for with a cursor)"
        )

    async def _check_and_look_ahead(self, short: Page, at_most: int | None) -> tuple[int, Page]:
        """Ask again for just the rows of ``short`` (whole, with a cursor) and, meanwhile, for
        the page after them at its cursor; the latter is kept for the next call only when the
        check confirms ``short`` (as many rows, the same cursor). Returns the check's answer."""
        assert short.cursor is not None
        found: dict[str, tuple[int, Page]] = {}

        async def check() -> None:
            found["check"] = await self._fetch(at_most, short.rows)

        async def ahead() -> None:
            found["ahead"] = await self._fetch(at_most, None, cursor=short.cursor)

        self._ahead = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(check)
            tg.start_soon(ahead)
        asked, answer = found["check"]
        if answer.rows == short.rows == asked and answer.cursor == short.cursor and whole_rows(answer.raw):
            self._ahead = (short.cursor, *found["ahead"])
        return found["check"]

    async def _fetch(
        self, at_most: int | None, limit: int | None, *, cursor: str | None = None
    ) -> tuple[int, Page]:
        """One answer at ``cursor`` (else the current one), of at most ``limit`` rows (else
        the page size): (the limit asked for, the answer). A page asked for at the current
        cursor beside a check is taken instead of a request when it was asked with that limit."""
        cursor = self.cursor if cursor is None else cursor
        ahead, self._ahead = self._ahead, None
        while True:
            if limit is None or limit > self.limit:
                limit = self.limit if at_most is None else min(self.limit, at_most)
                if ahead is not None and ahead[:2] == (cursor, limit):
                    return limit, ahead[2]
            query = {**self.query, "limit": limit}
            if cursor is not None:
                query["cursor"] = cursor
            shrink = SHRINK_STATUSES if limit > self.min_limit else frozenset()
            try:
                response = await self.client.post_raw(
                    "/btql", request_body(query, fmt="jsonl", version=self.version), shrink_on=shrink
                )
            except PageTooLargeError:
                self.limit = max(self.min_limit, self.limit // 2)
                self.good_pages = 0
                limit = None
                continue
            return limit, Page(response.body, count_jsonl_rows(response.body), cursor_of(response))

    def _grow(self) -> None:
        self.good_pages += 1
        if self.limit < self.max_limit and self.good_pages >= 4:
            self.limit = min(self.max_limit, self.limit * 2)
            self.good_pages = 0

    async def pages(self) -> AsyncIterator[Page]:
        while (page := await self.next_page()) is not None:
            yield page


async def query_pages(
    client: BraintrustClient, query: Query, *, page_all: bool, version: str | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """Run a query (a user's text, :func:`parse_text` parsed); with ``page_all``, follow
    cursors until the last page.

    It is sent as a query object, the cursor inside it, as the SDKs page; a query with
    ``sort`` or aggregates is one page. Unless ``version`` pins it, the first page's
    ``_xact_id`` values cannot pin the rest, so pages read the latest state."""
    while True:
        response = await run_query(client, query, version=version)
        rows = answer_rows(client, response)
        if rows:
            yield rows
        cursor = cursor_of(response) or response.json().get("cursor")
        if not page_all or not rows or not cursor:
            return
        query = {**query, "cursor": cursor}


def parse_text(text: str) -> Query:
    """A user's query text (BTQL or SQL) as a query object; errors are usage errors."""
    from pipeline.querylang.parse import parse_query  # sqlglot loads only for a text query
    from pipeline.querylang.syntax import QuerySyntaxError

    try:
        return parse_query(text)
    except QuerySyntaxError as exc:
        raise UsageError(f"query: {exc}") from None


def parse_filter(text: str | None, option: str = "--filter") -> Expr | None:
    """A user's filter text as an expression tree; errors name ``option`` (the flag, or where
    in a job file the text was)."""
    if not text:
        return None
    from pipeline.querylang.parse import parse_expression  # sqlglot loads only for a filter
    from pipeline.querylang.syntax import QuerySyntaxError

    try:
        return parse_expression(text)
    except QuerySyntaxError as exc:
        raise UsageError(f"{option}: {exc}") from None
