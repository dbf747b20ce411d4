"""Pages read while an export plans never stall it.

While it plans, an export reads the first page of each range, as far as the page budget
(``--workers`` plus the encoders, in pages) has room; then the ranges take the ``--workers``
limiter in turn. Were the ranges holding those pages to wait behind ranges holding none, the
budget would be held by ranges that cannot run, and the ranges running would wait for a slot
for ever: an export that never ends. Here the logs are planned last (a delay injected into
planning, in the export's own process), so the dataset's ranges take every slot while the
logs come first in the run: the export must finish, with every row of both once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import Emulator
from tests.helpers import all_rows, insert, post, read_export_files, unique
from tests.reliability.support import cli_env, hashes

#: ``btpipe ARGS`` with the logs planned half a second after every other object.
LOGS_PLANNED_LAST = """
import sys
import anyio
from pipeline.cli import main
from pipeline.export.runner import ExportJob

plan = ExportJob._plan_object

async def logs_last(self, ref, *args, **kwargs):
    if ref.object_type == "project_logs":
        await anyio.sleep(0.5)
    return await plan(self, ref, *args, **kwargs)

ExportJob._plan_object = logs_last
main(sys.argv[1:], prog_name="btpipe")
"""
#: Four ranges an object, three at a time: a page budget of four, all the dataset's.
SPLIT = ("--workers", "3", "--ranges-per-object", "4", "--min-rows-per-range", "50", "--page-limit", "20")


def created(i: int) -> str:
    return f"2026-03-02T{8 + i // 60:02d}:{i % 60:02d}:00Z"


def seed(emu: Emulator) -> dict[str, tuple[str, str]]:
    """Logs and a dataset written in eight requests each, ``created`` a minute apart, so that
    both profiles split each into four ranges: object label -> (type, id)."""
    project = post(emu.url, emu.key, "/v1/project", {"name": unique("read-ahead")})
    dataset = post(emu.url, emu.key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    objects = {"logs": ("project_logs", project["id"]), "dataset": ("dataset", dataset["id"])}
    for object_type, object_id in objects.values():
        for start in range(0, 400, 50):
            rows = [
                {"id": f"r{i:04d}", "input": {"i": i}, "created": created(i)}
                for i in range(start, start + 50)
            ]
            insert(emu.url, emu.key, object_type, object_id, rows)
    objects["project"] = ("project", project["name"])
    return objects


def test_an_export_whose_later_objects_take_the_page_budget_while_planning_finishes(
    profiled_emulator: Emulator, tmp_path: Path
) -> None:
    emu = profiled_emulator
    objects = seed(emu)
    project = objects.pop("project")[1]
    args = ("export", "--project", project, "--objects", "logs,datasets", "--out", str(tmp_path),
            "--format", "jsonl", "--json", "--quiet", *SPLIT)  # fmt: skip
    try:
        done = subprocess.run([sys.executable, "-c", LOGS_PLANNED_LAST, *args], env=cli_env(emu.url, emu.key),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError("the export did not finish in 60 s: its ranges wait for each other") from None
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = orjson.loads((tmp_path / orjson.loads(done.stdout)["manifest"]).read_bytes())
    for object_type, object_id in objects.values():
        (obj,) = [o for o in manifest["objects"] if o["object_id"] == object_id]
        assert len({Path(f["path"]).name.split("-")[0] for f in obj["files"]}) == 4, "not four ranges"
        rows = hashes(read_export_files(tmp_path, object_type, object_id))
        assert rows == hashes(all_rows(emu.url, emu.key, object_type, object_id).values())
