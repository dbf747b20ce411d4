"""Reading a Delta table ``--format delta`` wrote: its objects at a version, and their rows.

A table of btpipe's is partitioned by the column naming each row's object
(:data:`pipeline.common.arrow_schema.OBJECT_ID_COLUMNS`), which also tells the object type.
At the version read (the current one unless ``version`` is given), each partition's data
files are that object's input; each file is read in record batches, given back its
partition column, restored to the btpipe schema
(:func:`pipeline.common.arrow_schema.restore_table`) and decoded to exact rows. A table using
features that change what a data file means (deletion vectors, column mapping) is refused
rather than read wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.arrow_schema import OBJECT_ID_COLUMNS, restore_table
from pipeline.common.errors import UsageError
from pipeline.common.layout import DELTA_LOG
from pipeline.common.rows import ObjectType
from pipeline.common.storage import Storage, location
from pipeline.sources.base import SourceRow
from pipeline.sources.decode import table_to_rows

_UNSUPPORTED: Final = frozenset({"deletionVectors", "columnMapping"})
_TYPES: Final[dict[str, ObjectType]] = {column: kind for kind, column in OBJECT_ID_COLUMNS.items()}


@dataclass(frozen=True)
class TableObject:
    """One object of a Delta table: its type, id and data files (relative to the storage root)."""

    object_type: ObjectType
    object_id: str
    files: list[str]


def is_delta_table(storage: Storage, prefix: str) -> bool:
    """Whether ``prefix`` (a directory under ``storage``) is a Delta table (blocking)."""
    base = prefix.strip("/")
    return bool(storage.list_files(f"{base}/{DELTA_LOG}/" if base else f"{DELTA_LOG}/"))


def table_objects(storage: Storage, prefix: str, version: int | None = None) -> list[TableObject]:
    """The objects of the Delta table at ``prefix``, as of ``version`` (None: the current one),
    by object id (blocking)."""
    from deltalake import DeltaTable  # loaded only when a table is read

    base = prefix.strip("/")
    where = storage.table_location(base)
    try:
        table = DeltaTable(where.uri, storage_options=where.options, version=version)
    except Exception as exc:  # deltalake raises its own errors, and OSError for storage
        raise UsageError(f"{location(storage, base)}: cannot read the Delta table ({exc})") from exc
    named = location(storage, base)
    features = set(table.protocol().reader_features or ())
    if features & _UNSUPPORTED:
        raise UsageError(f"{named}: uses {', '.join(sorted(features & _UNSUPPORTED))}, which this reader "
                         "does not apply; read it with Spark or rewrite it without them")  # fmt: skip
    partitions = table.metadata().partition_columns
    if len(partitions) != 1 or partitions[0] not in _TYPES:
        raise UsageError(f"{named}: not a btpipe Delta table (partitioned by {partitions}, not by object id)")
    column = partitions[0]
    actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    found: dict[str, TableObject] = {}
    for path, object_id in zip(actions["path"], actions[f"partition.{column}"], strict=True):
        obj = found.setdefault(object_id, TableObject(_TYPES[column], object_id, []))
        obj.files.append(f"{base}/{unquote(path)}" if base else unquote(path))
    for obj in found.values():
        obj.files.sort()
    return [found[k] for k in sorted(found)]


def iter_rows(
    storage: Storage, relpath: str, object_type: ObjectType, object_id: str, batch_rows: int = 1000
) -> Iterator[list[SourceRow]]:
    """Batches of at most ``batch_rows`` rows of one data file of ``object_id``'s partition;
    positions are row indexes."""
    where = location(storage, relpath)
    column = OBJECT_ID_COLUMNS[object_type]
    with storage.open_read(relpath) as raw:
        try:
            parquet = pq.ParquetFile(raw)
        except (pa.ArrowException, OSError) as exc:
            raise UsageError(f"{where}: not a Parquet file ({exc})") from exc
        position = 0
        for batch in parquet.iter_batches(batch_size=batch_rows):
            table = pa.Table.from_batches([batch])
            if column not in table.column_names:
                table = table.append_column(column, pa.array([object_id] * table.num_rows, pa.string()))
            rows = table_to_rows(restore_table(table, object_type), object_type)
            yield [SourceRow(row, relpath, position + i) for i, row in enumerate(rows)]
            position += len(rows)
