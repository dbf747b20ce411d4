"""The one Arrow schema btpipe writes and reads (the only module that knows it).

One schema per object type, built from ``pipeline.common.rows``: identity fields, the object's keys,
the server-owned fields and the type's data fields, in that order, then ``_extra``.

==================  =============================  ================================================
column              Arrow type                     holds
==================  =============================  ================================================
id, span_id,        string                         the value when it is a string
root_span_id,
_pagination_key,
org_id, project_id,
log_id, dataset_id,
experiment_id,
dataset_record_id
_xact_id            string                         the version as its exact decimal text
created             timestamp(us, UTC)             the parsed time; the text is rebuilt as
                                                   ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (``.uuuuuuZ`` when
                                                   there are sub-millisecond digits)
is_root             bool                           the value when it is a boolean
span_parents, tags  list<string>                   the value when it is a list of strings
scores, metrics     map<string, double>            each number as a double (null stays null);
                                                   read back as an int when integral
input, output,      string (JSON text)             the value's JSON text as the server sent it
expected, error,                                   (compact orjson text, key order kept, when the
metadata, context,                                 page takes the general path); ``null`` text
span_attributes,                                   for a JSON null
origin, facets,
comments,
audit_data,
_async_scoring_state
_extra              string (JSON object text)      every field the schema does not know, and every
                                                   field whose typed column cannot reproduce it
                                                   exactly (a null, another type, an int beyond
                                                   2**53 in a map, an integral float in a map, a
                                                   ``created`` in another spelling)
==================  =============================  ================================================

A null in a typed or JSON column means the field was absent; a present ``null`` is the JSON
text ``null`` or an ``_extra`` entry, so absent and null stay distinct. ``_extra`` wins over
the typed columns when decoding, so decoding an encoded table gives back exactly its rows,
while the typed columns still hold the best typed view for analytics. Schema metadata
``btpipe.schema_version`` and ``btpipe.object_type`` let readers refuse foreign files.

The sinks encode with :mod:`pipeline.sinks.encode` and the sources decode with
:mod:`pipeline.sources.decode`; both take every column rule from here.

A Delta table (``--format delta``) holds the same columns, partitioned by the column naming
the row's object (:data:`OBJECT_ID_COLUMNS`). Delta keeps neither Arrow schema metadata nor
extension types, so :func:`stored_schema` is what a table is created with and
:func:`restore_table` turns what a Delta reader returns back into this schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Final

import pyarrow as pa

from pipeline.common.errors import UsageError
from pipeline.common.rows import (
    DATA_FIELDS,
    IDENTITY_FIELDS,
    OBJECT_KEY_FIELDS,
    OBJECT_TYPES,
    READ_ONLY_FIELDS,
    ObjectType,
)

SCHEMA_VERSION: Final = "1"
META_VERSION: Final = b"btpipe.schema_version"
META_OBJECT_TYPE: Final = b"btpipe.object_type"
EXTRA_COLUMN: Final = "_extra"


class Kind(Enum):
    STRING = "string"
    TIMESTAMP = "timestamp"
    BOOL = "bool"
    STRING_LIST = "string_list"
    NUMBER_MAP = "number_map"
    JSON = "json"


_KINDS: Final[dict[str, Kind]] = {
    **dict.fromkeys(
        (
            "id", "span_id", "root_span_id", "_pagination_key", "org_id", "project_id", "log_id",
            "dataset_id", "experiment_id", "_xact_id", "dataset_record_id",
        ),
        Kind.STRING,
    ),
    "created": Kind.TIMESTAMP,
    "is_root": Kind.BOOL,
    "span_parents": Kind.STRING_LIST,
    "tags": Kind.STRING_LIST,
    "scores": Kind.NUMBER_MAP,
    "metrics": Kind.NUMBER_MAP,
}  # fmt: skip

_ARROW_TYPES: Final[dict[Kind, pa.DataType]] = {
    Kind.STRING: pa.string(),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Kind.BOOL: pa.bool_(),
    Kind.STRING_LIST: pa.list_(pa.string()),
    Kind.NUMBER_MAP: pa.map_(pa.string(), pa.float64()),
    Kind.JSON: pa.string(),
}


#: The column holding the id of the object a row belongs to (a Delta table's partition column).
OBJECT_ID_COLUMNS: Final[dict[ObjectType, str]] = {
    "project_logs": "project_id",
    "dataset": "dataset_id",
    "experiment": "experiment_id",
}


def column_kind(name: str) -> Kind:
    """How column ``name`` holds its values (a free-form JSON column unless the schema types it)."""
    return _KINDS.get(name, Kind.JSON)


@cache
def schema_for(object_type: ObjectType) -> pa.Schema:
    """The Arrow schema of ``object_type`` rows, with btpipe's metadata."""
    if object_type not in OBJECT_TYPES:
        raise UsageError(f"unknown object type {object_type!r}")
    names = dict.fromkeys(
        (
            "id", "_xact_id", "created", *OBJECT_KEY_FIELDS[object_type], "org_id", "_pagination_key",
            *IDENTITY_FIELDS, "is_root", *DATA_FIELDS[object_type], "span_attributes", "origin",
            *sorted(READ_ONLY_FIELDS),
        )
    )  # fmt: skip
    fields = [pa.field(name, _ARROW_TYPES[column_kind(name)]) for name in names]
    fields.append(pa.field(EXTRA_COLUMN, pa.string()))
    return pa.schema(fields, metadata={META_VERSION: SCHEMA_VERSION, META_OBJECT_TYPE: object_type})


def _storage_type(kind: pa.DataType) -> pa.DataType:
    return kind.storage_type if isinstance(kind, pa.ExtensionType) else kind


@cache
def stored_schema(object_type: ObjectType) -> pa.Schema:
    """The schema of ``object_type`` as a store without extension types or schema metadata
    keeps it (a Delta table): each extension type as its storage type, no metadata."""
    schema = schema_for(object_type)
    return pa.schema([pa.field(f.name, _storage_type(f.type), f.nullable) for f in schema])


def restore_table(table: pa.Table, object_type: ObjectType) -> pa.Table:
    """``table``, read back from such a store (columns in any order, strings as large or view
    strings, other names for list and map children), as :func:`schema_for` ``object_type``;
    a column it lacks is null throughout."""
    schema = schema_for(object_type)
    columns = []
    for target in schema:
        storage = _storage_type(target.type)
        if target.name in table.column_names:
            column = table.column(target.name).cast(storage)
        else:
            column = pa.chunked_array([pa.nulls(table.num_rows, storage)], storage)
        if isinstance(target.type, pa.ExtensionType):
            column = pa.chunked_array(
                [pa.ExtensionArray.from_storage(target.type, c) for c in column.chunks], target.type
            )
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def format_created(value: datetime) -> str:
    """The ISO-8601 spelling ``created`` is rebuilt with (UTC, ``Z``, milli- or microseconds)."""
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds" if value.microsecond % 1000 else "milliseconds") + "Z"


def decoded_number(value: float | None) -> float | int | None:
    """A number-map value as it reads back: a double, or an int when it is integral."""
    if value is None or not value.is_integer():
        return value
    return int(value)


def check_schema(schema: pa.Schema, where: str) -> ObjectType:
    """The object type of a btpipe Parquet schema; UsageError naming ``where`` for anything else."""
    meta = schema.metadata or {}
    version = meta.get(META_VERSION)
    object_type = meta.get(META_OBJECT_TYPE, b"").decode(errors="replace")
    if version is None:
        raise UsageError(f"{where}: not a btpipe Parquet file (no {META_VERSION.decode()} metadata)")
    if version.decode(errors="replace") != SCHEMA_VERSION:
        raise UsageError(f"{where}: not a btpipe Parquet file (schema version {version!r})")
    if object_type not in OBJECT_TYPES:
        raise UsageError(f"{where}: not a btpipe Parquet file (object type {object_type!r})")
    return object_type
