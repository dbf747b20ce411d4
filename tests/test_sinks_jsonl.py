"""JsonlSink: byte-exact pages, compression, parts and their numbering, aborts."""

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
    with JsonlSink(storage, "logs", compression=compression) as sink:
        for i, page in enumerate(pages):
            body = page_of(page)
            sink.write_page(body if trailing_newline else body.rstrip(b"\n"))
            if i % 2:  # the caller ends a part every second page
                published += sink.flush()
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
            sink.write_page(page)
        (info,) = sink.close()
    suffix = {None: "", "gzip": ".gz", "zstd": ".zst"}[compression]
    assert info.path == f"p/part-00000.jsonl{suffix}"
    raw = storage.read_bytes(info.path)
    assert (info.rows, info.bytes, info.sha256) == (3, len(raw), hashlib.sha256(raw).hexdigest())
    assert decompress(raw, compression) == b'{"id":"a","x": 1.50}\n{"id":"b"}\n{ "id" : "c" }\n'
    if compression == "gzip":
        assert gzip.decompress(raw).count(b"\n") == 3  # a standard gzip file


def test_parts_end_only_where_the_caller_flushes_and_are_numbered_on(tmp_path: Any) -> None:
    storage = open_storage(str(tmp_path))
    rows = [{"id": str(i)} for i in range(7)]
    with JsonlSink(storage, "d", prefix="rows", first_part=9) as sink:
        sink.write_page(page_of(rows[:2]))
        sink.write_page(page_of(rows[2:5]))
        assert storage.list_files() == []  # no part ends on its own
        published = sink.flush()
        sink.write_page(page_of(rows[5:]))
        published += sink.close()
    assert [(f.path, f.rows) for f in published] == [("d/rows-00009.jsonl", 5), ("d/rows-00010.jsonl", 2)]
    assert read_all(storage, [f.path for f in published]) == rows


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


@pytest.mark.parametrize("rows", [None, 3])
def test_rows_are_counted_unless_the_caller_counted_them(tmp_path: Any, rows: int | None) -> None:
    storage = open_storage(str(tmp_path))
    page = b'{"id":"a"}\n{"id":"b"}\n{"id":"c"}'
    with JsonlSink(storage, "d") as sink:
        sink.write_page(page, rows=rows)
        (info,) = sink.close()
    assert info.rows == 3
    assert storage.read_bytes(info.path) == page + b"\n"


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
