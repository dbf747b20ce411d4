"""A destination that fails part way (a full disk): one error, nothing published, nothing left."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pipeline.common.errors import BtpipeError
from pipeline.common.storage import Storage, open_storage
from pipeline.sinks.base import Sink
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.parquet import ParquetSink
from tests.test_sinks_parquet import page_of


class FullDisk:
    """Local storage whose files refuse writes once ``room`` bytes have been written."""

    def __init__(self, root: Path, room: int) -> None:
        self._inner = open_storage(str(root))
        self.url = self._inner.url
        self.room = room

    @contextmanager
    def open_atomic(self, relpath: str) -> Iterator[BinaryIO]:
        with self._inner.open_atomic(relpath) as fh:
            yield _Filling(fh, self)  # type: ignore[misc]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Filling:
    def __init__(self, fh: BinaryIO, disk: FullDisk) -> None:
        self._fh = fh
        self._disk = disk

    def write(self, data: bytes) -> int:
        if len(data) > self._disk.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._disk.room -= len(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()


def _parquet(storage: Storage) -> Sink:
    return ParquetSink(storage, "d", "dataset", compression=None, row_group_rows=2)


def _jsonl(storage: Storage) -> Sink:
    return JsonlSink(storage, "d")


@pytest.mark.parametrize("make_sink", [_parquet, _jsonl], ids=["parquet", "jsonl"])
def test_a_full_disk_is_one_error_and_leaves_no_file(
    tmp_path: Path, make_sink: Callable[[Storage], Sink], capfd: pytest.CaptureFixture[str]
) -> None:
    disk = FullDisk(tmp_path, room=120_000)
    rows = [{"id": f"r{i}", "input": "x" * 50_000} for i in range(10)]
    sink = make_sink(disk)  # type: ignore[arg-type]
    full = r"cannot write .*/d/part-00000\.\w+: No space left on device$"
    with pytest.raises(BtpipeError, match=full), sink:
        for i in range(0, len(rows), 2):
            sink.write_page(page_of(rows[i : i + 2]))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert capfd.readouterr().err == ""  # the encoder finished quietly: no complaint on stderr
