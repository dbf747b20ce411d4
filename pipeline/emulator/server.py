"""Running the emulator: as the main program (:func:`serve`) or in a background thread
(:func:`start_in_thread`, used by tests and benchmarks that need a server beside them).

Both print nothing themselves except :func:`serve`, which prints the one readiness line
``emulator listening on http://HOST:PORT`` (with the real port when 0 was asked for).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from pipeline.emulator.app import DEFAULT_MAX_REQUEST_BYTES, AppConfig, create_app
from pipeline.emulator.auth import DEFAULT_KEYS, KeySpec, register_keys
from pipeline.emulator.faults import FaultConfig, FaultInjector
from pipeline.emulator.profiles import ReadPolicy
from pipeline.emulator.sample import load_sample
from pipeline.emulator.store import Store

#: The readiness line :func:`serve` prints, followed by the URL.
LISTENING = "emulator listening on "


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    db: str = ":memory:"
    keys: Sequence[KeySpec] = field(default_factory=lambda: DEFAULT_KEYS)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    faults: FaultConfig = field(default_factory=FaultConfig)
    sample_traces: int = 0
    seed: int = 0
    profile: str = "default"  # "conservative": refuse /btql features no official client uses
    query_timeout_rows: int | None = None  # /btql answers 504 past this many rows scanned

    def __post_init__(self) -> None:
        self.reads()  # an unknown profile or a negative limit fails here, not in the server thread

    def reads(self) -> ReadPolicy:
        return ReadPolicy(self.profile, self.query_timeout_rows)


def open_store(config: ServerConfig) -> Store:
    """Open the database, register the keys and load sample data when asked."""
    db = Store(config.db)
    register_keys(db, list(config.keys))
    if config.sample_traces:
        owner = config.keys[0]
        load_sample(db, owner.org, owner.email, config.sample_traces, config.seed)
    return db


async def _start(config: ServerConfig, db: Store, faults: FaultInjector) -> tuple[web.AppRunner, str]:
    app = create_app(db, AppConfig(config.max_request_bytes, config.reads()), faults)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.create_server((config.host, config.port), reuse_port=False)
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()[:2]
    return runner, f"http://{host}:{port}"


async def serve(config: ServerConfig) -> None:
    """Serve until cancelled (Ctrl-C), then close the database."""
    db = open_store(config)
    runner, url = await _start(config, db, FaultInjector(config.faults))
    print(f"{LISTENING}{url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        db.close()


class RunningServer:
    """An emulator serving from a background thread with its own event loop."""

    def __init__(self, config: ServerConfig) -> None:
        self.store = open_store(config)
        self.faults = FaultInjector(config.faults)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._run, args=(config,), name="emulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if not self.url:
            raise RuntimeError(f"emulator failed to start on {config.host}:{config.port}")

    def _run(self, config: ServerConfig) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner, self.url = self._loop.run_until_complete(_start(config, self.store, self.faults))
        finally:
            self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        """Stop serving, close the database; safe to call twice."""
        if self._loop.is_closed():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self.store.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(config: ServerConfig) -> RunningServer:
    return RunningServer(config)


class EmulatorStartError(RuntimeError):
    """The emulator process exited or printed something else before its readiness line."""


@contextmanager
def spawn_emulator(db: str | os.PathLike[str], *args: str) -> Iterator[str]:
    """Run ``python -m pipeline emulator`` on ``db`` as a separate process on a free port;
    yield its URL; always stop it. For the demo, restart tests and benchmarks, where the
    server must not share a process (or a GIL) with the client."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "emulator", "--port", "0", "--db", str(db), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(LISTENING):
            proc.kill()
            output = f"{line}{proc.stderr.read() if proc.stderr else ''}".strip().splitlines()
            raise EmulatorStartError(
                f"the emulator did not start: {output[-1][-500:] if output else 'no output'}"
            )
        yield line[len(LISTENING) :].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
