"""``btpipe query --all``: the text (BTQL or SQL) is parsed and sent as a query object with the
cursor inside it, page after page, on both profiles; every row comes once.

The server's request counter (the fault injector's, which counts every request it is sent)
shows the pages: one request a page, and one more for the empty page that ends them.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, unique

ROWS = 1000


@pytest.fixture(scope="module")
def logs(profiled_emulator: Emulator) -> dict[str, Any]:
    emu = profiled_emulator
    project: dict[str, Any] = post(emu.url, emu.key, "/v1/project", {"name": unique("query-pages")})
    for start in range(0, ROWS, 250):
        insert(emu.url, emu.key, "project_logs", project["id"],
               [{"id": f"q{i:04d}", "input": i, "metadata": {"odd": i % 2 == 1}} for i in range(start, start + 250)])  # fmt: skip
    return project


def query(emu: Emulator, server: RunningServer, *args: str) -> tuple[list[dict[str, Any]], int]:
    """The rows ``btpipe query ARGS`` prints and the requests it sent."""
    server.faults.replace(FaultConfig())  # restarts the server's request count
    result = btpipe(emu, "query", *args)
    assert result.exit_code == 0, result.output
    rows = [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return rows, server.faults.statistics().requests


@pytest.mark.parametrize(
    ("text", "selected", "pages"),
    [
        ("select: id, input | from: project_logs('{id}') | limit: 300", range(ROWS), 4),
        ("select: id, input\nfrom: project_logs('{id}') spans\nfilter: metadata.odd = true\nlimit: 120",
         range(1, ROWS, 2), 5),
        ("SELECT id, input FROM project_logs('{id}') LIMIT 300", range(ROWS), 4),
        ("SELECT id, input FROM project_logs('{id}', shape => 'spans') WHERE input >= 250 AND input < 900 LIMIT 100",
         range(250, 900), 7),
    ],
    ids=["btql", "btql-lines-filter", "sql", "sql-where"],
)  # fmt: skip
def test_all_pages_every_row_once(
    profiled_emulator: Emulator,
    profiled_server: RunningServer,
    logs: dict[str, Any],
    text: str,
    selected: range,
    pages: int,
) -> None:
    text = text.replace("{id}", logs["id"])
    rows, requests = query(profiled_emulator, profiled_server, text, "--all")
    assert sorted(r["id"] for r in rows) == [f"q{i:04d}" for i in selected]  # each once
    assert all(r["input"] == int(r["id"][1:]) for r in rows)
    assert requests == pages + 1
    first, requests = query(profiled_emulator, profiled_server, text)
    assert first == rows[: len(first)] and requests == 1  # without --all: the first page only


def test_all_at_a_version_reads_the_rows_as_they_were(
    profiled_emulator: Emulator, profiled_server: RunningServer
) -> None:
    emu = profiled_emulator
    project = post(emu.url, emu.key, "/v1/project", {"name": unique("query-version")})
    insert(
        emu.url, emu.key, "project_logs", project["id"], [{"id": f"v{i:03d}", "input": i} for i in range(250)]
    )
    version = max(r["_xact_id"] for r in all_rows(emu.url, emu.key, "project_logs", project["id"]).values())
    insert(emu.url, emu.key, "project_logs", project["id"], [
        *({"id": f"v{i:03d}", "_is_merge": True, "input": -i} for i in range(0, 250, 5)),
        *({"id": f"w{i:03d}", "input": i} for i in range(40)),
    ])  # fmt: skip
    text = f"SELECT id, input FROM project_logs('{project['id']}') LIMIT 60"
    rows, requests = query(emu, profiled_server, text, "--all", "--version", version)
    assert sorted((r["id"], r["input"]) for r in rows) == [(f"v{i:03d}", i) for i in range(250)]
    assert requests == 5 + 1
    now, _ = query(emu, profiled_server, text, "--all")
    assert len(now) == 290 and {r["input"] for r in now if r["id"] == "v005"} == {-5}
