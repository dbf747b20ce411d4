"""A run's ``started_at`` is when it started, before it planned: the snapshot versions it read
may predate the end of planning, and a user taking ``started_at`` as "the data as of" must not
be told a later time than the one the run read at."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import orjson

from tests.conftest import Emulator
from tests.helpers import insert, post, unique
from tests.reliability.support import cli_env

#: ``btpipe ARGS`` with planning slowed down, printing when the first object's planning began.
SLOW_PLANNING = """
import sys
from datetime import UTC, datetime
import anyio
from pipeline.cli import main
from pipeline.export.runner import ExportJob

plan = ExportJob._plan_object
began = []

async def slow(self, *args, **kwargs):
    began.append(datetime.now(UTC).isoformat())
    print("planning began", began[0], file=sys.stderr)
    await anyio.sleep(0.5)
    return await plan(self, *args, **kwargs)

ExportJob._plan_object = slow
main(sys.argv[1:], prog_name="btpipe")
"""


def test_started_at_is_before_planning(emulator: Emulator, tmp_path: Path) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("times")})
    insert(emulator.url, emulator.key, "project_logs", project["id"], [{"id": "a", "input": 1}])
    args = ("export", "--project", project["name"], "--objects", "logs", "--out", str(tmp_path), "--json", "--quiet")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", SLOW_PLANNING, *args], env=cli_env(emulator.url, emulator.key),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    began = datetime.fromisoformat(done.stderr.split("planning began ")[1].split()[0])
    manifest = orjson.loads((tmp_path / orjson.loads(done.stdout)["manifest"]).read_bytes())
    assert datetime.fromisoformat(manifest["started_at"]) <= began
    assert datetime.fromisoformat(manifest["finished_at"]) >= began
