"""The HTTP client and the /btql pager against a fake server on 127.0.0.1.

The handlers here speak plain HTTP as the API notes describe the real service (statuses,
``Retry-After``, cursors in headers, 303 redirects to a signed object-store URL); they are
written from the protocol, not from the client's own tables, so a client that misreads the
protocol fails here. Back-off is measured by recording what the client asks ``anyio.sleep``
to wait, never by timing it.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import logging
import random
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web

from pipeline import __version__
from pipeline.api.btql import Pager, build_query, cursor_of, run_query
from pipeline.api.client import (
    BadRequestError,
    BraintrustClient,
    ClientSettings,
    ClientStatistics,
    RetryPolicy,
    Timeouts,
)
from pipeline.common.errors import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    ApiError,
    AuthError,
    BtpipeError,
    NotFoundError,
    TransientApiError,
)

KEY = "btk-Q7vXzP93LmWq-SECRET-k3y"
IMPERSONATE = "someone@example.com"
ORG = "acme"
#: Quick retries for tests that do not record the waits.
QUICK = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.004, max_retry_after=0.01)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


#: A handler gets the request and how many requests its path has had so far (from 1).
Handler = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


@dataclass
class Fake:
    url: str
    seen: list[Seen] = field(default_factory=list)

    def hits(self, prefix: str = "/") -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(prefix)]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Fake]:
    fake = Fake(url="")
    counts: dict[str, int] = {}

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fake.seen.append(
            Seen(request.method, request.path, dict(request.query), request.headers.copy(), body)
        )
        counts[request.path] = counts.get(request.path, 0) + 1
        return await handler(request, counts[request.path])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def settings(url: str, retry: RetryPolicy = QUICK, **kw: Any) -> ClientSettings:
    return ClientSettings(
        api_url=url, api_key=KEY, impersonate_user=IMPERSONATE, org_name=ORG, retry=retry, **kw
    )


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the client sleeps for, recorded instead of waited."""
    recorded: list[float] = []
    real_sleep = anyio.sleep

    async def sleep(delay: float) -> None:
        recorded.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(anyio, "sleep", sleep)
    return recorded


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full jitter picks uniformly below the back-off; take the top so the waits are exact."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)


def answer(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, headers=dict(headers or {}))


def replies(*responses: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
    """The n-th request gets the n-th response; the last one repeats."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return await responses[min(n, len(responses)) - 1](request)

    return handler


def status(code: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Callable[..., Any]:
    async def respond(request: web.Request) -> web.StreamResponse:
        return answer(code, body, headers)

    return respond


OK = status(200, b'{"ok": true}', {"Content-Type": "application/json"})


async def drop(request: web.Request) -> web.StreamResponse:
    """Close the connection before any response byte."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


async def truncate(request: web.Request) -> web.StreamResponse:
    """Promise 100 bytes, send 10, close."""
    response = web.StreamResponse(headers={"Content-Length": "100", "Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"ok": tru')
    assert request.transport is not None
    request.transport.close()
    return response


# -- what every request carries ------------------------------------------------------------


async def test_requests_carry_the_key_and_identity_headers() -> None:
    async with (
        serve(replies(OK)) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        assert await client.get_json("/v1/project", params={"project_name": "p"}) == {"ok": True}
    [seen] = fake.seen
    assert (seen.method, seen.path, seen.query) == ("GET", "/v1/project", {"project_name": "p"})
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.headers["x-bt-impersonate-user"] == IMPERSONATE
    assert seen.headers["x-bt-org-name"] == ORG
    assert seen.headers["User-Agent"] == f"btpipe/{__version__}"
    assert seen.headers["Accept-Encoding"] == "identity"  # loopback: compression only costs CPU


async def test_gzip_responses_when_asked() -> None:
    async def gzipped(request: web.Request) -> web.StreamResponse:
        return answer(200, gzip.compress(b'{"rows": [1, 2, 3]}'), {"Content-Encoding": "gzip"})

    async with (
        serve(replies(gzipped)) as fake,
        BraintrustClient(settings(fake.url, compress=True)) as client,
    ):
        assert await client.post_json("/v1/thing", {"a": 1}) == {"rows": [1, 2, 3]}
    [seen] = fake.seen
    assert seen.headers["Accept-Encoding"] == "gzip"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.json() == {"a": 1}


# -- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504])
async def test_transient_status_is_retried_up_to_max_attempts(code: int, waits: list[float]) -> None:
    async with (
        serve(replies(status(code, b"try later"))) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        with pytest.raises(TransientApiError) as caught:
            await client.post_json("/v1/thing", {"a": 1})
        assert client.statistics() == ClientStatistics(4, 3)
    assert str(caught.value) == (
        f"POST /v1/thing: gave up after 4 attempts: POST /v1/thing -> HTTP {code}: try later"
    )
    assert caught.value.exit_code == EXIT_FAILED
    assert [s.json() for s in fake.seen] == [{"a": 1}] * 4  # the same body every time
    assert len(waits) == 3


async def test_transient_statuses_then_success(waits: list[float]) -> None:
    async with (
        serve(replies(status(503), status(429), status(502), OK)) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        assert await client.post_json("/v1/thing", {}) == {"ok": True}
        assert client.statistics() == ClientStatistics(4, 3)
    assert len(fake.seen) == 4
    assert len(waits) == 3


async def test_dropped_connection_is_retried_up_to_max_attempts(waits: list[float]) -> None:
    # POST: aiohttp itself re-sends an idempotent request (GET) once on a dropped connection,
    # which would double the count the server sees; the client's own attempts are below.
    async with (
        serve(replies(drop)) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        with pytest.raises(TransientApiError) as caught:
            await client.post_json("/v1/thing", {})
        assert client.statistics() == ClientStatistics(4, 3)
    assert str(caught.value) == (
        "POST /v1/thing: gave up after 4 attempts: ServerDisconnectedError: Server disconnected"
    )
    assert len(fake.seen) == 4
    assert len(waits) == 3


async def test_dropped_connection_and_truncated_body_then_success(waits: list[float]) -> None:
    async with (
        serve(replies(drop, truncate, OK)) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        assert await client.post_json("/v1/thing", {}) == {"ok": True}
        assert client.statistics() == ClientStatistics(3, 2)
    assert len(fake.seen) == 3
    assert len(waits) == 2


async def test_refused_connection_is_retried_then_one_error(waits: list[float]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with BraintrustClient(settings(f"http://127.0.0.1:{port}")) as client:
        with pytest.raises(TransientApiError) as caught:
            await client.post_json("/v1/thing", {})
        assert client.statistics() == ClientStatistics(4, 3)
    assert str(caught.value).startswith("POST /v1/thing: gave up after 4 attempts: ClientConnectorError: ")
    assert len(waits) == 3


@pytest.mark.parametrize(
    ("code", "error", "exit_code", "message"),
    [
        (400, BadRequestError, EXIT_USAGE, "POST /v1/thing -> HTTP 400: no"),
        (401, AuthError, EXIT_AUTH, "the API key was rejected (POST /v1/thing -> HTTP 401: no)"),
        (403, AuthError, EXIT_AUTH, "permission denied (POST /v1/thing -> HTTP 403: no)"),
        (404, NotFoundError, EXIT_NOT_FOUND, "POST /v1/thing -> HTTP 404: no"),
        (409, ApiError, EXIT_FAILED, "POST /v1/thing -> HTTP 409: no"),
        (413, ApiError, EXIT_FAILED, "POST /v1/thing -> HTTP 413: no"),
    ],
)
async def test_client_errors_are_not_retried(
    code: int, error: type[BtpipeError], exit_code: int, message: str, waits: list[float]
) -> None:
    async with (
        serve(replies(status(code, b"no\n"), OK)) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        with pytest.raises(error) as caught:
            await client.post_json("/v1/thing", {})
        assert client.statistics() == ClientStatistics(1, 0)
    assert type(caught.value) is error
    assert str(caught.value) == message
    assert caught.value.exit_code == exit_code
    if isinstance(caught.value, ApiError):
        assert caught.value.status == code
    assert len(fake.seen) == 1
    assert waits == []


# -- back-off ---------------------------------------------------------------------------------

SLOW = RetryPolicy(max_attempts=7, base_delay=0.1, max_delay=0.5, max_retry_after=10.0)


async def test_backoff_doubles_and_is_capped_by_max_delay(waits: list[float], no_jitter: None) -> None:
    async with (
        serve(replies(status(503))) as fake,
        BraintrustClient(settings(fake.url, retry=SLOW)) as client,
    ):
        with pytest.raises(TransientApiError):
            await client.post_json("/v1/thing", {})
    assert len(fake.seen) == 7
    assert waits == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


async def test_backoff_jitter_stays_below_each_step(waits: list[float]) -> None:
    async with (
        serve(replies(status(500))) as fake,
        BraintrustClient(settings(fake.url, retry=SLOW)) as client,
    ):
        with pytest.raises(TransientApiError):
            await client.post_json("/v1/thing", {})
    assert len(fake.seen) == 7
    caps = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert len(waits) == len(caps)
    assert all(0 <= wait <= cap for wait, cap in zip(waits, caps, strict=True)), waits


@pytest.mark.parametrize("code", [429, 503])
@pytest.mark.parametrize(("header", "expected"), [("3", 3.0), ("0", 0.0), ("2.5", 2.5), ("3600", 10.0)])
async def test_retry_after_seconds(code: int, header: str, expected: float, waits: list[float]) -> None:
    async with (
        serve(replies(status(code, headers={"Retry-After": header}), OK)) as fake,
        BraintrustClient(settings(fake.url, retry=SLOW)) as client,
    ):
        assert await client.post_json("/v1/thing", {}) == {"ok": True}
    assert len(fake.seen) == 2
    # bounded by max_retry_after (10 s), not by the back-off; then up to half again of jitter
    (wait,) = waits
    assert expected <= wait <= expected + 0.5 * max(expected, SLOW.base_delay)


async def test_retry_after_http_date(waits: list[float]) -> None:
    at = int(time.time()) + 8  # an HTTP date has whole seconds
    in_8s = email.utils.formatdate(at, usegmt=True)
    in_an_hour = email.utils.formatdate(at + 3600, usegmt=True)
    an_hour_ago = email.utils.formatdate(at - 3600, usegmt=True)
    responses = [status(429, headers={"Retry-After": when}) for when in (in_8s, in_an_hour, an_hour_ago)]
    async with (
        serve(replies(*responses, OK)) as fake,
        BraintrustClient(settings(fake.url, retry=SLOW)) as client,
    ):
        assert await client.post_json("/v1/thing", {}) == {"ok": True}
    assert len(fake.seen) == 4
    assert 6 < waits[0] <= 12  # 8 s, plus up to half again of jitter
    assert 10.0 <= waits[1] <= 15.0 and 0.0 <= waits[2] <= 0.05


@pytest.mark.parametrize("header", ["soon", "nan", "-5", "inf", "1e3x", "Fri, 99 Foo 2025 25:61:00 GMT", ""])
async def test_unparsable_retry_after_falls_back_to_backoff(
    header: str, waits: list[float], no_jitter: None
) -> None:
    async with (
        serve(replies(status(503, headers={"Retry-After": header}), OK)) as fake,
        BraintrustClient(settings(fake.url, retry=SLOW)) as client,
    ):
        assert await client.post_json("/v1/thing", {}) == {"ok": True}
    assert len(fake.seen) == 2
    assert waits == [0.1]


# -- timeouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hang", "expected"),
    [
        ("/btql", ["/btql", "/btql", "/store/page"]),
        ("/store/page", ["/btql", "/store/page", "/btql", "/store/page"]),
    ],
)
async def test_a_read_that_hangs_times_out_and_is_retried(hang: str, expected: list[str]) -> None:
    """``Timeouts.read`` bounds every read, the API's and the object store's after a redirect."""
    release = asyncio.Event()

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == hang and n == 1:
            await release.wait()
        if request.path == "/btql":
            return answer(303, headers={"Location": f"http://{request.host}/store/page"})
        return answer(200, b'{"data": [], "cursor": null}')

    async with serve(handler) as fake:
        try:
            async with BraintrustClient(settings(fake.url, timeouts=Timeouts(connect=5, read=0.5))) as client:
                with anyio.fail_after(30):  # a generous bound: far above the 0.5 s read timeout
                    response = await run_query(client, "select: *")
                assert client.statistics() == ClientStatistics(2, 1)
        finally:
            release.set()  # before the server shuts down, which waits for its handlers
    assert response.json() == {"data": [], "cursor": None}
    assert [s.path for s in fake.seen] == expected


# -- the /btql pager --------------------------------------------------------------------------

ROWS = [{"id": f"r{i:04d}", "n": i} for i in range(1234)]


def page_of(rows: list[dict[str, Any]], query: dict[str, Any]) -> tuple[bytes, str | None]:
    """The JSONL page an offset cursor and a limit select, and the cursor after it (none after
    the last page, which has no rows)."""
    start = int(query.get("cursor") or 0)
    page = rows[start : start + query["limit"]]
    if not page:
        return b"", None
    return b"".join(orjson.dumps(row) + b"\n" for row in page), str(start + len(page))


def btql_store(rows: list[dict[str, Any]], fail: Callable[[int], int | None]) -> Handler:
    """A /btql that pages ``rows``; ``fail(limit)`` may answer an error status instead."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        query = orjson.loads(await request.read())["query"]
        code = fail(query["limit"])
        if code is not None:
            return answer(code, b"query timed out")
        body, cursor = page_of(rows, query)
        return answer(200, body, {"x-bt-cursor": cursor} if cursor else None)

    return handler


async def read_all(client: BraintrustClient, **kw: Any) -> tuple[list[dict[str, Any]], Pager]:
    pager = Pager(client, build_query("project_logs", "p1"), version="777", **kw)
    rows = [orjson.loads(line) async for page in pager.pages() for line in page.raw.splitlines()]
    return rows, pager


def sent(fake: Fake) -> list[tuple[int, str | None, str | None]]:
    """(limit, cursor, version) of every /btql request."""
    bodies = [s.json() for s in fake.hits("/btql")]
    return [(b["query"]["limit"], b["query"].get("cursor"), b.get("version")) for b in bodies]


@pytest.mark.parametrize("code", [500, 504])
async def test_pager_halves_the_page_on_500_504_and_grows_back(code: int, waits: list[float]) -> None:
    async with (
        serve(btql_store(ROWS, lambda limit: code if limit > 250 else None)) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        rows, pager = await read_all(client)
        assert client.statistics() == ClientStatistics(10, 0)
    assert rows == ROWS  # every row, once, in order
    assert sent(fake) == [
        (1000, None, "777"),  # fails
        (500, None, "777"),  # fails
        (250, None, "777"),
        (250, "250", "777"),
        (250, "500", "777"),
        (250, "750", "777"),  # the fourth good page: the size doubles again
        (500, "1000", "777"),  # fails
        (250, "1000", "777"),  # rows 1000..1233: short, with a cursor
        (234, "1000", "777"),  # asked again for the rows it held: a full page confirms them
        (250, "1234", "777"),  # the empty last page
    ]
    assert waits == []  # a smaller page is tried at once, not after a back-off
    assert pager.limit == 250


async def test_pager_stops_halving_at_the_floor_then_retries_normally(waits: list[float]) -> None:
    async with (
        serve(btql_store(ROWS, lambda limit: 500)) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        with pytest.raises(TransientApiError) as caught:
            await read_all(client)
    assert [limit for limit, _, _ in sent(fake)] == [1000, 500, 250, 125, 62, 31, 15, 10, 10, 10, 10]
    assert str(caught.value) == (
        "POST /btql: gave up after 4 attempts: POST /btql -> HTTP 500: query timed out"
    )
    assert len(waits) == 3


@pytest.mark.parametrize("code", [429, 502, 503])
async def test_pager_keeps_the_page_size_on_other_transient_statuses(code: int, waits: list[float]) -> None:
    failed: list[int] = []

    def once(limit: int) -> int | None:
        if failed:
            return None
        failed.append(limit)
        return code

    async with (
        serve(btql_store(ROWS, once)) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        rows, _ = await read_all(client)
    assert rows == ROWS
    assert [limit for limit, _, _ in sent(fake)] == [1000] * 3 + [234, 1000]  # a short page is confirmed
    assert len(waits) == 1


# -- 303 to object storage ----------------------------------------------------------------------


def credential_free(seen: Seen) -> None:
    names = {name.lower() for name in seen.headers}
    assert not names & {"authorization", "x-bt-impersonate-user", "x-bt-org-name", "cookie"}, seen.headers
    assert not any(KEY in value or IMPERSONATE in value for value in seen.headers.values()), seen.headers


PAYLOAD = {"data": [{"id": "a", "text": "Wörld"}, {"id": "b", "n": 2}], "cursor": "c9"}


def stored(how: str, data: bytes) -> web.Response:
    """An object-store answer: gzip as a content encoding, a stored .gz file, or plain."""
    if how == "gzip-encoded":
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return answer(200, gzip.compress(data), headers)
    if how == "gzip-file":
        return answer(200, gzip.compress(data), {"Content-Type": "application/gzip"})
    return answer(200, data, {"Content-Type": "application/json"})


@pytest.mark.parametrize("how", ["gzip-encoded", "gzip-file", "plain"])
@pytest.mark.parametrize("relative", [False, True])
async def test_redirect_is_followed_without_credentials(how: str, relative: bool) -> None:
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/btql":
            target = "/store/result.json.gz?X-Amz-Signature=abc&X-Amz-Expires=60"
            location = target if relative else f"http://{request.host}{target}"
            return answer(303, headers={"Location": location, "x-bt-cursor": "c1"})
        return stored(how, orjson.dumps(PAYLOAD))

    async with (
        serve(handler) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        response = await run_query(client, "select: *")
        assert client.statistics() == ClientStatistics(1, 0)
    assert response.status == 200
    assert response.json() == PAYLOAD
    assert cursor_of(response) == "c1"  # the API's cursor header outlives the redirect
    api, store = fake.seen
    assert (api.method, api.path) == ("POST", "/btql")
    assert api.headers["Authorization"] == f"Bearer {KEY}"
    assert (store.method, store.path) == ("GET", "/store/result.json.gz")
    assert store.query == {"X-Amz-Signature": "abc", "X-Amz-Expires": "60"}
    credential_free(store)


@pytest.mark.parametrize(
    ("api_cursor", "store_cursor"),
    [
        ("x-bt-cursor", None),
        ("X-Bt-Cursor", None),
        (None, "x-amz-meta-bt_cursor"),
        (None, "X-Amz-Meta-Bt_Cursor"),
    ],
)
async def test_pager_reads_redirected_pages(api_cursor: str | None, store_cursor: str | None) -> None:
    """Every page is served from object storage; the cursor header comes from the API's 303 or
    from the stored object, in whatever case the server spells it."""
    stash: dict[str, tuple[bytes, str | None]] = {}

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/btql":
            stash[f"/store/{n}"] = page_of(ROWS, orjson.loads(await request.read())["query"])
            headers = {"Location": f"http://{request.host}/store/{n}"}
            cursor = stash[f"/store/{n}"][1]
            if cursor and api_cursor:
                headers[api_cursor] = cursor
            return answer(303, headers=headers)
        body, cursor = stash[request.path]
        reply = stored("gzip-file", body)
        if cursor and store_cursor:
            reply.headers[store_cursor] = cursor
        return reply

    async with (
        serve(handler) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        rows, _ = await read_all(client)
    assert rows == ROWS
    assert sent(fake) == [
        (1000, None, "777"),
        (1000, "1000", "777"),
        (234, "1000", "777"),  # the short page, confirmed by a full one
        (1000, "1234", "777"),
    ]
    stores = fake.hits("/store/")
    assert [s.path for s in stores] == ["/store/1", "/store/2", "/store/3", "/store/4"]
    for seen in stores:
        credential_free(seen)


async def test_a_failing_object_store_retries_the_whole_request(waits: list[float]) -> None:
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/btql":
            return answer(303, headers={"Location": f"http://{request.host}/store/{n}"})
        return (
            answer(503, b"SlowDown") if request.path == "/store/1" else stored("plain", orjson.dumps(PAYLOAD))
        )

    async with (
        serve(handler) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        response = await run_query(client, "select: *")
    assert response.json() == PAYLOAD
    assert [s.path for s in fake.seen] == ["/btql", "/store/1", "/btql", "/store/2"]
    assert len(waits) == 1  # a fresh signed URL after the back-off


async def test_a_truncated_gzip_object_retries_the_whole_request(waits: list[float]) -> None:
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/btql":
            return answer(303, headers={"Location": f"http://{request.host}/store/{n}"})
        packed = gzip.compress(orjson.dumps(PAYLOAD))
        body = packed[: len(packed) // 2] if request.path == "/store/1" else packed
        return answer(200, body, {"Content-Type": "application/gzip"})

    async with (
        serve(handler) as fake,
        BraintrustClient(settings(fake.url)) as client,
    ):
        response = await run_query(client, "select: *")
    assert response.json() == PAYLOAD
    assert [s.path for s in fake.seen] == ["/btql", "/store/1", "/btql", "/store/2"]
    assert len(waits) == 1


# -- the key never shows ------------------------------------------------------------------------


def echo(code: int, *, pad: int = 0, as_json: bool = False) -> Handler:
    """An error body that repeats the request's headers back, after ``pad`` bytes of filler."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if as_json:
            headers = {str(name): value for name, value in request.headers.items()}
            return answer(code, orjson.dumps({"error": "bad", "headers": headers}))
        text = "x" * pad + f"Authorization: {request.headers.get('Authorization')}\n" * 3
        return answer(code, text.encode())

    return handler


async def _post(client: BraintrustClient) -> None:
    await client.post_json("/v1/thing", {})


# Filler that puts an echoed key across the 300-character cut of an error's detail, 8 characters
# before it: a cut that came before redaction would leave the key's first characters.
STRADDLE = 300 - len("Authorization: Bearer ") - 8

SCENARIOS: dict[str, tuple[Handler | None, Callable[[BraintrustClient], Awaitable[Any]]]] = {
    "401 echoing the header": (echo(401), _post),
    "403 echoing the header": (echo(403), _post),
    "400 echoing the headers as json": (echo(400, as_json=True), _post),
    "500 echoing the header across the detail limit": (echo(500, pad=STRADDLE), _post),
    "409 echoing the header across the detail limit": (echo(409, pad=STRADDLE), _post),
    "404 with the key in the path": (echo(404), lambda c: c.get_json(f"/v1/project/{KEY}")),
    "dropped connection with the key in the path": (replies(drop), lambda c: c.post_json(f"/v1/x/{KEY}", {})),
    "truncated body with the key in the query": (
        replies(truncate),
        lambda c: c.get_json("/v1/project", params={"token": KEY}),
    ),
    "refused connection with the key in the path": (None, lambda c: c.post_json(f"/v1/x/{KEY}", {})),
    "page too large echoing the header": (
        echo(504, pad=STRADDLE),
        lambda c: c.post_raw("/btql", b"{}", shrink_on=frozenset({504})),
    ),
}


def key_fragments() -> list[str]:
    """Every 6-character piece of the key: a message holding part of it leaks too."""
    return [KEY[i : i + 6] for i in range(len(KEY) - 5)]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_the_key_never_appears_in_errors_or_logs(
    scenario: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    handler, call = SCENARIOS[scenario]
    if handler is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with BraintrustClient(settings(url)) as client:
            with pytest.raises(BtpipeError) as caught:
                await call(client)
    else:
        async with serve(handler) as fake, BraintrustClient(settings(fake.url)) as client:
            with pytest.raises(BtpipeError) as caught:
                await call(client)
        assert all(
            s.headers["Authorization"] == f"Bearer {KEY}" for s in fake.hits("/v1/") + fake.hits("/btql")
        )
    error = caught.value
    texts = [
        str(error),
        repr(error),
        "".join(traceback.format_exception(error)),
        *(str(arg) for arg in error.args),
        *(record.getMessage() for record in caplog.records),
        caplog.text,
    ]
    for text in texts:
        for piece in key_fragments():
            assert piece not in text, f"{scenario}: {piece!r} in {text!r}"
    assert "\n" not in str(error)
    if "echoing" in scenario:
        assert "Bearer ***" in str(error)
    if "path" in scenario:
        assert "/***" in str(error)


def test_settings_repr_hides_the_key() -> None:
    assert KEY not in repr(settings("http://127.0.0.1:1"))
