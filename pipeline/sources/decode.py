"""Decoding: Arrow tables of the btpipe schema back to exactly the rows they were built from.

``_extra`` wins over the typed columns, and ``_nulls`` puts back the fields that were present
with a JSON null, which is what makes the round trip exact (see
:mod:`pipeline.common.arrow_schema`). Tables of schema version 1 decode too: the layouts are
told apart by their columns, so a table read without its metadata (from another engine) decodes
the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.common.arrow_schema import (
    AUXILIARY_COLUMNS,
    EXTRA_COLUMN,
    META_OBJECT_TYPE,
    NULLS_COLUMN,
    Kind,
    column_kind,
    format_created,
    int_map_column,
    legacy_number,
)
from pipeline.common.errors import BtpipeError, UsageError
from pipeline.common.jsoncodec import loads, loads_array
from pipeline.common.rows import ObjectType

#: What a decoded column holds for a row that lacks the field (a null in the column).
_ABSENT: Final = object()


def _storage(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The plain values of an extension-typed column (a JSON column's text)."""
    if isinstance(column.type, pa.ExtensionType):
        return pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type)
    return column


def _decode_json(name: str, column: pa.ChunkedArray) -> list[Any]:
    texts = _storage(column).to_pylist()
    encoded = [b"null" if t is None else t.encode() for t in texts]
    try:
        values = loads_array(encoded)
    except ValueError:  # say which value: the column keeps the server's text as it came
        for row, text in enumerate(encoded):
            try:
                loads(text)
            except ValueError as exc:
                raise BtpipeError(
                    f"column {name!r}, row {row}: not JSON this reader can decode ({exc})"
                ) from exc
        raise
    return [_ABSENT if t is None else v for t, v in zip(texts, values, strict=True)]


def _decode_number_map(name: str, column: pa.ChunkedArray, table: pa.Table | pa.RecordBatch) -> list[Any]:
    """Number maps: integers from the ``*_int`` companion, every other entry a float; without
    the companion (schema version 1), an integral double reads back as an int."""
    raw = column.to_pylist()
    if int_map_column(name) not in table.schema.names:
        return [_ABSENT if v is None else {k: legacy_number(x) for k, x in v} for v in raw]
    decoded: list[Any] = []
    for entries, ints in zip(raw, table.column(int_map_column(name)).to_pylist(), strict=True):
        if entries is None:
            decoded.append(_ABSENT)
            continue
        value = dict(entries)
        if ints:
            value.update(ints)  # the keys are already there, so their order stays
        decoded.append(value)
    return decoded


def _decode_column(name: str, column: pa.ChunkedArray, table: pa.Table | pa.RecordBatch) -> list[Any]:
    kind = column_kind(name)
    if kind is Kind.JSON:
        return _decode_json(name, column)
    if kind is Kind.NUMBER_MAP:
        return _decode_number_map(name, column, table)
    if kind is Kind.VERSION and pa.types.is_decimal(column.type):
        column = pc.cast(column, pa.string())
    raw = column.to_pylist()
    if kind is Kind.TIMESTAMP:
        return [_ABSENT if v is None else format_created(v) for v in raw]
    return [_ABSENT if v is None else v for v in raw]


def table_to_rows(
    table: pa.Table | pa.RecordBatch, object_type: ObjectType | None = None
) -> list[dict[str, Any]]:
    """Decode a btpipe table back to exactly the row dicts it was built from."""
    if object_type is not None and table.schema.metadata:
        found = table.schema.metadata.get(META_OBJECT_TYPE)
        if found is not None and found.decode() != object_type:
            raise UsageError(f"table holds {found.decode()} rows, not {object_type}")
    rows: list[dict[str, Any]] = [{} for _ in range(table.num_rows)]
    for name in table.schema.names:
        column = pa.chunked_array(table.column(name))
        if name in AUXILIARY_COLUMNS or column.null_count == len(column):
            continue
        _fill(rows, name, _decode_column(name, column, table))
    if NULLS_COLUMN in table.schema.names:
        for row, names in zip(rows, table.column(NULLS_COLUMN).to_pylist(), strict=True):
            if names:
                row.update(dict.fromkeys(names))
    if EXTRA_COLUMN in table.schema.names:
        for row, extra in zip(rows, table.column(EXTRA_COLUMN).to_pylist(), strict=True):
            if extra is not None:
                row.update(loads(extra.encode()))
    return rows


def _fill(rows: list[dict[str, Any]], name: str, values: Iterable[Any]) -> None:
    for row, value in zip(rows, values, strict=True):
        if value is not _ABSENT:
            row[name] = value
