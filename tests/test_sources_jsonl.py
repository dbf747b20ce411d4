"""JSONL reader: batches with line numbers, and one-line errors for every kind of bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.common.errors import UsageError
from pipeline.common.storage import open_storage
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sources import iter_rows


def _error(tmp_path: Path, relpath: str, data: bytes) -> str:
    storage = open_storage(str(tmp_path))
    storage.write_bytes(relpath, data)
    with pytest.raises(UsageError) as info:
        for _ in iter_rows(storage, relpath):
            pass
    message = str(info.value)
    assert "\n" not in message
    return message


def _compress(data: bytes, codec: str) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def test_batches_and_positions(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("f.jsonl", b'{"id":"a"}\n\n{"id":"b"}\r\n{"id":"c","n":18446744073709551617}')
    batches = list(iter_rows(storage, "f.jsonl", batch_rows=2))
    assert [[(r.row, r.file, r.position) for r in batch] for batch in batches] == [
        [({"id": "a"}, "f.jsonl", 1), ({"id": "b"}, "f.jsonl", 3)],
        [({"id": "c", "n": 2**64 + 1}, "f.jsonl", 4)],
    ]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_files_by_extension(tmp_path: Path, codec: str) -> None:
    storage = open_storage(str(tmp_path))
    with JsonlSink(storage, "d", compression=codec) as sink:  # type: ignore[arg-type]
        sink.write_page(b"".join(b'{"i":%d}\n' % i for i in range(2500)))
        (info,) = sink.close()
    rows = [r for batch in iter_rows(storage, info.path) for r in batch]
    assert [r.row for r in rows] == [{"i": i} for i in range(2500)]
    assert rows[-1].position == 2500


def test_malformed_line(tmp_path: Path) -> None:
    message = _error(tmp_path, "f.jsonl", b'{"id":"a"}\n{"id": }\n{"id":"c"}\n')
    assert message.startswith(f"{tmp_path}/f.jsonl:2: malformed JSON (")


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    message = _error(tmp_path, "f.jsonl", b'{"id":"a"}\n[1, 2]\n')
    assert message == f"{tmp_path}/f.jsonl:2: expected a JSON object, found list"


def test_non_utf8_bytes(tmp_path: Path) -> None:
    message = _error(tmp_path, "f.jsonl", b'{"id":"a"}\n{"id":"a"}\n{"id":"\xff\xfe"}\n')
    assert message == f"{tmp_path}/f.jsonl:3: not valid UTF-8 (invalid start byte at column 8)"


def test_malformed_line_inside_gzip(tmp_path: Path) -> None:
    message = _error(tmp_path, "f.jsonl.gz", gzip.compress(b'{"id":"a"}\n{oops\n'))
    assert message.startswith(f"{tmp_path}/f.jsonl.gz:2: malformed JSON (")


@pytest.mark.parametrize(("relpath", "codec"), [("f.jsonl.gz", "gzip"), ("f.jsonl.zst", "zstd")])
def test_truncated_compressed_file(tmp_path: Path, relpath: str, codec: str) -> None:
    data = _compress(b"".join(b'{"id":"%d","pad":"%s"}\n' % (i, b"x" * (i % 50)) for i in range(3000)), codec)
    message = _error(tmp_path, relpath, data[: len(data) // 2])
    assert message.startswith(f"{tmp_path}/{relpath}: truncated or corrupt {codec} data (")


def test_not_compressed_at_all(tmp_path: Path) -> None:
    message = _error(tmp_path, "f.jsonl.gz", b'{"id":"a"}\n')
    assert message.startswith(f"{tmp_path}/f.jsonl.gz: truncated or corrupt gzip data (")


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"f\.csv: not a \.jsonl"):
        iter_rows(open_storage(str(tmp_path)), "f.csv")
