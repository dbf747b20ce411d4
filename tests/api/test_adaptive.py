"""Rate limits in the HTTP client, against a fake server on 127.0.0.1: the adaptive limit on
requests in flight, jitter on ``Retry-After``, and 429s that spend no attempts while other
requests get through.

The server speaks plain HTTP (429 with ``Retry-After``); time is a virtual clock that the
recorded waits move forward, so the patience bound is checked exactly and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import anyio
import pytest
from aiohttp import web

from pipeline.api import client as client_module
from pipeline.api.client import BraintrustClient, ClientSettings, RetryPolicy
from pipeline.common.errors import TransientApiError
from tests.api.test_client import QUICK, answer, serve, settings

OK_BODY = b'{"ok": true}'


@dataclass
class Clock:
    """Virtual monotonic time, moved on by every wait the client asks for."""

    now: float = 1_000.0
    waits: list[float] = field(default_factory=list)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    virtual = Clock()
    real_sleep = anyio.sleep

    async def sleep(delay: float) -> None:
        virtual.waits.append(delay)
        virtual.now += delay
        await real_sleep(0)

    monkeypatch.setattr(anyio, "sleep", sleep)
    monkeypatch.setattr(client_module, "monotonic", lambda: virtual.now)
    return virtual


def by_path(
    busy_for: int, retry_after: str = "1"
) -> Callable[[web.Request, int], Awaitable[web.StreamResponse]]:
    """``/busy`` answers 429 to its first ``busy_for`` requests (all, if negative); any other
    path answers 200."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/busy" and (busy_for < 0 or n <= busy_for):
            return answer(429, b"slow down", {"Retry-After": retry_after})
        return answer(200, OK_BODY, {"Content-Type": "application/json"})

    return handler


def limited(url: str, maximum: int, **retry: float) -> ClientSettings:
    """A client of at most ``maximum`` requests in flight; ``retry`` changes the retry policy."""
    policy = replace(RetryPolicy(max_attempts=QUICK.max_attempts, base_delay=0.001), **retry)
    return settings(url, retry=policy, max_connections=maximum)


# -- the limit on requests in flight ------------------------------------------------------------


async def test_each_429_halves_the_requests_in_flight_down_to_one(clock: Clock) -> None:
    async with (
        serve(by_path(busy_for=-1)) as fake,
        BraintrustClient(limited(fake.url, 8, max_attempts=1)) as client,
    ):
        assert client.statistics().concurrency == 8
        seen = []
        for _ in range(4):
            with pytest.raises(TransientApiError):
                await client.post_json("/busy", {})
            seen.append(client.statistics().concurrency)
    assert seen == [4, 2, 1, 1]


async def test_429s_to_requests_sent_together_halve_the_limit_once(clock: Clock) -> None:
    """Four requests in flight get 429 together: one signal of one overload, one cut."""
    arrived = asyncio.Event()
    count = 0

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal count
        count += 1
        if count == 4:
            arrived.set()
        await arrived.wait()
        return answer(429, b"slow down", {"Retry-After": "0"})

    async with serve(handler) as fake, BraintrustClient(limited(fake.url, 8, max_attempts=1)) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(refused, client)
        assert client.statistics().concurrency == 4
        await refused(client)  # sent after the cut: a new signal
        assert client.statistics().concurrency == 2


async def refused(client: BraintrustClient) -> None:
    with pytest.raises(TransientApiError):
        await client.post_json("/busy", {})


async def test_the_limit_holds_requests_back_and_successes_raise_it(clock: Clock) -> None:
    gate = asyncio.Event()
    held = 0

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal held
        if request.path == "/busy":
            return answer(429, b"slow down", {"Retry-After": "0"})
        held += 1
        await gate.wait()
        return answer(200, OK_BODY, {"Content-Type": "application/json"})

    async with serve(handler) as fake, BraintrustClient(limited(fake.url, 8, max_attempts=1)) as client:
        for _ in range(2):
            await refused(client)
        assert client.statistics().concurrency == 2
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(client.get_json, "/held")
            while held < 2:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # time for a third request, were the limit not kept
            assert held == 2
            gate.set()
        assert held == 6
        # 2 successes take the limit to 3, 3 more to 4, and the sixth starts the next run
        assert client.statistics().concurrency == 4


async def test_successes_grow_the_limit_back_by_one_per_run_up_to_the_maximum(clock: Clock) -> None:
    async with (
        serve(by_path(busy_for=-1)) as fake,
        BraintrustClient(limited(fake.url, 5, max_attempts=1)) as client,
    ):
        for _ in range(3):
            await refused(client)
        assert client.statistics().concurrency == 1
        seen = []
        for _ in range(14):
            assert await client.get_json("/ok") == {"ok": True}
            seen.append(client.statistics().concurrency)
    # a run as long as the limit adds one: 1 success, then 2, 3, 4; never past --connections
    assert seen == [2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5]


# -- jitter ---------------------------------------------------------------------------------------


async def test_retry_after_gets_up_to_half_again_of_random_extra(clock: Clock) -> None:
    async with (
        serve(by_path(busy_for=30, retry_after="1")) as fake,
        BraintrustClient(limited(fake.url, 8)) as client,
    ):
        await client.get_json("/ok")
        assert await client.post_json("/busy", {}) == {"ok": True}
    assert len(clock.waits) == 30
    assert all(1.0 <= wait <= 1.5 for wait in clock.waits), clock.waits
    assert len(set(clock.waits)) == 30  # clients told the same delay do not come back in step


@pytest.mark.parametrize(
    ("jitter", "header", "expected"), [(0.5, "2", 3.0), (0.0, "2", 2.0), (0.5, "0", 0.125)]
)
async def test_the_retry_after_extra_is_a_setting(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, jitter: float, header: str, expected: float
) -> None:
    """The top of the range (``random.uniform`` pinned high); ``Retry-After: 0`` is spread
    over half the base delay, so it is not a lockstep either."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    retry = {"retry_after_jitter": jitter, "base_delay": 0.25}
    async with (
        serve(by_path(busy_for=1, retry_after=header)) as fake,
        BraintrustClient(limited(fake.url, 8, **retry)) as client,
    ):
        assert await client.post_json("/busy", {}) == {"ok": True}
    assert clock.waits == [expected]


# -- the attempt budget ---------------------------------------------------------------------------


async def test_429s_spend_no_attempts_while_other_requests_succeed(clock: Clock) -> None:
    async with serve(by_path(busy_for=20)) as fake, BraintrustClient(limited(fake.url, 8)) as client:
        await client.get_json("/ok")
        assert await client.post_json("/busy", {}) == {"ok": True}  # 20 429s on a budget of 4
        stats = client.statistics()
    assert (stats.requests, stats.retries, stats.throttled) == (22, 0, 20)
    assert len(clock.waits) == 20


async def test_without_any_success_429s_spend_attempts_like_any_failure(clock: Clock) -> None:
    async with serve(by_path(busy_for=-1)) as fake, BraintrustClient(limited(fake.url, 8)) as client:
        with pytest.raises(TransientApiError) as caught:
            await client.post_json("/busy", {})
        stats = client.statistics()
    assert str(caught.value) == "POST /busy: gave up after 4 attempts: POST /busy -> HTTP 429: slow down"
    assert (stats.requests, stats.retries, stats.throttled) == (4, 3, 0)


async def test_a_server_answering_only_429_gives_up_after_the_patience(clock: Clock) -> None:
    """After the last success, 429s are free for ``throttle_patience`` seconds, then each spends
    an attempt: the request fails after a bounded time, with one line."""
    async with (
        serve(by_path(busy_for=-1)) as fake,
        BraintrustClient(limited(fake.url, 8, throttle_patience=10.0)) as client,
    ):
        await client.get_json("/ok")
        with pytest.raises(TransientApiError) as caught:
            await client.post_json("/busy", {})
        stats = client.statistics()
    # the k-th 429 comes after the waits before it: free while that is within the patience
    elapsed = [sum(clock.waits[:k]) for k in range(len(clock.waits))]
    free = sum(1 for t in elapsed if t <= 10.0)
    assert free >= 6  # waits of 1 to 1.5 s
    assert (stats.retries, stats.throttled, stats.requests) == (3, free, 1 + free + 4)
    assert str(caught.value) == (
        f"POST /busy: gave up after 4 attempts and {free} waits on 429: POST /busy -> HTTP 429: slow down"
    )
    assert sum(clock.waits) <= 10.0 + 1.5 * 4  # bounded: the patience plus the budget's waits
