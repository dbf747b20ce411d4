"""A part on local disk reaches the disk as it is written, not all at its publishing ``fsync``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.common.storage import open_storage
from pipeline.sinks import base
from pipeline.sinks.base import SYNC_EVERY_BYTES, CountingWriter


def test_a_part_is_synced_every_few_megabytes_while_it_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    synced: list[int] = []
    real = base.os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(base.os, "fdatasync", fdatasync)
    storage = open_storage(str(tmp_path))
    chunk = b"x" * (SYNC_EVERY_BYTES // 4)
    with storage.open_atomic("part.jsonl") as fh:
        writer = CountingWriter(fh)
        for _ in range(10):
            writer.write(chunk)
        assert len(synced) == 2  # at 8 MB and 16 MB of the 20 written so far
    assert (tmp_path / "part.jsonl").read_bytes() == chunk * 10
    assert writer.bytes == 10 * len(chunk) and writer.failure is None
