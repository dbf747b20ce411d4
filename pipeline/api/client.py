"""The one HTTP client every command shares: session, auth, retries, error translation.

Layers, as in httpx: public helpers (``get_json``, ``post_json``, ``post_raw``) -> ``request``
(the retry loop, the only one in btpipe) -> ``_send`` (one thin aiohttp call). Which failures
are transient is decided in one place, :meth:`RetryPolicy.is_retryable`; everything else
becomes an exception from :mod:`pipeline.common.errors` with a one-line message that never contains
the API key.
"""

from __future__ import annotations

import email.utils
import gzip
import random
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
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
    """Bounded exponential back-off with full jitter; a server's ``Retry-After`` wins."""

    max_attempts: int = defaults.MAX_RETRIES.default
    base_delay: float = 0.25
    max_delay: float = defaults.MAX_BACKOFF.default
    max_retry_after: float = 120.0

    def is_retryable(self, status: int) -> bool:
        return status in RETRYABLE_STATUSES

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
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
        timeout: float = defaults.READ_TIMEOUT.default,
        connections: int = defaults.CONNECTIONS.default,
    ) -> ClientSettings:
        """Settings from the flat option names the command line and job files share (see
        :mod:`pipeline.common.defaults`); the values were checked where they were read."""
        return cls(
            api_url=api_url,
            api_key=api_key,
            impersonate_user=impersonate,
            retry=RetryPolicy(max_attempts=max_retries, max_delay=max_backoff),
            timeouts=Timeouts(read=timeout),
            max_connections=connections,
        )

    def gzip_responses(self, base_url: str) -> bool:
        """Compression pays across a network and only costs CPU on both ends over loopback."""
        if self.compress is not None:
            return self.compress
        host = urlsplit(base_url).hostname or ""
        return not (host == "localhost" or host == "::1" or host.startswith("127."))


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return jsoncodec.loads(self.body) if self.body else None


@dataclass(frozen=True)
class ClientStatistics:
    requests: int
    retries: int


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

    def __init__(self, settings: ClientSettings) -> None:
        if not settings.api_key:
            raise AuthError("no API key: pass --api-key or set BRAINTRUST_API_KEY")
        self.settings = settings
        self.base_url = settings.api_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._requests = 0
        self._retries = 0

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
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(self._requests, self._retries)

    def redact(self, text: str) -> str:
        """Remove the API key from text that may have echoed it (error bodies, URLs)."""
        key = self.settings.api_key
        return text.replace(key, "***") if key else text

    # -- public helpers -------------------------------------------------------------------

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def post_json(self, path: str, body: Any) -> Any:
        return (await self.request("POST", path, body=jsoncodec.dumps(body))).json()

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
    ) -> Response:
        """Send with retries. ``shrink_on`` statuses raise :class:`PageTooLargeError` at once so
        the caller can retry with a smaller request instead of the same one."""
        policy = self.settings.retry
        where = f"{method} {path}"
        for attempt in range(1, policy.max_attempts + 1):
            retry_after: float | None = None
            try:
                response = await self._send(method, path, params, body)
            except TRANSPORT_ERRORS as exc:
                problem = f"{type(exc).__name__}: {self.redact(str(exc)) or 'no detail'}"
            else:
                if response.status < 400:
                    return response
                if response.status in shrink_on:
                    raise PageTooLargeError(self._describe(where, response), response.status)
                if not policy.is_retryable(response.status):
                    raise self._terminal_error(where, response)
                problem = self._describe(where, response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt == policy.max_attempts:
                raise TransientApiError(self.redact(f"{where}: gave up after {attempt} attempts: {problem}"))
            self._retries += 1
            await anyio.sleep(policy.delay(attempt, retry_after))
        raise AssertionError("unreachable")

    async def _send(
        self, method: str, path: str, params: Mapping[str, str] | None, body: bytes | None
    ) -> Response:
        if self._session is None:
            raise RuntimeError("BraintrustClient used outside 'async with'")
        self._requests += 1
        headers = {"Content-Type": "application/json"} if body is not None else None
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
            return AuthError(f"the API key was rejected ({message})")
        if response.status == 403:
            return AuthError(f"permission denied ({message})")
        if response.status == 404:
            return NotFoundError(message)
        if response.status == 400:
            return BadRequestError(message, response.status)
        return ApiError(message, response.status)


class BadRequestError(ApiError, UsageError):
    """The server called our request malformed (400): usually a bad filter or query."""

    exit_code = UsageError.exit_code
