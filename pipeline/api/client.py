"""The one HTTP client every command shares: session, auth, retries, rate limits, error translation.

Layers, as in httpx: public helpers (``get_json``, ``post_json``, ``post_raw``) -> ``request``
(the retry loop, the only one in btpipe) -> ``_send`` (one thin aiohttp call). Which failures
are transient is decided in one place, :meth:`RetryPolicy.is_retryable`; everything else
becomes an exception from :mod:`pipeline.common.errors` with a one-line message that never contains
the API key, and that starts with the client's side (``source: ``, ``destination: ``) when a
command talks to two deployments.

Rate limits: every request of a client takes a slot of one :class:`AdaptiveLimit` (a 429
halves the slots, a run of successes adds one back), every wait is jittered, a server's
``Retry-After`` included, and a 429 is waited out without spending the attempt budget while
some request of the client succeeded within ``RetryPolicy.throttle_patience`` seconds. So a
key limited to a few requests a second slows the run down instead of failing it, and a
deployment answering nothing but 429 still fails after a bounded time.
"""

from __future__ import annotations

import email.utils
import gzip
import random
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import monotonic
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp
import anyio

from pipeline import __version__
from pipeline.common import defaults, jsoncodec
from pipeline.common.errors import ApiError, AuthError, NotFoundError, TransientApiError, UsageError

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
GZIP_MAGIC = b"\x1f\x8b"
RETRY_AFTER_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")  # RFC 9110 delay-seconds, and decimals
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,  # refused, reset, dropped, server disconnected
    aiohttp.ClientPayloadError,  # truncated or corrupt body
    TimeoutError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential back-off with full jitter; a server's ``Retry-After`` wins, plus a
    random extra of up to ``retry_after_jitter`` of it, so clients told the same delay do not
    come back in step. ``throttle_patience``: see :meth:`BraintrustClient.request`."""

    max_attempts: int = defaults.MAX_RETRIES.default
    base_delay: float = 0.25
    max_delay: float = defaults.MAX_BACKOFF.default
    max_retry_after: float = 120.0
    retry_after_jitter: float = defaults.RETRY_JITTER.default
    throttle_patience: float = defaults.THROTTLE_PATIENCE.default

    def is_retryable(self, status: int) -> bool:
        return status in RETRYABLE_STATUSES

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1). A
        ``Retry-After`` is honoured up to ``max_retry_after``, never shortened; its extra is
        scaled by at least ``base_delay``, so ``Retry-After: 0`` is spread out too."""
        if retry_after is not None:
            wait = min(max(retry_after, 0.0), self.max_retry_after)
            return wait + random.uniform(0, self.retry_after_jitter * max(wait, self.base_delay))
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Timeouts:
    connect: float = 15.0
    read: float = defaults.READ_TIMEOUT.default


@dataclass(frozen=True)
class ClientSettings:
    """Where to connect and how; ``api_key`` is kept out of ``repr`` so it never gets logged."""

    api_url: str = defaults.API_URL.default
    api_key: str = field(default="", repr=False)
    impersonate_user: str | None = None
    org_name: str | None = None
    side: str | None = None  # "source" or "destination" when a command talks to two deployments
    retry: RetryPolicy = RetryPolicy()
    timeouts: Timeouts = Timeouts()
    max_connections: int = defaults.CONNECTIONS.default
    compress: bool | None = None  # ask for gzip responses; None: yes, except over loopback

    @classmethod
    def from_options(
        cls,
        *,
        api_url: str = defaults.API_URL.default,
        api_key: str = "",
        impersonate: str | None = None,
        max_retries: int = defaults.MAX_RETRIES.default,
        max_backoff: float = defaults.MAX_BACKOFF.default,
        throttle_patience: float = defaults.THROTTLE_PATIENCE.default,
        retry_jitter: float = defaults.RETRY_JITTER.default,
        timeout: float = defaults.READ_TIMEOUT.default,
        connections: int = defaults.CONNECTIONS.default,
    ) -> ClientSettings:
        """Settings from the flat option names the command line and job files share (see
        :mod:`pipeline.common.defaults`); the values were checked where they were read, the URL
        and key here (:func:`check_endpoint`), so a bad one is one line before any request."""
        check_endpoint(api_url, api_key)
        return cls(
            api_url=api_url,
            api_key=api_key,
            impersonate_user=impersonate,
            retry=RetryPolicy(
                max_attempts=max_retries,
                max_delay=max_backoff,
                retry_after_jitter=retry_jitter,
                throttle_patience=throttle_patience,
            ),
            timeouts=Timeouts(read=timeout),
            max_connections=connections,
        )

    def gzip_responses(self, base_url: str) -> bool:
        """Compression pays across a network and only costs CPU on both ends over loopback."""
        if self.compress is not None:
            return self.compress
        host = urlsplit(base_url).hostname or ""
        return not (host == "localhost" or host == "::1" or host.startswith("127."))


def check_endpoint(
    api_url: str,
    api_key: str,
    *,
    url_name: str = "--api-url",
    key_name: str = "the API key (--api-key or BRAINTRUST_API_KEY)",
) -> None:
    """Refuse an API URL or key that could only fail later, as a traceback or a leak.

        The URL must be ``http(s)://host[:port][/path]``: without a scheme every request would
        fail inside aiohttp; user info (``https://user:pass@host``) would clash with the bearer
        header and could be echoed, so it is refused without printing the URL. A key with a line
        break or other control character (read from a file with its newline) cannot go in a
        header. Messages never hold the key, and the URL only when it carries no credentials and no
    query or fragment (where a key is sometimes put).
    """
    text = api_url
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise UsageError(f"{url_name}: the API URL is empty or holds a space or control character")
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise UsageError(f"{url_name}: the API URL is malformed") from None
    if parts.query or parts.fragment:  # where a key is sometimes put: never shown
        raise UsageError(f"{url_name}: an API URL takes no query or fragment (host {parts.hostname or '?'})")
    if "@" in parts.netloc:
        raise UsageError(
            f"{url_name}: a URL with a user name or password is refused (host {parts.hostname or '?'}); "
            "pass the key with --api-key or BRAINTRUST_API_KEY"
        )
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{url_name} {text!r}: needs http:// or https:// (e.g. https://api.braintrust.dev)")
    if not parts.hostname or not port_ok:
        raise UsageError(f"{url_name} {text!r}: names no host, or an invalid port")
    check_key(api_key, key_name)


def check_key(api_key: str, key_name: str = "the API key (--api-key or BRAINTRUST_API_KEY)") -> None:
    """Refuse a key no request header can carry (read from a file with its newline)."""
    if any(not c.isprintable() or c.isspace() for c in api_key):
        raise UsageError(
            f"{key_name} holds a line break, space or other control character; set it without one"
        )


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body's JSON (None for an empty body); ApiError when it is not JSON, as when the
        URL serves a web page (a sign-in page answers 200) rather than the API."""
        if not self.body:
            return None
        try:
            return jsoncodec.loads(self.body)
        except ValueError:
            kind = self.headers.get("Content-Type") or "no content type"
            start = " ".join(self.body[:80].decode("utf-8", "replace").split())
            raise ApiError(
                f"the server answered HTTP {self.status} with a body that is not JSON ({kind}: {start!r}); "
                "check that the API URL is the API's",
                self.status,
            ) from None


@dataclass(frozen=True)
class ClientStatistics:
    """Counts since the client opened: ``retries`` are waits that spent the attempt budget
    (failures), ``throttled`` the 429s waited out for free while other requests succeeded.
    ``concurrency`` is the limit on requests in flight at the time of asking: a reading, not a
    count, so equality leaves it out."""

    requests: int
    retries: int
    throttled: int = 0
    concurrency: int = field(default=0, compare=False)


def _hidden_retry(session: aiohttp.ClientSession, allowed: bool) -> None:
    """Allow or forbid aiohttp's own retry for the request about to start: a PUT or DELETE
    whose kept-alive connection closes before the answer is sent again at once, outside the
    retry policy. Harmless for reads, but a ``PUT`` of a prompt makes a version: one whose
    answer was lost after the server took it was written twice, where the policy's retry
    first looks whether it landed. aiohttp reads the switch as the request starts, before its
    first wait, so each request sets its own. No public switch exists (aiohttp's test client
    sets this attribute); a version without it has nothing to switch."""
    if hasattr(session, "_retry_connection"):
        session._retry_connection = allowed


class Aimd:
    """Additive increase, multiplicative decrease of a limit, the rule every request budget of
    btpipe follows (a client's concurrency here, a cluster's request rate in ``pipeline.ray``).

    A 429 halves the limit (never below 1), once per round: a 429 to a request sent before
    the last cut answers the traffic that cut already paid for, so a burst of them is one
    signal, not several. A run of successes as long as the limit adds one, up to ``maximum``.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.round = 0
        self._successes = 0

    def throttled(self, sent_in_round: int) -> bool:
        """Count a 429 to a request sent in round ``sent_in_round``; True if the limit fell."""
        self._successes = 0
        if sent_in_round != self.round:
            return False
        self.round += 1
        self.limit = max(1, self.limit // 2)
        return True

    def succeeded(self) -> bool:
        """Count a success; True if the limit rose."""
        self._successes += 1
        if self._successes < self.limit or self.limit >= self.maximum:
            return False
        self._successes = 0
        self.limit += 1
        return True


class Permits(Protocol):
    """A request budget shared beyond one client (the cluster-wide one of ``pipeline.ray``):
    :meth:`take` waits for a permit before each request is sent and returns the round it was
    given in; the outcome of the request is reported back, so the budget adapts as
    :class:`Aimd` does."""

    async def take(self) -> int: ...
    def throttled(self, sent_in_round: int) -> None: ...
    def succeeded(self) -> None: ...


class AdaptiveLimit:
    """How many requests of one client may be in flight, adapted by :class:`Aimd`.

    A lowered limit lets requests already in flight finish; new ones wait for a free slot.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._aimd = Aimd(maximum)
        self._slots = anyio.CapacityLimiter(maximum)

    @property
    def limit(self) -> int:
        return int(self._slots.total_tokens)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Hold a slot while a request is on the wire; yields the round it was sent in."""
        holder = object()  # one task may hold a slot of two clients, or two of one across tasks
        await self._slots.acquire_on_behalf_of(holder)
        try:
            yield self._aimd.round
        finally:
            self._slots.release_on_behalf_of(holder)

    def throttled(self, sent_in_round: int) -> None:
        if self._aimd.throttled(sent_in_round):
            self._slots.total_tokens = self._aimd.limit

    def succeeded(self) -> None:
        if self._aimd.succeeded():
            self._slots.total_tokens = self._aimd.limit


class PageTooLargeError(ApiError):
    """The server failed on a large read (500/504) that a smaller page may cure."""


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date; ``None`` for anything else
    (``nan``, ``-5``, ``inf`` included), so the normal back-off applies."""
    if not value:
        return None
    if RETRY_AFTER_SECONDS.fullmatch(value.strip()):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class BraintrustClient:
    """An async Braintrust API client; use as ``async with BraintrustClient(settings) as c``."""

    def __init__(self, settings: ClientSettings, *, permits: Permits | None = None) -> None:
        self.settings = settings
        self._permits = permits  # a budget shared with other processes, taken on every request
        if not settings.api_key:
            raise AuthError(self.sided("no API key: pass --api-key or set BRAINTRUST_API_KEY"))
        self.base_url = settings.api_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._plain: aiohttp.ClientSession | None = None  # signed URLs: no credentials
        self._limit = AdaptiveLimit(settings.max_connections)
        self._last_success: float | None = None  # monotonic time of the newest answer below 400
        self._requests = 0
        self._retries = 0
        self._throttled = 0

    async def __aenter__(self) -> BraintrustClient:
        headers = {
            "Authorization": f"Bearer {self.settings.api_key}",
            "Accept-Encoding": "gzip" if self.settings.gzip_responses(self.base_url) else "identity",
            "User-Agent": f"btpipe/{__version__}",
        }
        if self.settings.impersonate_user:
            headers["x-bt-impersonate-user"] = self.settings.impersonate_user
        if self.settings.org_name:
            headers["x-bt-org-name"] = self.settings.org_name
        t = self.settings.timeouts
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=self.settings.max_connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read),
        )
        self._plain = aiohttp.ClientSession(
            headers={"User-Agent": f"btpipe/{__version__}"},
            connector=aiohttp.TCPConnector(limit=self.settings.max_connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read),
            auto_decompress=False,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for session in (self._session, self._plain):
            if session is not None:
                await session.close()
        self._session = self._plain = None

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(self._requests, self._retries, self._throttled, self._limit.limit)

    def sided(self, message: str) -> str:
        """``message`` naming the side this client talks to, when it has one."""
        return f"{self.settings.side}: {message}" if self.settings.side else message

    def redact(self, text: str) -> str:
        """Remove the API key from text that may have echoed it (error bodies, URLs)."""
        key = self.settings.api_key
        return text.replace(key, "***") if key else text

    # -- public helpers -------------------------------------------------------------------

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def post_json(self, path: str, body: Any) -> Any:
        return (await self.request("POST", path, body=jsoncodec.dumps(body))).json()

    async def put_json(self, path: str, body: Any) -> Any:
        return (await self.request("PUT", path, body=jsoncodec.dumps(body))).json()

    async def patch_json(self, path: str, body: Any) -> Any:
        return (await self.request("PATCH", path, body=jsoncodec.dumps(body))).json()

    async def post_raw(self, path: str, body: bytes, *, shrink_on: frozenset[int] = frozenset()) -> Response:
        """POST a pre-encoded JSON body and return the raw response (for pages and batches)."""
        return await self.request("POST", path, body=body, shrink_on=shrink_on)

    # -- the retry loop -------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        shrink_on: frozenset[int] = frozenset(),
        landed: Callable[[], Awaitable[Response | None]] | None = None,
    ) -> Response:
        """Send with retries. ``shrink_on`` statuses raise :class:`PageTooLargeError` at once so
        the caller can retry with a smaller request instead of the same one. ``landed``, for a
        write that is not idempotent, looks before each retry for the effect of an attempt
        whose answer was lost (the connection dropped after the server took it): an answer it
        returns stands for the request's, and nothing is sent again.

        A failure spends one of ``max_attempts``, except a 429 while the client is making
        progress (some request succeeded within ``throttle_patience`` seconds): that one is
        waited out for free, however many it takes, since the run is only going slower. With no
        success that recent (a key that never gets through), 429s spend attempts like any
        failure, so the request gives up after about ``throttle_patience`` plus its budget.
        """
        once = landed is not None
        return await self._retrying(
            f"{method} {path}", lambda: self._send(method, path, params, body, once=once), shrink_on, landed
        )

    async def signed_transfer(
        self, where: str, attempt: Callable[[aiohttp.ClientSession], Awaitable[Response]]
    ) -> Response:
        """One transfer to or from a signed object-store URL (an attachment's bytes), under the
        same retry policy and rate limit as the API's requests but WITHOUT our credentials:
        ``attempt`` gets a session that sends no API key, streams what it moves, and returns
        the final answer (its body only when it is an error). A dropped connection midway
        starts the whole transfer again, so ``attempt`` must be repeatable."""
        if self._plain is None:
            raise RuntimeError("BraintrustClient used outside 'async with'")
        plain = self._plain

        async def send() -> Response:
            self._requests += 1
            return await attempt(plain)

        return await self._retrying(where, send)

    async def _retrying(
        self,
        where: str,
        send: Callable[[], Awaitable[Response]],
        shrink_on: frozenset[int] = frozenset(),
        landed: Callable[[], Awaitable[Response | None]] | None = None,
    ) -> Response:
        policy = self.settings.retry
        attempts = waits = 0
        while True:
            retry_after: float | None = None
            throttled = False
            try:
                async with self._limit.slot() as sent_in_round:
                    shared_round = await self._permits.take() if self._permits is not None else 0
                    response = await send()
            except TRANSPORT_ERRORS as exc:
                problem = f"{type(exc).__name__}: {self.redact(str(exc)) or 'no detail'}"
            else:
                if response.status < 400:
                    self._last_success = monotonic()
                    self._limit.succeeded()
                    if self._permits is not None:
                        self._permits.succeeded()
                    return response
                if response.status in shrink_on:
                    raise PageTooLargeError(self.sided(self._describe(where, response)), response.status)
                if not policy.is_retryable(response.status):
                    raise self._terminal_error(where, response)
                problem = self._describe(where, response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if response.status == 429:
                    self._limit.throttled(sent_in_round)
                    if self._permits is not None:
                        self._permits.throttled(shared_round)
                    throttled = self._making_progress()
            waits += 1
            if throttled:
                self._throttled += 1
            else:
                attempts += 1
                if attempts == policy.max_attempts:
                    free = f" and {waits - attempts} waits on 429" if waits > attempts else ""
                    raise TransientApiError(
                        self.redact(
                            self.sided(f"{where}: gave up after {attempts} attempts{free}: {problem}")
                        )
                    )
                self._retries += 1
            await anyio.sleep(policy.delay(waits, retry_after))
            if landed is not None and (found := await landed()) is not None:
                return found

    def _making_progress(self) -> bool:
        """Whether some request of this client succeeded within the throttle patience."""
        patience = self.settings.retry.throttle_patience
        return self._last_success is not None and monotonic() - self._last_success <= patience

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        *,
        once: bool = False,
    ) -> Response:
        """One attempt; ``once``: not even aiohttp may send it again (see :func:`_hidden_retry`)."""
        if self._session is None:
            raise RuntimeError("BraintrustClient used outside 'async with'")
        self._requests += 1
        headers = {"Content-Type": "application/json"} if body is not None else None
        _hidden_retry(self._session, not once)
        async with self._session.request(
            method,
            self.base_url + path,
            params=params,
            data=body,
            headers=headers,
            allow_redirects=False,
        ) as resp:
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                location = urljoin(str(resp.url), resp.headers["Location"])  # it may be relative
                return await self._follow_redirect(location, resp.headers)
            data = await resp.read()
            return Response(resp.status, resp.headers, data)

    async def _follow_redirect(self, location: str, first_headers: Mapping[str, str]) -> Response:
        """Large results may be served from object storage: fetch them WITHOUT our credentials.

        The stored object may be a gzip file served without a ``Content-Encoding``; JSON never
        starts with gzip's magic bytes, so such a body is unpacked here.
        """
        t = self.settings.timeouts
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read)
        async with aiohttp.ClientSession(timeout=timeout) as plain, plain.get(location) as resp:
            data = await resp.read()
            headers = resp.headers.copy()  # names stay case-insensitive, as HTTP has them
            for name in ("x-bt-cursor", "x-amz-meta-bt_cursor"):
                if name in first_headers and name not in headers:
                    headers[name] = first_headers[name]
        if data[:2] == GZIP_MAGIC:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt object: retry
                raise aiohttp.ClientPayloadError(f"bad gzip body from object storage: {exc}") from None
        return Response(resp.status, headers, data)

    # -- errors ---------------------------------------------------------------------------

    def _describe(self, where: str, response: Response) -> str:
        # Redact before cutting: a cut through an echoed key would leave its first characters.
        body = self.redact(response.body.decode("utf-8", "replace"))
        detail = body[:300].strip().replace("\n", " ")
        return self.redact(f"{where} -> HTTP {response.status}" + (f": {detail}" if detail else ""))

    def _terminal_error(self, where: str, response: Response) -> ApiError | AuthError | NotFoundError:
        message = self._describe(where, response)
        if response.status == 401:
            return AuthError(self.sided(f"the API key was rejected ({message})"))
        if response.status == 403:
            return AuthError(self.sided(f"permission denied ({message})"))
        if response.status == 404:
            return NotFoundError(self.sided(message))
        if response.status == 400:
            return BadRequestError(self.sided(message), response.status)
        return ApiError(self.sided(message), response.status)


class BadRequestError(ApiError, UsageError):
    """The server called our request malformed (400): usually a bad filter or query."""

    exit_code = UsageError.exit_code
