"""Fault injection over loopback: a one-handler aiohttp app with faults installed, real client."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from pipeline.emulator.faults import KINDS, FaultConfig, FaultInjector, install

ADMIN = {"Authorization": "Bearer admin-key"}
USER = {"Authorization": "Bearer user-key"}
OTHER = {"Authorization": "Bearer other-key"}


async def is_admin(request: web.Request) -> bool:
    return request.headers.get("Authorization") == ADMIN["Authorization"]


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    url: str
    session: aiohttp.ClientSession
    injector: FaultInjector
    clock: Clock
    handled: list[int] = field(default_factory=list)

    async def outcome(self, method: str = "POST", path: str = "/v1/thing", **kw: Any) -> str:
        """The status as text, or the fault a client sees as an exception.

        POST by default: aiohttp's client silently re-sends an idempotent request (GET) once
        when the server drops the connection, which would hide the drop and shift the numbering.
        """
        try:
            async with self.session.request(method, self.url + path, **kw) as resp:
                await resp.read()
                return str(resp.status)
        except aiohttp.ServerDisconnectedError:
            return "drop"
        except aiohttp.ClientPayloadError:
            return "truncate"

    async def control(
        self, method: str, body: Any = None, headers: dict[str, str] = ADMIN
    ) -> tuple[int, str]:
        data = None if body is None else orjson.dumps(body)
        async with self.session.request(
            method, self.url + "/_emulator/faults", data=data, headers=headers
        ) as resp:
            return resp.status, await resp.text()

    async def configure(self, **settings: Any) -> None:
        status, text = await self.control("PUT", settings)
        assert status == 200, text


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    handled: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        handled.append(len(body))
        return web.Response(body=orjson.dumps({"path": request.path, "bytes": len(body), "pad": "x" * 500}))

    clock = Clock()
    injector = FaultInjector(clock=clock)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    install(app, injector, is_admin=is_admin)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    # A fresh connection per request, so no request is sent on a connection the server just closed.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        yield Served(url, session, injector, clock, handled)
    await runner.cleanup()


# -- configuration ---------------------------------------------------------------------------

configs = st.builds(
    FaultConfig,
    rate=st.floats(0, 1),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=8).map(tuple),
    retry_after=st.integers(0, 3600),
    latency_ms=st.floats(0, 1e6),
    jitter_ms=st.floats(0, 1e6),
    rate_limit=st.none() | st.floats(0, 1e6, exclude_min=True),
    burst=st.integers(1, 10_000),
    max_request_bytes=st.none() | st.integers(1, 2**40),
    seed=st.integers(0, 2**63 - 1),
    exempt=st.lists(st.from_regex(r"/[a-z0-9_/]{0,12}", fullmatch=True), max_size=3).map(tuple),
)


def command_line(config: FaultConfig) -> str:
    parts = []
    for name, value in config.to_json().items():
        text = ":".join(value) if isinstance(value, list) else "none" if value is None else str(value)
        parts.append(f"{name}={text}")
    return ",".join(parts)


@given(configs)
def test_json_round_trip(config: FaultConfig) -> None:
    assert FaultConfig.from_json(orjson.loads(orjson.dumps(config.to_json()))) == config


@given(configs)
def test_command_line_round_trip(config: FaultConfig) -> None:
    assert FaultConfig.parse(command_line(config)) == config


def test_parse_command_line() -> None:
    config = FaultConfig.parse(
        "rate=0.2, kinds=429:500:502:503:drop:truncate, seed=7,exempt=/version:/health,"
    )
    assert config == FaultConfig(rate=0.2, seed=7, exempt=("/version", "/health"))
    assert FaultConfig.parse("") == FaultConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rate=2", "faults: rate=2.0 must be between 0 and 1"),
        ("rate=nan", "faults: rate=nan must be between 0 and 1"),
        ("kinds=429:404", "faults: kinds: unknown fault '404' (expected 429:500:502:503:drop:truncate:"
         "cut_rows:cut_line)"),
        ("kinds=", "faults: kinds must name at least one of 429:500:502:503:drop:truncate:cut_rows:cut_line"),
        ("seed=abc", "faults: seed='abc' is not an integer"),
        ("seed=none", "faults: seed cannot be empty"),
        ("latency_ms=-1", "faults: latency_ms=-1.0 must be a finite number >= 0"),
        ("rate_limit=0", "faults: rate_limit=0.0 must be > 0"),
        ("burst=0", "faults: burst=0 must be >= 1"),
        ("max_request_bytes=0", "faults: max_request_bytes=0 must be > 0"),
        ("exempt=version", "faults: exempt: path 'version' must start with '/'"),
        ("rate", "faults: 'rate' must look like NAME=VALUE"),
        ("speed=3", "faults: unknown setting 'speed' (expected one of rate, kinds, retry_after, latency_ms, "
         "jitter_ms, rate_limit, burst, max_request_bytes, seed, exempt)"),
    ],
)  # fmt: skip
def test_parse_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        FaultConfig.parse(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1], "faults: the configuration must be a JSON object"),
        ({"rate": True}, "faults: rate=True is not a number"),
        ({"seed": 1.5}, "faults: seed=1.5 is not an integer"),
        ({"kinds": [429]}, "faults: kinds must be a list of strings"),
    ],
)
def test_json_errors(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        FaultConfig.from_json(value)
    assert str(caught.value) == message


def test_plan_is_a_function_of_seed_and_number() -> None:
    config = FaultConfig(rate=0.3, latency_ms=10, jitter_ms=5, seed=11)
    first, second = FaultInjector(config), FaultInjector(config)
    plans = [first.plan(n) for n in range(200)]
    assert plans == [second.plan(n) for n in range(200)]
    assert all(0.010 <= p.delay <= 0.015 for p in plans)
    assert len({p.delay for p in plans}) == 200
    # Changing the mix or the jitter does not move which requests fail.
    other = FaultInjector(FaultConfig(rate=0.3, kinds=("500",), seed=11))
    assert [p.fault is None for p in plans] == [other.plan(n).fault is None for n in range(200)]


# -- over HTTP -------------------------------------------------------------------------------


async def test_off_by_default(served: Served) -> None:
    assert [await served.outcome() for _ in range(30)] == ["200"] * 30
    assert len(served.handled) == 30
    status, text = await served.control("GET")
    assert status == 200
    assert orjson.loads(text) == {
        "config": FaultConfig().to_json(),
        "statistics": {"requests": 30, "faults": {}},
    }


async def test_same_seed_same_sequence(served: Served) -> None:
    await served.configure(rate=0.5, seed=7)
    first = [await served.outcome() for _ in range(40)]
    await served.configure(rate=0.5, seed=7)
    assert [await served.outcome() for _ in range(40)] == first
    assert first == [served.injector.plan(n).fault or "200" for n in range(40)]
    assert first[:12] == [
        "200",
        "200",
        "truncate",
        "200",
        "500",
        "200",
        "200",
        "drop",
        "200",
        "200",
        "500",
        "200",
    ]
    assert set(first) == {"200", *KINDS}
    await served.configure(rate=0.5, seed=8)
    assert [await served.outcome() for _ in range(40)] != first


async def test_fault_rate_near_fraction(served: Served) -> None:
    await served.configure(rate=0.2, kinds=["500", "503"], seed=3)
    outcomes = [await served.outcome() for _ in range(400)]
    faults = 400 - outcomes.count("200")
    assert faults == 90
    assert 50 <= faults <= 110
    assert served.injector.statistics().faults == {"500": outcomes.count("500"), "503": outcomes.count("503")}
    assert len(served.handled) == 400 - faults


async def test_429_carries_retry_after(served: Served) -> None:
    await served.configure(rate=1, kinds=["429"], retry_after=5, seed=1)
    async with served.session.get(served.url + "/v1/thing") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "5"
        assert await resp.text() == "injected fault: HTTP 429 (request 0, fault seed 1)"
    assert served.handled == []


async def test_truncated_body_fails_the_client_read(served: Served) -> None:
    await served.configure(rate=1, kinds=["truncate"])
    async with served.session.post(served.url + "/v1/thing", data=b"abc") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert served.handled == [3]


async def test_dropped_connection_after_the_handler_ran(served: Served) -> None:
    await served.configure(rate=1, kinds=["drop"])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with served.session.post(served.url + "/v1/thing", data=b"abcd"):
            pass
    assert served.handled == [4]
    assert served.injector.statistics().faults == {"drop": 1}


async def test_rate_limit_per_key(served: Served) -> None:
    await served.configure(rate_limit=2, burst=3)
    assert [await served.outcome(headers=USER) for _ in range(4)] == ["200", "200", "200", "429"]
    async with served.session.get(served.url + "/v1/thing", headers=USER) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
    assert await served.outcome(headers=OTHER) == "200"
    served.clock.now += 0.5
    assert [await served.outcome(headers=USER) for _ in range(2)] == ["200", "429"]
    assert served.injector.statistics().faults == {"rate_limited": 3}


async def test_request_size_cap(served: Served) -> None:
    await served.configure(max_request_bytes=100)

    async def chunked(size: int) -> AsyncIterator[bytes]:
        for _ in range(size // 10):
            yield b"0123456789"

    assert await served.outcome("POST", data=b"x" * 100) == "200"
    assert await served.outcome("POST", data=b"x" * 101) == "413"
    assert await served.outcome("POST", data=chunked(150)) == "413"
    assert await served.outcome("POST", data=chunked(50)) == "200"
    assert served.handled == [100, 50]
    assert served.injector.statistics().faults == {"413": 2}


async def test_exempt_paths_are_never_faulted(served: Served) -> None:
    await served.configure(rate=1, kinds=["503"], exempt=["/version"])
    outcomes = [await served.outcome(path=p) for p in ("/version", "/version/x", "//version", "/versions")]
    assert outcomes == ["200", "200", "200", "503"]
    assert served.injector.statistics().requests == 1


async def test_control_endpoint_admin_only(served: Served) -> None:
    assert await served.control("GET", headers={}) == (
        401, "/_emulator/faults: missing API key (send Authorization: Bearer <key>)"
    )  # fmt: skip
    forbidden = (403, "/_emulator/faults: only an admin key may read or change faults")
    assert await served.control("GET", headers=USER) == forbidden
    assert await served.control("PUT", {"rate": 1}, headers=USER) == forbidden
    assert served.injector.config == FaultConfig()
    assert (await served.control("POST", {}))[0] == 405
    status, text = await served.control("PUT", {"rate": 3})
    assert (status, text) == (400, "/_emulator/faults: faults: rate=3.0 must be between 0 and 1")
    async with served.session.put(served.url + "/_emulator/faults", data=b"{", headers=ADMIN) as resp:
        assert resp.status == 400
        assert (await resp.text()).startswith("/_emulator/faults: invalid JSON body")


async def test_runtime_changes_take_effect(served: Served) -> None:
    served.injector.replace(FaultConfig(rate=1, kinds=("503",)))
    assert await served.outcome() == "503"
    status, text = await served.control("GET")
    assert orjson.loads(text)["statistics"] == {"requests": 1, "faults": {"503": 1}}
    # Faults never reach the control endpoint, so they can always be switched off.
    status, text = await served.control("PUT", {"rate": 0, "seed": 4})
    assert status == 200
    assert orjson.loads(text) == {
        "config": FaultConfig(seed=4).to_json(),
        "statistics": {"requests": 0, "faults": {}},
    }
    assert await served.outcome() == "200"
    await served.configure(rate=1, kinds=["502"])
    assert await served.outcome() == "502"
