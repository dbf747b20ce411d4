"""JsonlSink: byte-exact pages, compression, rotation, numbering, aborts."""

from __future__ import annotations

import gzip
import hashlib
import uuid
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.common.errors import UsageError
from pipeline.common.storage import open_storage
from pipeline.sinks.jsonl import JsonlSink
from tests.test_sinks_parquet import canonical, page_of, read_all, rows_strategy

COMPRESSIONS = [None, "gzip", "zstd"]


def decompress(data: bytes, compression: str | None) -> bytes:
    if compression is None:
        return data
    return pa.CompressedInputStream(pa.BufferReader(data), compression).read()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pages=st.lists(st.lists(rows_strategy, max_size=5), max_size=4),
    compression=st.sampled_from(COMPRESSIONS),
    trailing_newline=st.booleans(),
)
def test_sink_to_source_round_trip(
    tmp_path: Any, pages: list[list[dict[str, Any]]], compression: Any, trailing_newline: bool
) -> None:
    storage = open_storage(str(tmp_path / uuid.uuid4().hex))
    published = []
    with JsonlSink(storage, "logs", compression=compression, max_file_rows=4) as sink:
        for page in pages:
            body = page_of(page)
            published += sink.write_page(body if trailing_newline else body.rstrip(b"\n"))
        published += sink.close()
    expected = [row for page in pages for row in page]
    assert [f.path for f in published] == storage.list_files()
    assert sum(f.rows for f in published) == len(expected)
    assert canonical(read_all(storage, [f.path for f in published])) == canonical(expected)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_pages_are_written_byte_for_byte(tmp_path: Any, compression: Any) -> None:
    storage = open_storage(str(tmp_path))
    pages = [b'{"id":"a","x": 1.50}\n{"id":"b"}', b'{ "id" : "c" }\n', b""]
    with JsonlSink(storage, "p", compression=compression) as sink:
        for page in pages:
            assert sink.write_page(page) == []
        (info,) = sink.close()
    suffix = {None: "", "gzip": ".gz", "zstd": ".zst"}[compression]
    assert info.path == f"p/part-00000.jsonl{suffix}"
    raw = storage.read_bytes(info.path)
    assert (info.rows, info.bytes, info.sha256) == (3, len(raw), hashlib.sha256(raw).hexdigest())
    assert decompress(raw, compression) == b'{"id":"a","x": 1.50}\n{"id":"b"}\n{ "id" : "c" }\n'
    if compression == "gzip":
        assert gzip.decompress(raw).count(b"\n") == 3  # a standard gzip file


def test_rotation_by_rows_splits_pages_exactly(tmp_path: Any) -> None:
    storage = open_storage(str(tmp_path))
    rows = [{"id": str(i)} for i in range(7)]
    with JsonlSink(storage, "d", prefix="rows", first_part=9, max_file_rows=3) as sink:
        published = sink.write_page(page_of(rows[:5]))
        assert [f.path for f in published] == ["d/rows-00009.jsonl"]
        published += sink.write_page(page_of(rows[5:]))
        published += sink.close()
    assert [(f.path, f.rows) for f in published] == [
        ("d/rows-00009.jsonl", 3),
        ("d/rows-00010.jsonl", 3),
        ("d/rows-00011.jsonl", 1),
    ]
    assert read_all(storage, [f.path for f in published]) == rows


def test_rotation_by_bytes_keeps_pages_whole(tmp_path: Any) -> None:
    storage = open_storage(str(tmp_path))
    page = page_of([{"id": "a"}, {"id": "b"}])  # 22 bytes
    with JsonlSink(storage, "d", max_file_bytes=50) as sink:
        published = sink.write_page(page) + sink.write_page(page)
        assert published == []
        published += sink.write_page(page)  # would pass 50 bytes: the first part is published first
        published += sink.close()
    assert [(f.path, f.rows, f.bytes) for f in published] == [
        ("d/part-00000.jsonl", 4, 44),
        ("d/part-00001.jsonl", 2, 22),
    ]


def test_flush_publishes_and_next_page_starts_a_new_part(tmp_path: Any) -> None:
    storage = open_storage(str(tmp_path))
    with JsonlSink(storage, "d") as sink:
        sink.write_page(b'{"id":"a"}')
        assert storage.list_files() == []  # nothing visible before publish
        assert [f.path for f in sink.flush()] == ["d/part-00000.jsonl"]
        assert storage.list_files() == ["d/part-00000.jsonl"]
        assert sink.flush() == []
        sink.write_page(b'{"id":"b"}')
    assert storage.list_files() == ["d/part-00000.jsonl", "d/part-00001.jsonl"]


@pytest.mark.parametrize("max_file_rows", [None, 2])
def test_a_row_count_the_caller_knows_is_used_without_recounting(tmp_path: Any, max_file_rows: Any) -> None:
    storage = open_storage(str(tmp_path))
    page = b'{"id":"a"}\n{"id":"b"}\n{"id":"c"}'
    with JsonlSink(storage, "d", max_file_rows=max_file_rows) as sink:
        published = sink.write_page(page, rows=3) + sink.close()
    assert [f.rows for f in published] == ([3] if max_file_rows is None else [2, 1])
    assert b"".join(storage.read_bytes(f.path) for f in published) == page + b"\n"


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_abort_discards_only_the_open_part(tmp_path: Any, compression: Any) -> None:
    storage = open_storage(str(tmp_path))
    with pytest.raises(RuntimeError), JsonlSink(storage, "d", compression=compression) as sink:
        sink.write_page(b'{"id":"a"}\n')
        kept = sink.flush()
        sink.write_page(b'{"id":"b"}\n')
        raise RuntimeError("stop")
    assert storage.list_files() == [kept[0].path]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [kept[0].path.split("/")[-1]]
    assert sink.close() == []


def test_closed_sink_refuses_pages(tmp_path: Any) -> None:
    sink = JsonlSink(open_storage(str(tmp_path)), "d")
    assert sink.close() == []
    with pytest.raises(ValueError, match="closed"):
        sink.write_page(b'{"id":"a"}\n')


def test_bad_options_are_usage_errors(tmp_path: Any) -> None:
    storage = open_storage(str(tmp_path))
    with pytest.raises(UsageError, match="unknown JSONL compression 'lz4'"):
        JsonlSink(storage, "d", compression="lz4")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="must be positive"):
        JsonlSink(storage, "d", max_file_rows=0)
