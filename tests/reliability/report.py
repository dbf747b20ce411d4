"""Run the reliability suite and print the figures table of ``bench/RELIABILITY.md``.

    .venv/bin/python -m tests.reliability.report            # the default-suite figures
    .venv/bin/python -m tests.reliability.report --chaos    # the make chaos figures

The tests add their figures (faults injected, crashes survived, ...) to a JSON file named
by ``BTPIPE_RELIABILITY_FIGURES``; rows lost and duplicated are 0 only when every test
passed, since each one asserts the exact row set and content hash per row.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from tests.reliability.support import FIGURES_ENV

ORDER = (
    "faults injected", "retries under faults", "rows moved under faults", "crashes survived",
    "rows moved across crashes", "server restarts survived", "rows moved across restarts",
    "bad inputs tried", "files and console streams scanned for keys",
    "rows moved under a 3/s rate limit", "429s waited out",
    "one-line failures checked", "skipped events counted once across a full disk",
    "interrupts resumed exactly",
    "runs checked", "rows checked", "concurrent writes during exports", "restores checked", "deletes applied",
)  # fmt: skip


def main(argv: list[str]) -> int:
    chaos = "--chaos" in argv
    command = [sys.executable, "-m", "pytest", "-q", "tests/reliability", *(["-m", "chaos"] if chaos else [])]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        figures_file = Path(tmp) / "figures.json"
        done = subprocess.run(command, env={**os.environ, FIGURES_ENV: str(figures_file)})
        figures = orjson.loads(figures_file.read_bytes()) if figures_file.exists() else {}
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    shown = "make chaos" if chaos else "make test"
    how = f"`.venv/bin/python -m tests.reliability.report{' --chaos' if chaos else ''}`"
    print(f"| figure ({shown}) | value | command |\n|---|---:|---|")
    for name in [*ORDER, *sorted(set(figures) - set(ORDER))]:  # a figure not yet ordered still shows
        if name in figures:
            print(f"| {name} | {figures[name]:,} | {how} |")
    verdict = "0" if done.returncode == 0 else "unknown (a test failed)"
    print(f"| rows lost | {verdict} | {how} |\n| rows duplicated | {verdict} | {how} |")
    print(f"\nThe suite took {minutes} min {seconds:02d} s.")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
