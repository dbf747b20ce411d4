"""Fault injection for the emulator: failures, latency, a per-key rate limit and a size cap.

Off by default. A :class:`FaultConfig` says what to break; a :class:`FaultInjector` decides,
request by request, what happens; :func:`install` puts both into an aiohttp application as
the outermost middleware plus the control endpoint ``GET/PUT /_emulator/faults``.

Replaying a failure
    Every request that is not exempt gets a number ``n`` (0, 1, 2, ... in arrival order,
    restarting whenever the configuration is replaced). Its random choices come from
    ``random.Random(f"{seed}:{n}")``, drawn in a fixed order: one number deciding whether it
    fails (``< rate``), one picking the kind from ``kinds``, one scaling the jitter. So the
    n-th request gets the same fate for the same seed, whatever the earlier requests were,
    and changing ``kinds`` or ``jitter_ms`` does not move which requests fail. A client that
    sends its requests one at a time sees exactly the same sequence on every run; concurrent
    clients may arrive in another order, and the rate limit depends on the clock.

What each fault does
    ``429`` (with ``Retry-After: retry_after``), ``500``, ``502``, ``503``: answered at
    once, the handler never runs. ``drop``: the handler runs (the write happens), then the
    connection is closed without an answer, the hardest case for a retrying client.
    ``truncate``: the handler runs, the headers announce the whole body, half of it is sent
    and the connection is closed; a handler that streams its answer (an attachment download)
    is told so (:func:`cut_stream`) and stops after half of its bytes itself. Two more are not in the default mix and change only a
    ``/btql`` JSONL answer (any other answer passes unchanged): a page cut short yet framed
    as whole, which no transport error reveals. ``cut_rows`` keeps the first half of the
    lines (none of one), ``cut_line`` stops inside the line holding the middle byte; both
    keep every header, the cursor among them (still that of the whole page), with a
    Content-Length (and gzip encoding, if any) matching the cut body. Checked before those: a body over ``max_request_bytes``
    gets 413, and a key over its ``rate_limit`` (token bucket of ``burst`` requests, keyed
    by the Authorization header) gets 429 with the seconds until its next token. The added
    latency (``latency_ms`` plus up to ``jitter_ms``) precedes every answer of a
    non-exempt request, faulty or not.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final

import anyio
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

#: The default mix of faults.
KINDS: Final = ("429", "500", "502", "503", "drop", "truncate")
#: Faults that cut a ``/btql`` JSONL page short (see the module docstring); named only on purpose.
CUT_KINDS: Final = ("cut_rows", "cut_line")
ALL_KINDS: Final = KINDS + CUT_KINDS
CONTROL_PATH: Final = "/_emulator/faults"
RATE_LIMITED: Final = "rate_limited"
#: Request key set for a ``truncate`` fault, read by handlers that stream (:func:`cut_stream`).
_CUT_STREAM: Final = "btpipe.fault.cut_stream"
TOO_LARGE: Final = "413"

_SCALARS: Final[Mapping[str, type]] = {
    "rate": float, "retry_after": int, "latency_ms": float, "jitter_ms": float,
    "rate_limit": float, "burst": int, "max_request_bytes": int, "seed": int,
}  # fmt: skip
_LISTS: Final = frozenset({"kinds", "exempt"})
_OPTIONAL: Final = frozenset({"rate_limit", "max_request_bytes"})
_MAX_BUCKETS: Final = 10_000


@dataclass(frozen=True)
class FaultConfig:
    """What to break. ``kinds`` may repeat an entry to weight it (``429:429:500``)."""

    rate: float = 0.0
    kinds: tuple[str, ...] = KINDS
    retry_after: int = 1
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_limit: float | None = None
    burst: int = 1
    max_request_bytes: int | None = None
    seed: int = 0
    exempt: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        _check(0.0 <= self.rate <= 1.0, f"rate={self.rate} must be between 0 and 1")
        _check(bool(self.kinds), "kinds must name at least one of " + ":".join(ALL_KINDS))
        for kind in self.kinds:
            _check(kind in ALL_KINDS, f"kinds: unknown fault {kind!r} (expected {':'.join(ALL_KINDS)})")
        _check(self.retry_after >= 0, f"retry_after={self.retry_after} must be >= 0")
        for name in ("latency_ms", "jitter_ms"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, f"{name}={value} must be a finite number >= 0")
        if self.rate_limit is not None:
            _check(
                math.isfinite(self.rate_limit) and self.rate_limit > 0,
                f"rate_limit={self.rate_limit} must be > 0",
            )
        _check(self.burst >= 1, f"burst={self.burst} must be >= 1")
        if self.max_request_bytes is not None:
            _check(self.max_request_bytes > 0, f"max_request_bytes={self.max_request_bytes} must be > 0")
        for path in self.exempt:
            _check(path.startswith("/"), f"exempt: path {path!r} must start with '/'")

    @classmethod
    def parse(cls, text: str) -> FaultConfig:
        """The command-line form: ``rate=0.2,kinds=429:500:drop,seed=7`` (lists split on ``:``)."""
        settings: dict[str, str] = {}
        for part in text.split(","):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            _check(bool(sep), f"{part.strip()!r} must look like NAME=VALUE")
            settings[name.strip()] = value.strip()
        return cls.from_json(settings)

    @classmethod
    def from_json(cls, value: Any) -> FaultConfig:
        """A JSON object of settings (missing ones take their defaults); ValueError names the culprit."""
        _check(isinstance(value, dict), "the configuration must be a JSON object")
        known = [f.name for f in fields(cls)]
        for name in value:
            _check(name in known, f"unknown setting {name!r} (expected one of {', '.join(known)})")
        return cls(**{name: _convert(name, item) for name, item in value.items()})

    def to_json(self) -> dict[str, Any]:
        return {name: list(v) if isinstance(v, tuple) else v for name, v in asdict(self).items()}

    def exempts(self, path: str) -> bool:
        """True for the ``exempt`` paths and their sub-paths (doubled slashes ignored)."""
        path = _normal(path)
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.exempt)


def _normal(path: str) -> str:
    """The path as the emulator routes it: ``//btql`` is ``/btql``."""
    return re.sub("/{2,}", "/", path)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"faults: {message}")


def _convert(name: str, value: Any) -> Any:
    """One setting from its command-line text or its JSON value."""
    if name in _LISTS:
        if isinstance(value, str):
            return tuple(item for item in value.split(":") if item)
        _check(
            isinstance(value, list) and all(isinstance(v, str) for v in value),
            f"{name} must be a list of strings",
        )
        return tuple(value)
    if value is None or value == "none":
        _check(name in _OPTIONAL, f"{name} cannot be empty")
        return None
    kind = _SCALARS[name]
    noun = "an integer" if kind is int else "a number"
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"faults: {name}={value!r} is not {noun}") from None
    ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
    _check(ok and not isinstance(value, bool), f"{name}={value!r} is not {noun}")
    return kind(value)


@dataclass(frozen=True)
class Verdict:
    """The fate of one request: its number, the latency before answering and the fault, if any."""

    number: int
    delay: float
    fault: str | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class FaultStatistics:
    """Requests seen since the configuration was last set, and faults by kind."""

    requests: int
    faults: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "faults": dict(self.faults)}


class _TokenBuckets:
    """Per-key token buckets; full buckets are forgotten when too many keys pile up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float | None:
        """Take a token for ``key``: ``None`` when granted, else the seconds until the next one."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - then) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate
        if len(self._buckets) >= _MAX_BUCKETS:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return None

    def _forget_full(self, now: float) -> None:
        self._buckets = {
            key: (tokens, then)
            for key, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self._rate < self._burst
        }


class FaultInjector:
    """Decides each request's fate from the current :class:`FaultConfig` and counts the outcome."""

    def __init__(
        self, config: FaultConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.replace(config or FaultConfig())

    @property
    def config(self) -> FaultConfig:
        return self._config

    def replace(self, config: FaultConfig) -> None:
        """Switch to ``config`` and restart counters, numbering and rate limits (so runs replay)."""
        self._config = config
        self._requests = 0
        self._faults: dict[str, int] = {}
        self._buckets = (
            None if config.rate_limit is None else _TokenBuckets(config.rate_limit, config.burst, self._clock)
        )

    def statistics(self) -> FaultStatistics:
        return FaultStatistics(self._requests, dict(self._faults))

    def plan(self, number: int) -> Verdict:
        """The seeded part of request ``number``'s fate: its latency and random fault (see module doc)."""
        config = self._config
        delay = config.latency_ms / 1000
        if config.rate == 0 and config.jitter_ms == 0:
            return Verdict(number, delay)
        draws = random.Random(f"{config.seed}:{number}")
        fails, pick, jitter = draws.random(), draws.random(), draws.random()
        delay += jitter * config.jitter_ms / 1000
        if fails >= config.rate:
            return Verdict(number, delay)
        kind = config.kinds[int(pick * len(config.kinds))]
        return Verdict(number, delay, kind, config.retry_after if kind == "429" else None)

    def judge(self, client_key: str, body_bytes: int | None) -> Verdict:
        """Number the next request and decide its fate: size cap, then rate limit, then the seeded plan."""
        verdict = self.plan(self._requests)
        self._requests += 1
        limit = self._config.max_request_bytes
        if limit is not None and body_bytes is not None and body_bytes > limit:
            verdict = Verdict(verdict.number, verdict.delay, TOO_LARGE)
        elif self._buckets is not None and (wait := self._buckets.take(client_key)) is not None:
            verdict = Verdict(verdict.number, verdict.delay, RATE_LIMITED, max(1, math.ceil(wait)))
        if verdict.fault is not None:
            self._faults[verdict.fault] = self._faults.get(verdict.fault, 0) + 1
        return verdict


def _client_key(request: web.BaseRequest) -> str:
    """Whom the rate limit counts: a digest of the Authorization header, never the key itself."""
    return hashlib.sha256(request.headers.get("Authorization", "").encode()).hexdigest()


async def _body_bytes(request: web.BaseRequest, limit: int | None) -> int | None:
    """The request body's size: Content-Length, or (chunked, with a cap set) the body read and cached."""
    if request.content_length is not None or limit is None or not request.body_exists:
        return request.content_length
    return len(await request.read())


def _close(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.close()


def _refusal(status: int, verdict: Verdict, config: FaultConfig, why: str) -> web.Response:
    headers = {} if verdict.retry_after is None else {"Retry-After": str(verdict.retry_after)}
    text = f"{why} (request {verdict.number}, fault seed {config.seed})"
    return web.Response(status=status, text=text, headers=headers)


def cut_stream(request: web.Request) -> bool:
    """Whether a streaming handler must stop after half its announced bytes (``truncate``);
    the connection is closed after it returns."""
    return bool(request.get(_CUT_STREAM))


async def _truncated(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the handler, announce its whole body, send half of it and close the connection."""
    request[_CUT_STREAM] = True
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        response = exc
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes) and not response.prepared:
        cut = web.StreamResponse(status=response.status, reason=response.reason, headers=response.headers)
        cut.content_length = max(len(body), 1)
        await cut.prepare(request)
        await cut.write(body[: len(body) // 2])
        response = cut
    elif not response.prepared:
        await response.prepare(request)
    _close(request)
    return response


async def _cut(request: web.Request, handler: Handler, kind: str) -> web.StreamResponse:
    """Run the handler; a ``/btql`` JSONL answer comes back cut short (``kind``) but framed as
    whole, every header kept; anything else comes back unchanged."""
    response: web.StreamResponse = await handler(request)
    body = response.body if isinstance(response, web.Response) else None
    if (
        _normal(request.path) != "/btql"
        or response.status != 200
        or response.content_type != "application/x-jsonlines"
        or not isinstance(body, bytes)
    ):
        return response
    gzipped = response.headers.get("Content-Encoding") == "gzip"
    plain = zlib.decompress(body, wbits=31) if gzipped else body
    cut = _cut_rows(plain) if kind == "cut_rows" else _cut_line(plain)
    if gzipped:
        compressor = zlib.compressobj(wbits=31)
        cut = compressor.compress(cut) + compressor.flush()
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return web.Response(status=response.status, headers=headers, body=cut)


def _cut_rows(body: bytes) -> bytes:
    """The first half of the lines (rounded down)."""
    lines = body.splitlines(keepends=True)
    return b"".join(lines[: len(lines) // 2])


def _cut_line(body: bytes) -> bytes:
    """Everything before the middle of the line that holds the middle byte, so the body
    ends inside a row (an empty body has no line to cut)."""
    middle = len(body.rstrip(b"\n")) // 2
    start = body.rfind(b"\n", 0, middle) + 1
    end = body.find(b"\n", start)
    end = len(body) if end == -1 else end
    return body[: start + max(1, (end - start) // 2)] if end > start else body


async def _dropped(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the handler (its effects stay), then close the connection without answering."""
    try:
        with contextlib.suppress(web.HTTPException):
            await handler(request)
    finally:
        _close(request)
    return web.Response()


def fault_middleware(
    injector: FaultInjector, is_admin: Callable[[web.Request], Awaitable[bool]]
) -> Middleware:
    """The middleware applying ``injector``'s verdicts and serving the control endpoint.

    The control endpoint is answered here rather than through the router so it works whatever
    routes (catch-alls included) the application registered first, and no fault reaches it,
    so faults can always be switched off.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _normal(request.path) == CONTROL_PATH:
            return await _control(request, injector, is_admin)
        config = injector.config
        if config.exempts(request.path):
            return await handler(request)
        verdict = injector.judge(_client_key(request), await _body_bytes(request, config.max_request_bytes))
        if verdict.delay > 0:
            await anyio.sleep(verdict.delay)
        fault = verdict.fault
        if fault is None:
            return await handler(request)
        if fault == TOO_LARGE:
            return _refusal(413, verdict, config, f"request body over {config.max_request_bytes} bytes")
        if fault == RATE_LIMITED:
            return _refusal(
                429, verdict, config, f"rate limit of {config.rate_limit}/s for this key exceeded"
            )
        if fault == "drop":
            return await _dropped(request, handler)
        if fault == "truncate":
            return await _truncated(request, handler)
        if fault in CUT_KINDS:
            return await _cut(request, handler, fault)
        return _refusal(int(fault), verdict, config, f"injected fault: HTTP {fault}")

    return middleware


async def _control(
    request: web.Request, injector: FaultInjector, is_admin: Callable[[web.Request], Awaitable[bool]]
) -> web.Response:
    """``GET`` shows the configuration and counters; ``PUT`` replaces it (admin keys only).

    A PUT body is a whole configuration (missing settings take their defaults, ``{}`` turns
    everything off) and restarts the numbering, so a seeded run can be replayed at run time.
    """
    if request.method not in ("GET", "PUT"):
        return web.Response(status=405, text=f"{CONTROL_PATH}: use GET or PUT", headers={"Allow": "GET, PUT"})
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return web.Response(
            status=401, text=f"{CONTROL_PATH}: missing API key (send Authorization: Bearer <key>)"
        )
    if not await is_admin(request):
        return web.Response(status=403, text=f"{CONTROL_PATH}: only an admin key may read or change faults")
    if request.method == "PUT":
        try:
            injector.replace(FaultConfig.from_json(orjson.loads(await request.read())))
        except orjson.JSONDecodeError as exc:
            return web.Response(status=400, text=f"{CONTROL_PATH}: invalid JSON body ({exc})")
        except ValueError as exc:
            return web.Response(status=400, text=f"{CONTROL_PATH}: {exc}")
    body = {"config": injector.config.to_json(), "statistics": injector.statistics().to_json()}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def install(
    app: web.Application, injector: FaultInjector, *, is_admin: Callable[[web.Request], Awaitable[bool]]
) -> None:
    """Add fault injection as ``app``'s outermost middleware, with the control endpoint."""
    app.middlewares.insert(0, fault_middleware(injector, is_admin))
