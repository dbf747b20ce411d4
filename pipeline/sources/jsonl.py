"""Streaming reader for JSONL files, plain or gzip/zstd compressed (chosen by extension).

The file is read in large chunks and decoded one batch of lines per parser call; only when a
batch fails is it decoded line by line, so the error names the exact line. Every failure is a
one-line UsageError naming the file (and line): malformed JSON, non-UTF-8 bytes, a line that
is not an object, a truncated or corrupt compressed stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa

from pipeline.common.errors import UsageError
from pipeline.common.jsoncodec import loads, loads_array
from pipeline.common.storage import Storage, location
from pipeline.sources.base import SourceRow

CODECS: dict[str, str | None] = {".jsonl": None, ".jsonl.gz": "gzip", ".jsonl.zst": "zstd"}
_CHUNK = 1024 * 1024


def codec_for(relpath: str) -> str | None:
    """The compression of a JSONL file by its extension; ValueError if it is not JSONL."""
    for ext, codec in CODECS.items():
        if relpath.endswith(ext):
            return codec
    raise ValueError(f"not a JSONL file name: {relpath}")


def _numbered_lines(stream: Any) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers, read in chunks."""
    number = 0
    tail = b""
    while chunk := stream.read(_CHUNK):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        for line in lines:
            number += 1
            if line.strip():
                yield number, line
    if tail.strip():
        yield number + 1, tail


def _decode_line(line: bytes, where: str, number: int) -> dict[str, Any]:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{where}:{number}: not valid UTF-8 ({exc.reason} at column {exc.start + 1})"
        ) from exc
    try:
        value = loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to decode
        raise UsageError(f"{where}:{number}: malformed JSON ({exc})") from exc
    if type(value) is not dict:
        raise UsageError(f"{where}:{number}: expected a JSON object, found {type(value).__name__}")
    return value


def _decode_batch(lines: list[tuple[int, bytes]], relpath: str, where: str) -> list[SourceRow]:
    try:
        values = loads_array([line for _, line in lines])
    except (ValueError, RecursionError):
        values = []
    if len(values) != len(lines) or not all(type(v) is dict for v in values):
        values = [_decode_line(line, where, number) for number, line in lines]
    return [SourceRow(v, relpath, number) for v, (number, _) in zip(values, lines, strict=True)]


def _open_stream(raw: BinaryIO, codec: str | None) -> Any:
    return pa.CompressedInputStream(raw, codec) if codec else raw


def iter_rows(storage: Storage, relpath: str, batch_rows: int = 1000) -> Iterator[list[SourceRow]]:
    """Batches of at most ``batch_rows`` rows from one JSONL file."""
    where = location(storage, relpath)
    codec = codec_for(relpath)
    with storage.open_read(relpath) as raw:
        stream = _open_stream(raw, codec)
        batch: list[tuple[int, bytes]] = []
        try:
            for numbered in _numbered_lines(stream):
                batch.append(numbered)
                if len(batch) >= batch_rows:
                    yield _decode_batch(batch, relpath, where)
                    batch = []
        except OSError as exc:
            raise UsageError(f"{where}: truncated or corrupt {codec or 'JSONL'} data ({exc})") from exc
        if batch:
            yield _decode_batch(batch, relpath, where)
