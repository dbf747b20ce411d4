"""``python -m pipeline.cli.demo`` (what ``make demo`` runs), as a subprocess with a small sample."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads

ROOT = Path(__file__).resolve().parents[2]


def number(text: str, pattern: str) -> int:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the summary:\n{text}"
    return int(found[1].replace(",", ""))


def test_demo_runs_end_to_end_and_prints_its_summary(tmp_path: Path) -> None:
    env = {**os.environ, "BTPIPE_DEMO_TRACES": "120", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("[")] == [
        "[1/5] starting the emulator with 120 sample traces",
        "[2/5] nightly backup, first run (everything: rows, configuration, attachments)",
        "[3/5] inserting new log rows, then the nightly backup again (only what is new)",
        "[4/5] migrating sample-project and sample-attachments to another org and verifying",
        "[5/5] done",
    ]
    out = proc.stdout
    first = int(re.search(r"backup run 1: +([\d,]+) rows", out)[1].replace(",", ""))  # type: ignore[index]
    inserted = int(re.search(r"new log rows: +([\d,]+) inserted", out)[1].replace(",", ""))  # type: ignore[index]
    second = int(re.search(r"backup run 2: +([\d,]+) rows", out)[1].replace(",", ""))  # type: ignore[index]
    migrated = number(
        out, r"migrate: +([\d,]+) rows, configuration and attachments in [\d.]+s; verify: identical"
    )
    with_files = number(out, r"attachments: +([\d,]+) rows")
    assert inserted > 0 and second == inserted
    assert migrated == first + inserted + with_files
    # the sample project's configuration objects, and every attachment sample-attachments refers to
    assert number(out, r"(\d+) configuration objects") > 10
    assert number(out, r"(\d+) attachment files") == 3
    backup = tmp_path / "demo-output" / "backup"
    assert f"files:         {backup}\n" in out
    assert (
        f"read_parquet('{backup}/object_type=*/*/*/*.parquet', hive_partitioning = true, union_by_name = true)"
        in out
    )
    table = pads.dataset(str(backup), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == first + second
    assert set(table.column("object_type").to_pylist()) == {"project_logs", "dataset", "experiment"}
