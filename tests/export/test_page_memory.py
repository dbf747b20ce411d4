"""A page leaves memory once it is written: the page budget bounds the pages an export holds.

The budget (``--workers`` plus the encoders, in pages) counts a page from its request until
its sink has written it. A reference kept after that (the first page of a range, read while
planning, held by the range for its whole read) would hold one page per range beyond the
budget: tens of MB at the default ranges, for as long as the export runs. Here every write
counts the pages written before it that are still alive; with one range read at a time the
writes follow each other, so that count must be zero.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import Emulator
from tests.helpers import insert, post, read_export_files, unique
from tests.reliability.support import cli_env

#: ``btpipe ARGS``, printing at exit the most pages alive at a write that were written before it.
COUNT_WRITTEN_PAGES_ALIVE = """
import atexit
import sys
import weakref
from pipeline.api import btql
from pipeline.cli import main
from pipeline.sinks.jsonl import JsonlSink

made = {}  # id of a page's bytes -> the page
written = []
worst = [0]


class Tracked(btql.Page):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        made[id(self.raw)] = weakref.ref(self)


write = JsonlSink.write_page


def counting(self, page, rows=None):
    worst[0] = max(worst[0], sum(ref() is not None for ref in written))
    write(self, page, rows)
    ref = made.get(id(page))
    if ref is not None and ref() is not None:
        written.append(ref)


btql.Page = Tracked
JsonlSink.write_page = counting
atexit.register(lambda: print("written pages alive:", worst[0], len(written), file=sys.stderr))
main(sys.argv[1:], prog_name="btpipe")
"""


def test_a_written_page_is_not_kept(emulator: Emulator, tmp_path: Path) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("page-memory")})
    rows = [{"id": f"r{i:04d}", "input": {"i": i}} for i in range(300)]
    for start in range(0, 300, 50):
        insert(emulator.url, emulator.key, "project_logs", project["id"], rows[start : start + 50])
    args = ("export", "--project", project["name"], "--objects", "logs", "--out", str(tmp_path),
            "--format", "jsonl", "--json", "--quiet", "--workers", "1", "--ranges-per-object", "3",
            "--min-rows-per-range", "50", "--page-limit", "20")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", COUNT_WRITTEN_PAGES_ALIVE, *args],
                          env=cli_env(emulator.url, emulator.key), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["objects"][0]["files"] == 3  # a file per range
    report = done.stderr.strip().splitlines()[-1]
    alive, writes = (int(n) for n in report.removeprefix("written pages alive:").split())
    assert writes >= 15  # every page went through the count
    assert alive == 0, report
    exported = read_export_files(tmp_path, "project_logs", project["id"])
    assert sorted(r["id"] for r in exported) == [r["id"] for r in rows]
