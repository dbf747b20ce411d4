"""The row ids alone of an export's file, for passes that need nothing else (tombstones).

A Parquet file is read for its ``id`` column only, so the other columns are neither decoded
nor, on local disk, read at all; JSONL is parsed line by line like any read of it
(:mod:`pipeline.sources.jsonl`), since an id can only be found by parsing its line. Both block:
async callers use ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.arrow_schema import check_schema
from pipeline.common.errors import UsageError
from pipeline.common.storage import Storage, location
from pipeline.sources import PARQUET_EXTENSION, iter_rows


def iter_ids(storage: Storage, relpath: str, batch_rows: int = 10_000) -> Iterator[list[str]]:
    """Batches of the ids of one data file (or tombstone file: JSONL of ``{"id": ...}``); a
    row without a string id stops with one line naming the file and row."""
    if relpath.endswith(PARQUET_EXTENSION):
        yield from _parquet_ids(storage, relpath, batch_rows)
        return
    for chunk in iter_rows(storage, relpath, batch_rows):
        ids: list[str] = []
        for row, _path, position in chunk:
            value = row.get("id")
            if not isinstance(value, str):
                raise UsageError(f"{location(storage, relpath)}:{position}: row has no string id")
            ids.append(value)
        yield ids


def _parquet_ids(storage: Storage, relpath: str, batch_rows: int) -> Iterator[list[str]]:
    where = location(storage, relpath)
    with storage.open_read(relpath) as raw:
        try:
            parquet = pq.ParquetFile(raw)
            check_schema(parquet.schema_arrow, where)
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=["id"]):
                ids = batch.column(0).to_pylist()
                if any(not isinstance(value, str) for value in ids):
                    raise UsageError(f"{where}: a row has no string id")
                yield ids
        except (pa.ArrowException, OSError) as exc:
            raise UsageError(f"{where}: not a readable btpipe Parquet file ({exc})") from exc
