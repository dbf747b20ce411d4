"""Pages cut short yet framed as whole (``cut_rows``, ``cut_line``): no transport error shows
them, so only the pager's own checks stand between them and rows silently lost.

A cut page keeps the cursor of the whole page: accepting it would skip the rows cut off. The
export must still hold exactly the server's rows, on both profiles, and a server whose every
answer is cut must stop the read with one line.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from pipeline.api.btql import Pager, build_query
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.common.errors import ApiError
from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, read_export_files, unique

ROWS = 500


@contextmanager
def faults(server: RunningServer, **settings: Any) -> Iterator[None]:
    """``settings`` on ``server`` for the block, then no faults again."""
    server.faults.replace(FaultConfig(**settings))
    try:
        yield
    finally:
        server.faults.replace(FaultConfig())


@pytest.fixture(scope="module")
def logs(profiled_emulator: Emulator) -> dict[str, Any]:
    """A project whose rows came in five writes, with ``created`` times a minute apart spelled
    with offsets, so both profiles split the object into several ranges."""
    emu = profiled_emulator
    project: dict[str, Any] = post(emu.url, emu.key, "/v1/project", {"name": unique("cut")})
    for start in range(0, ROWS, ROWS // 5):
        insert(emu.url, emu.key, "project_logs", project["id"], [
            {"id": f"c{i:04d}", "input": {"i": i, "text": "z" * (i % 40)},
             "created": f"2026-03-01T{10 + i // 60:02d}:{i % 60:02d}:00+02:00"}
            for i in range(start, start + ROWS // 5)
        ])  # fmt: skip
    return project


async def _raw_page(emu: Emulator, query: dict[str, Any], gzip_ok: bool) -> tuple[bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {emu.key}", "Accept-Encoding": "gzip" if gzip_ok else "identity"}
    async with (
        aiohttp.ClientSession(headers=headers, auto_decompress=False) as session,
        session.post(emu.url + "/btql", json={"query": query, "fmt": "jsonl"}) as resp,
    ):
        assert resp.status == 200
        body = await resp.read()
        assert int(resp.headers["Content-Length"]) == len(body)
        if resp.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body, dict(resp.headers)


@pytest.mark.parametrize("gzip_ok", [False, True])
def test_cut_answers_are_framed_as_whole_and_keep_the_cursor(
    profiled_emulator: Emulator, profiled_server: RunningServer, logs: dict[str, Any], gzip_ok: bool
) -> None:
    query = build_query("project_logs", logs["id"]) | {"limit": 300}
    whole, headers = anyio.run(_raw_page, profiled_emulator, query, gzip_ok)
    lines = whole.splitlines(keepends=True)
    assert len(lines) == 300
    with faults(profiled_server, rate=1, kinds=("cut_rows",)):
        rows, rows_headers = anyio.run(_raw_page, profiled_emulator, query, gzip_ok)
    with faults(profiled_server, rate=1, kinds=("cut_line",)):
        line, line_headers = anyio.run(_raw_page, profiled_emulator, query, gzip_ok)
    assert rows == b"".join(lines[:150])
    assert line.startswith(b"".join(lines[:150])) and len(line) < len(b"".join(lines[:151])) - 1
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line.splitlines()[-1])
    assert rows_headers["x-bt-cursor"] == line_headers["x-bt-cursor"] == headers["x-bt-cursor"]


@pytest.mark.parametrize("seed", [3, 11])
def test_an_export_through_cut_pages_holds_exactly_the_rows(
    profiled_emulator: Emulator,
    profiled_server: RunningServer,
    logs: dict[str, Any],
    tmp_path: Path,
    seed: int,
) -> None:
    with faults(profiled_server, rate=0.2, kinds=("cut_rows", "cut_line"), seed=seed):
        result = btpipe(profiled_emulator, "export", "--project", logs["name"], "--objects", "logs",
                        "--format", "jsonl", "--out", str(tmp_path), "--json", "--page-limit", "9",
                        "--min-rows-per-range", "100", "--ranges-per-object", "4", "--file-rows", "60")  # fmt: skip
        cut = sum(profiled_server.faults.statistics().faults.values())
    assert result.exit_code == 0, result.output
    exported = read_export_files(tmp_path, "project_logs", logs["id"])
    assert len(exported) == ROWS
    assert {r["id"]: r for r in exported} == all_rows(
        profiled_emulator.url, profiled_emulator.key, "project_logs", logs["id"]
    )
    assert orjson.loads(result.stdout)["rows"] == ROWS
    assert cut >= 5, "too few answers were cut to prove anything"


def test_every_answer_cut_stops_the_read_with_one_line(
    profiled_emulator: Emulator, profiled_server: RunningServer, logs: dict[str, Any], tmp_path: Path
) -> None:
    async def read_all() -> int:
        settings = ClientSettings(api_url=profiled_emulator.url, api_key=profiled_emulator.key)
        async with BraintrustClient(settings) as client:
            pager = Pager(client, build_query("project_logs", logs["id"]), version=None)
            return sum([page.rows async for page in pager.pages()])

    with faults(profiled_server, rate=1, kinds=("cut_line",)):
        with pytest.raises(ApiError) as raised:
            anyio.run(read_all)
        result = btpipe(profiled_emulator, "export", "--project", logs["name"], "--objects", "logs",
                        "--format", "jsonl", "--out", str(tmp_path))  # fmt: skip
    message = str(raised.value)
    assert message.startswith("/btql: ") and "cut short" in message and "\n" not in message
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"btpipe: error: {message}"]
