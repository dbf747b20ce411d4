"""Parquet reader and file discovery: positions, refusal of foreign files, manifests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.common.errors import UsageError
from pipeline.common.manifest import Manifest, ObjectManifest, write_manifest
from pipeline.common.storage import Storage, open_storage
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.parquet import ParquetSink
from pipeline.sources import discover_files, iter_rows


def test_batches_and_row_positions(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    with ParquetSink(storage, "d", "experiment", row_group_rows=4) as sink:
        sink.write_page(b"".join(b'{"id":"r%d","scores":{"s":0.5}}\n' % i for i in range(10)))
        (info,) = sink.close()
    batches = list(iter_rows(storage, info.path, batch_rows=3))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    flat = [r for b in batches for r in b]
    assert [(r.row["id"], r.file, r.position) for r in flat] == [
        (f"r{i}", "d/part-00000.parquet", i) for i in range(10)
    ]
    assert flat[0].row == {"id": "r0", "scores": {"s": 0.5}}


def test_foreign_parquet_file_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "other.parquet")
    with pytest.raises(UsageError) as info:
        next(iter_rows(open_storage(str(tmp_path)), "other.parquet"))
    assert str(info.value) == (
        f"{tmp_path}/other.parquet: not a btpipe Parquet file (no btpipe.schema_version metadata)"
    )


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    table = pa.table({"id": ["a"]}).replace_schema_metadata(
        {"btpipe.schema_version": "99", "btpipe.object_type": "dataset"}
    )
    pq.write_table(table, tmp_path / "new.parquet")
    with pytest.raises(UsageError, match=r"new\.parquet: not a btpipe Parquet file \(schema version b'99'\)"):
        next(iter_rows(open_storage(str(tmp_path)), "new.parquet"))


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UsageError, match=r"^.*/bad\.parquet: not a btpipe Parquet file \("):
        next(iter_rows(open_storage(str(tmp_path)), "bad.parquet"))


def _export(tmp_path: Path) -> tuple[Storage, list[str]]:
    storage = open_storage(str(tmp_path))
    with JsonlSink(storage, "dataset/d1") as sink:
        sink.write_page(b'{"id":"a"}\n')
        files = sink.flush()
        sink.write_page(b'{"id":"b"}\n')
        files += sink.close()
    with ParquetSink(storage, "dataset/d2", "dataset") as psink:
        psink.write_page(b'{"id":"c"}\n')
        files += psink.close()
    storage.write_bytes("dataset/d1/notes.txt", b"ignored")
    (tmp_path / "dataset" / "d1" / ".part-00009.jsonl.x.tmp").write_bytes(b"partial")
    return storage, [f.path for f in files]


def test_discover_directory_file_and_manifest(tmp_path: Path) -> None:
    storage, paths = _export(tmp_path)
    assert paths == [
        "dataset/d1/part-00000.jsonl",
        "dataset/d1/part-00001.jsonl",
        "dataset/d2/part-00000.parquet",
    ]
    assert discover_files(storage, "dataset") == paths
    assert discover_files(storage, "dataset/d1/") == paths[:2]
    assert discover_files(storage, "") == paths
    assert discover_files(storage, paths[2]) == [paths[2]]
    manifest = Manifest(
        run_id="r1",
        started_at="2024-05-01T00:00:00Z",
        api_url="http://127.0.0.1:8000",
        objects=(ObjectManifest("dataset", "d2", files=()), ObjectManifest("dataset", "d1", files=())),
    )
    write_manifest(storage, manifest)
    assert discover_files(storage, "") == paths  # manifests are not data files


def test_discover_from_manifest_keeps_its_order(tmp_path: Path) -> None:
    from pipeline.common.manifest import FileInfo

    storage, paths = _export(tmp_path)
    files = [FileInfo(p, 1, 0, "") for p in reversed(paths)]
    manifest = Manifest(
        run_id="r2",
        started_at="2024-05-01T00:00:00Z",
        api_url="http://127.0.0.1:8000",
        objects=(ObjectManifest("dataset", "d", rows_written=3, files=tuple(files)),),
    )
    relpath = write_manifest(storage, manifest)
    assert discover_files(storage, relpath) == list(reversed(paths))


def test_discover_nothing_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^.*/empty: no JSONL or Parquet files found$"):
        discover_files(open_storage(str(tmp_path)), "empty")
