"""A 50 MB attachment is exported, imported and migrated in chunks: the Python heap of the
whole process (btpipe and the emulator serving it) never holds more than a few of them.

The modules a first import loads lazily (pyarrow, pandas: tens of MB of heap) are loaded before
the heap is traced, so the peak measures the run, not an import statement."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest

from tests.attachments.seed import read, upload
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, unique

SIZE = 50 << 20
#: Far below the attachment's size: a copy that held it whole would pass this.
HEAP_BOUND = 20 << 20


def test_large_attachment_is_streamed(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = hashlib.sha256(b"seed").digest() * (1 << 15)  # 1 MiB, not all zeros
    data = block * (SIZE // len(block))
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("attach-large")})
    ref = upload(emulator.url, emulator.key, data, "large.bin", "application/octet-stream")
    insert(emulator.url, emulator.key, "project_logs", project["id"], [{"id": "l1", "input": {"blob": ref}}])
    del data
    monkeypatch.setenv("OTHER_KEY", emulator.other_org_key)
    out, state = tmp_path / "backup", ["--state-dir", str(tmp_path / "state")]
    target, migrated = unique("attach-large-in"), unique("attach-large-mig")
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    tracemalloc.start()
    try:
        exported = btpipe(emulator, "export", "--project", project["name"], "--out", str(out))
        imported = btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--create-project",
                          *state, key=emulator.other_org_key)  # fmt: skip
        copied = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", migrated,
                        "--create-project", "--to-api-key-env", "OTHER_KEY", *state)  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for result in (exported, imported, copied):
        assert result.exit_code == 0, result.output
    assert peak < HEAP_BOUND, f"peak heap {peak:,} bytes"
    assert (out / "_attachments").exists()
    for name in (target, migrated):
        dst = post(emulator.url, emulator.other_org_key, "/v1/project", {"name": name})
        (row,) = all_rows(emulator.url, emulator.other_org_key, "project_logs", dst["id"]).values()
        got = read(emulator.url, emulator.other_org_key, row["input"]["blob"])
        assert len(got) == SIZE and got == block * (SIZE // len(block))
