"""Streaming reader for btpipe Parquet files: row-group batches decoded back to exact rows.

A file without btpipe's schema metadata is refused up front rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.arrow_schema import check_schema
from pipeline.common.errors import UsageError
from pipeline.common.storage import Storage, location
from pipeline.sources.base import SourceRow
from pipeline.sources.decode import table_to_rows


def iter_rows(storage: Storage, relpath: str, batch_rows: int = 1000) -> Iterator[list[SourceRow]]:
    """Batches of at most ``batch_rows`` rows from one Parquet file; positions are row indexes."""
    where = location(storage, relpath)
    with storage.open_read(relpath) as raw:
        try:
            parquet = pq.ParquetFile(raw)
        except (pa.ArrowException, OSError) as exc:
            raise UsageError(f"{where}: not a btpipe Parquet file ({exc})") from exc
        object_type = check_schema(parquet.schema_arrow, where)
        position = 0
        batches = parquet.iter_batches(batch_size=batch_rows)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as exc:
                raise UsageError(f"{where}: corrupt Parquet data after row {position} ({exc})") from exc
            if batch is None:
                return
            rows = table_to_rows(pa.Table.from_batches([batch]), object_type)
            yield [SourceRow(row, relpath, position + i) for i, row in enumerate(rows)]
            position += len(rows)
