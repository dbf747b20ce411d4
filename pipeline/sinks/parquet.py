"""Parquet part files, and the one Arrow schema btpipe writes (the only module that knows it).

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
the typed columns when decoding, so ``table_to_rows(rows_to_table(rows)) == rows`` exactly,
while the typed columns still hold the best typed view for analytics. Schema metadata
``btpipe.schema_version`` and ``btpipe.object_type`` let readers refuse foreign files.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Any, Final

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.common.errors import BtpipeError, UsageError
from pipeline.common.jsoncodec import dumps, loads, loads_array, page_lines
from pipeline.common.manifest import FileInfo
from pipeline.common.rows import (
    DATA_FIELDS,
    IDENTITY_FIELDS,
    OBJECT_KEY_FIELDS,
    OBJECT_TYPES,
    READ_ONLY_FIELDS,
    ObjectType,
)
from pipeline.common.storage import Storage
from pipeline.sinks.base import CountingWriter, PartFileSink

SCHEMA_VERSION: Final = "1"
META_VERSION: Final = b"btpipe.schema_version"
META_OBJECT_TYPE: Final = b"btpipe.object_type"
EXTRA_COLUMN: Final = "_extra"
DICTIONARY_COLUMNS: Final = ("org_id", "project_id", "log_id", "dataset_id", "experiment_id", "tags")
STATISTICS_COLUMNS: Final = (
    "id", "_xact_id", "created", "_pagination_key", "span_id", "root_span_id", "is_root",
    "org_id", "project_id", "log_id", "dataset_id", "experiment_id",
)  # fmt: skip
DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
WRITE_BUFFER_BYTES: Final = 256 * 1024


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


def _kind(name: str) -> Kind:
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
    fields = [pa.field(name, _ARROW_TYPES[_kind(name)]) for name in names]
    fields.append(pa.field(EXTRA_COLUMN, pa.string()))
    return pa.schema(fields, metadata={META_VERSION: SCHEMA_VERSION, META_OBJECT_TYPE: object_type})


# -- encoding: one column at a time ---------------------------------------------------------------
_ABSENT: Final = object()


def format_created(value: datetime) -> str:
    """The ISO-8601 spelling ``created`` is rebuilt with (UTC, ``Z``, milli- or microseconds)."""
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds" if value.microsecond % 1000 else "milliseconds") + "Z"


def _typed_created(value: Any) -> tuple[datetime | None, bool]:
    if type(value) is not str:
        return None, False
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None, False
    return parsed, format_created(parsed) == value


def _decoded_number(value: float | None) -> float | int | None:
    if value is None or not value.is_integer():
        return value
    return int(value)


def _typed_number_map(value: Any) -> tuple[list[tuple[str, float | None]] | None, bool]:
    if type(value) is not dict:
        return None, False
    entries: list[tuple[str, float | None]] = []
    exact = True
    for key, number in value.items():
        if number is None:
            entries.append((key, None))
        elif type(number) is int or type(number) is float:
            try:
                as_float = float(number)
            except OverflowError:
                return None, False
            entries.append((key, as_float))
            exact = exact and type(_decoded_number(as_float)) is type(number) and as_float == number
        else:
            return None, False
    return entries, exact


def _typed_string_list(value: Any) -> tuple[list[str] | None, bool]:
    if type(value) is list and all(type(item) is str for item in value):
        return value, True
    return None, False


#: Kinds whose typed value is the JSON value itself when its Python type matches.
_PLAIN: Final[dict[Kind, type]] = {Kind.STRING: str, Kind.BOOL: bool}

_TYPERS: Final[dict[Kind, Callable[[Any], tuple[Any, bool]]]] = {
    Kind.TIMESTAMP: _typed_created,
    Kind.STRING_LIST: _typed_string_list,
    Kind.NUMBER_MAP: _typed_number_map,
}


def rows_to_table(rows: list[dict[str, Any]], object_type: ObjectType) -> pa.Table:
    """Encode row dicts (as parsed from JSON) into a table of ``schema_for(object_type)``.

    Column by column, with a vectorised fast path where the page allows it (timestamps cast
    and checked in Arrow, number maps that are already exact); values a typed column cannot
    reproduce exactly fall back to the per-value path and are kept in ``_extra``.
    """
    schema = schema_for(object_type)
    known = frozenset(schema.names) - {EXTRA_COLUMN}
    present = set().union(*rows)
    extras: list[dict[str, Any] | None] = [None] * len(rows)
    if present - known:
        extras = [{k: row[k] for k in row if k not in known} if row.keys() - known else None for row in rows]
    columns: list[pa.Array] = []
    for field in schema:
        if field.name == EXTRA_COLUMN:
            continue
        if field.name not in present:
            columns.append(pa.nulls(len(rows), field.type))
            continue
        values = [row.get(field.name, _ABSENT) for row in rows]
        if _kind(field.name) is Kind.JSON:
            columns.append(pa.array(_json_texts(values), type=field.type))
        else:
            columns.append(_typed_column(field, values, extras))
    return _table(schema, columns, extras)


def _table(schema: pa.Schema, columns: list[pa.Array], extras: list[dict[str, Any] | None]) -> pa.Table:
    columns.append(pa.array(_json_texts([_ABSENT if e is None else e for e in extras]), type=pa.string()))
    return pa.Table.from_arrays(columns, schema=schema)


def _typed_column(field: pa.Field, values: list[Any], extras: list[dict[str, Any] | None]) -> pa.Array:
    """The Arrow column of a typed field (``_ABSENT`` where a row lacks it); values the column
    cannot reproduce exactly are also recorded in ``extras``."""
    kind = _kind(field.name)
    if kind in _PLAIN:
        return pa.array(_encode_plain(field.name, values, _PLAIN[kind], extras), type=field.type)
    fast = _FAST_PATHS[kind](field.name, values, field.type, extras)
    if fast is None:
        fast = pa.array(_encode_typed(field.name, values, _TYPERS[kind], extras), type=field.type)
    return fast


# -- pages: one decoder call per page, free-form fields kept as the server's JSON text ------------
#: How the page decoder reads each typed kind: the Python type the value must have, and what
#: an absent field becomes. Scalars read absent as None, so their column converts in one call;
#: an explicit null in one of them fails the decode and that page takes the general path.
_DECODED: Final[dict[Kind, tuple[Any, Any]]] = {
    Kind.STRING: (str, None),
    Kind.TIMESTAMP: (str, None),
    Kind.BOOL: (bool, None),
    Kind.STRING_LIST: (list[str] | None, _ABSENT),
    Kind.NUMBER_MAP: (dict[str, int | float | None] | None, _ABSENT),
}


@cache
def _decoded_fields(object_type: ObjectType) -> tuple[pa.Field, ...]:
    """The schema's fields in the page decoder's attribute order (all but ``_extra``)."""
    return tuple(field for field in schema_for(object_type) if field.name != EXTRA_COLUMN)


#: What the page decoder gives a free-form field a row lacks: one shared empty ``Raw``, so a
#: column no row has is found by identity.
_NO_TEXT: Final = msgspec.Raw()


@cache
def _page_decoder(object_type: ObjectType) -> msgspec.json.Decoder[Any]:
    """A decoder of one JSONL line into a struct with one attribute per schema column.

    JSON columns decode as ``msgspec.Raw``: the value's bytes, found without building the
    value. Typed columns decode as ``_DECODED`` says. A field the schema does not know, or a
    typed field of another type, fails the decode, and the page takes the general path.
    """
    fields: list[tuple[str, Any, Any]] = []
    for field in _decoded_fields(object_type):
        kind = _kind(field.name)
        if kind is Kind.JSON:
            fields.append((f"f_{field.name}", msgspec.Raw, _NO_TEXT))
        else:
            fields.append((f"f_{field.name}", *_DECODED[kind]))
    row = msgspec.defstruct(
        f"{object_type}_page_row",
        fields,
        forbid_unknown_fields=True,
        rename={attr: attr[2:] for attr, _, _ in fields},
        gc=False,  # thousands per page, and they never form cycles
    )
    return msgspec.json.Decoder(row)


def _raw_json_column(values: tuple[msgspec.Raw, ...]) -> pa.Array | None:
    """A string column straight from the values' JSON bytes (an empty ``Raw`` is absent).
    ``None`` when the bytes are not valid UTF-8 or too long for one string column."""
    if values.count(_NO_TEXT) == len(values):
        return pa.nulls(len(values), pa.string())
    lengths = list(map(len, values))
    data = b"".join(values)
    if len(data) >= 2**31:
        return None
    offsets = pa.array(list(itertools.accumulate(lengths, initial=0)), type=pa.int32())
    validity = None if all(lengths) else pc.not_equal(pa.array(lengths), 0).buffers()[1]
    column = pa.StringArray.from_buffers(len(values), offsets.buffers()[1], pa.py_buffer(data), validity)
    if not data.isascii():  # the decoder skipped over these bytes without checking them
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            return None
    return column


def _fast_column(
    field: pa.Field, values: tuple[Any, ...], extras: list[dict[str, Any] | None]
) -> pa.Array | None:
    """One column of a decoded page (see ``_DECODED``); ``None`` sends the page to the general path."""
    kind = _kind(field.name)
    if kind is Kind.JSON:
        return _raw_json_column(values)
    if kind in _PLAIN:
        return pa.array(values, type=field.type)
    if kind is Kind.TIMESTAMP:  # strings, None where absent
        return _created_column(field.name, values, field.type, extras)
    # Lists of strings and number maps, as _DECODED typed them; None is an explicit null.
    if values.count(_ABSENT) == len(values):
        return pa.nulls(len(values), field.type)
    nullable = _nullable(field.name, values, extras)
    if kind is Kind.NUMBER_MAP:
        return _number_map_column(field.name, nullable, field.type, extras)
    return pa.array(nullable, type=field.type)


def fast_page_table(page: bytes, object_type: ObjectType) -> pa.Table | None:
    """The table of one JSONL page without building a Python value for any free-form field;
    ``None`` when the page needs the general path (an unknown field, a typed field of another
    type or an explicit null in a scalar one, invalid JSON or UTF-8).

    The page comes from the server, which writes one object per line; like the JSONL sink,
    this path does not re-check that (two objects on one line are two rows).
    """
    try:
        decoded = _page_decoder(object_type).decode_lines(page)
    except (ValueError, RecursionError):  # malformed, mistyped, invalid UTF-8, or too deep
        return None
    schema = schema_for(object_type)
    if not decoded:
        return schema.empty_table()
    extras: list[dict[str, Any] | None] = [None] * len(decoded)
    columns: list[pa.Array] = []
    by_column = zip(*map(msgspec.structs.astuple, decoded), strict=True)
    for field, values in zip(_decoded_fields(object_type), by_column, strict=True):
        column = _fast_column(field, values, extras)
        if column is None:
            return None
        columns.append(column)
    return _table(schema, columns, extras)


def page_to_table(page: bytes, object_type: ObjectType) -> pa.Table:
    """The table of one JSONL page: the fast path when the page allows, else parsed rows."""
    if not page or page.isspace():
        return schema_for(object_type).empty_table()
    table = fast_page_table(page, object_type)
    return table if table is not None else rows_to_table(parse_page(page), object_type)


def _fast_created(
    name: str, values: list[Any], arrow_type: pa.DataType, extras: list[Any]
) -> pa.Array | None:
    """Timestamps parsed and re-spelled in Arrow; rows whose spelling would not come back
    exactly keep their text in ``_extra``. ``None`` when Arrow cannot parse the column."""
    texts = _nullable(name, values, extras)
    if not all(type(v) is str for v in texts if v is not None):
        return None
    return _created_column(name, texts, arrow_type, extras)


#: What ``format_created`` writes: a year from 0001, milliseconds, or microseconds whose last
#: three digits are not all zero, and ``Z``.
_CANONICAL_CREATED: Final = (
    r"^([1-9]\d{3}|0[1-9]\d\d|00[1-9]\d|000[1-9])-\d\d-\d\dT\d\d:\d\d:\d\d"
    r"\.\d{3}(\d\d[1-9]|\d[1-9]\d|[1-9]\d\d)?Z$"
)


def _created_column(
    name: str, texts: Sequence[str | None], arrow_type: pa.DataType, extras: list[Any]
) -> pa.Array | None:
    """Timestamps of ``texts`` (None where absent) cast in Arrow; texts the column would not
    spell back the same way go to ``_extra``. ``None`` when Arrow cannot parse them."""
    strings = pa.array(texts, type=pa.string())
    try:
        stamps = pc.cast(strings, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # A text that parses and has the canonical shape spells back the same way: the parse
    # already refused impossible dates and times. Testing the shape is a regex, not a format.
    same = pc.match_substring_regex(strings, _CANONICAL_CREATED)
    if pc.all(same).as_py() is False:
        for i in pc.indices_nonzero(pc.invert(pc.fill_null(same, True))).to_pylist():
            _keep_exact(name, i, texts[i], extras)
    return stamps


def _nullable(name: str, values: Sequence[Any], extras: list[Any]) -> list[Any]:
    """``values`` with None where a row lacks the field, as Arrow takes them. An explicit JSON
    null would read back as absent from the typed column, so ``_extra`` keeps it."""
    if None in values:
        for i, value in enumerate(values):
            if value is None:
                _keep_exact(name, i, None, extras)
    return [None if v is _ABSENT else v for v in values]


_NUMBER_TYPES: Final = frozenset({int, float, type(None)})


def _fast_number_map(
    name: str, values: list[Any], arrow_type: pa.DataType, extras: list[Any]
) -> pa.Array | None:
    """Number maps of parsed rows (see ``_number_map_column``); ``None`` for values that are
    not number maps."""
    maps = _nullable(name, values, extras)
    if not {type(m) for m in maps} <= {dict, type(None)}:
        return None
    if not {type(x) for m in maps if m is not None for x in m.values()} <= _NUMBER_TYPES:
        return None
    return _number_map_column(name, maps, arrow_type, extras)


def _number_map_column(
    name: str, maps: list[dict[str, int | float | None] | None], arrow_type: pa.DataType, extras: list[Any]
) -> pa.Array | None:
    """The column of ``maps`` (None where null); maps holding a number that would not decode
    as itself (an integral float, an int beyond 2**53) keep their exact value in ``_extra``.
    ``None`` when Arrow cannot hold a number."""
    present = [m for m in maps if m]
    flat = list(itertools.chain.from_iterable(m.values() for m in present))
    try:
        numbers = pa.array(flat, type=pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    offsets = pa.array(list(itertools.accumulate((len(m) if m else 0 for m in maps), initial=0)), pa.int32())
    keys = pa.array(list(itertools.chain.from_iterable(present)), pa.string())
    nulls = pa.array([m is None for m in maps]) if None in maps else None
    array = pa.MapArray.from_arrays(offsets, keys, numbers, type=arrow_type, mask=nulls)
    types = list(map(type, flat))
    ints = types.count(int)
    # Every int is integral as a double, so there are no integral floats when the integral
    # values are as many as the ints; then only an int's size can make a map inexact.
    integral = pc.equal(pc.floor(numbers), numbers)
    if (pc.sum(integral).as_py() or 0) == ints and not (ints and pc.max(pc.abs(numbers)).as_py() >= 2.0**53):
        return array
    is_float = pa.array([t is float for t in types], type=pa.bool_())
    huge = pc.greater_equal(pc.abs(numbers), 2.0**53)
    inexact = pc.fill_null(pc.or_(pc.and_(is_float, integral), pc.and_(pc.invert(is_float), huge)), False)
    as_lists = pa.ListArray.from_arrays(array.offsets, numbers)  # parent indices need a list type
    parents = pc.take(pc.list_parent_indices(as_lists), pc.indices_nonzero(inexact))
    for i in pc.unique(parents).to_pylist():
        _keep_exact(name, i, maps[i], extras)
    return array


def _fast_string_list(
    name: str, values: list[Any], arrow_type: pa.DataType, extras: list[Any]
) -> pa.Array | None:
    lists = _nullable(name, values, extras)
    if not {type(v) for v in lists} <= {list, type(None)}:
        return None
    if not {type(i) for v in lists if v for i in v} <= {str}:
        return None
    return pa.array(lists, type=arrow_type)


_FAST_PATHS: Final[dict[Kind, Callable[[str, list[Any], pa.DataType, list[Any]], pa.Array | None]]] = {
    Kind.TIMESTAMP: _fast_created,
    Kind.NUMBER_MAP: _fast_number_map,
    Kind.STRING_LIST: _fast_string_list,
}


def _json_texts(values: list[Any]) -> list[bytes | None]:
    """JSON text per value; orjson for the whole column unless a value needs the exact path."""
    try:
        return [None if v is _ABSENT else orjson.dumps(v) for v in values]
    except TypeError:  # an integer beyond 64 bits
        return [None if v is _ABSENT else dumps(v) for v in values]


def _keep_exact(name: str, index: int, value: Any, extras: list[dict[str, Any] | None]) -> None:
    """Record a value its typed column cannot reproduce in the row's ``_extra``."""
    extra = extras[index]
    if extra is None:
        extra = extras[index] = {}
    extra[name] = value


def _encode_plain(
    name: str, values: list[Any], expected: type, extras: list[dict[str, Any] | None]
) -> list[Any]:
    """Typed values of a string or bool column (the common case, kept to two comprehensions)."""
    for i in [i for i, v in enumerate(values) if type(v) is not expected and v is not _ABSENT]:
        _keep_exact(name, i, values[i], extras)
    return [v if type(v) is expected else None for v in values]


def _encode_typed(
    name: str,
    values: list[Any],
    typer: Callable[[Any], tuple[Any, bool]],
    extras: list[dict[str, Any] | None],
) -> list[Any]:
    """Typed values of one column; values the column cannot reproduce go to ``extras`` as well."""
    typed: list[Any] = []
    for i, value in enumerate(values):
        if value is _ABSENT:
            typed.append(None)
            continue
        converted, exact = typer(value)
        typed.append(converted)
        if not exact:
            _keep_exact(name, i, value, extras)
    return typed


# -- decoding ---------------------------------------------------------------------------------------
def _decode_json(name: str, column: pa.ChunkedArray) -> list[Any]:
    texts = column.to_pylist()
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


def _decode_column(name: str, column: pa.ChunkedArray) -> list[Any]:
    kind = _kind(name)
    if kind is Kind.JSON:
        return _decode_json(name, column)
    raw = column.to_pylist()
    if kind is Kind.TIMESTAMP:
        return [_ABSENT if v is None else format_created(v) for v in raw]
    if kind is Kind.NUMBER_MAP:
        return [_ABSENT if v is None else {k: _decoded_number(x) for k, x in v} for v in raw]
    return [_ABSENT if v is None else v for v in raw]


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
        if name == EXTRA_COLUMN or column.null_count == len(column):
            continue
        _fill(rows, name, _decode_column(name, column))
    if EXTRA_COLUMN in table.schema.names:
        for row, extra in zip(rows, table.column(EXTRA_COLUMN).to_pylist(), strict=True):
            if extra is not None:
                row.update(loads(extra.encode()))
    return rows


def _fill(rows: list[dict[str, Any]], name: str, values: Iterable[Any]) -> None:
    for row, value in zip(rows, values, strict=True):
        if value is not _ABSENT:
            row[name] = value


# -- the sink ---------------------------------------------------------------------------------------
def parse_page(page: bytes) -> list[dict[str, Any]]:
    """The row dicts of one JSONL page, parsed with a single decoder call."""
    try:
        rows = loads_array(page_lines(page))
    except ValueError as exc:
        raise BtpipeError(f"page is not valid JSONL ({exc})") from exc
    if not all(type(row) is dict for row in rows):
        raise BtpipeError("page is not valid JSONL (a line is not a JSON object)")
    return rows


#: Row groups in the row-group thread at once, across a process's sinks: each holds up to
#: ``row_group_bytes`` of Arrow data. One is enough to overlap encoding with building tables.
ROW_GROUPS_IN_FLIGHT: Final = 1
_row_group_room = threading.BoundedSemaphore(ROW_GROUPS_IN_FLIGHT)
_row_group_thread: ThreadPoolExecutor | None = None
_row_group_lock = threading.Lock()


def _write_row_group(writer: pq.ParquetWriter, group: pa.Table) -> Future[None]:
    """Write ``group`` in the process's row-group thread; blocks while the thread is behind."""
    global _row_group_thread
    with _row_group_lock:
        if _row_group_thread is None:
            _row_group_thread = ThreadPoolExecutor(1, thread_name_prefix="parquet-row-groups")
    _row_group_room.acquire()
    try:
        writing = _row_group_thread.submit(writer.write_table, group, row_group_size=group.num_rows)
    except BaseException:
        _row_group_room.release()
        raise
    writing.add_done_callback(lambda _: _row_group_room.release())
    return writing


class ParquetSink(PartFileSink):
    """Writes pages to ``{directory}/{prefix}-{part:05d}.parquet`` in row groups.

    Rows are buffered as Arrow tables until a row group is full (``row_group_rows`` rows or
    ``row_group_bytes`` of Arrow data, whichever comes first, so wide rows do not make huge
    groups that every writer must hold in memory); a part is published when it
    reaches ``max_file_rows`` (exactly) or, after a row group, ``max_file_bytes``.

    Row groups are encoded by the process's row-group thread while the caller builds the
    next page's table: Arrow's Parquet writer releases the GIL, table building mostly holds
    it, so the two overlap. With ``max_file_bytes`` set, each group is written before the
    next page, since the part's size must be known; ``None`` sets no byte limit.
    """

    extension = ".parquet"

    def __init__(
        self,
        storage: Storage,
        directory: str,
        object_type: ObjectType,
        *,
        prefix: str = "part",
        first_part: int = 0,
        compression: str | None = "zstd",
        row_group_rows: int = 50_000,
        row_group_bytes: int = 16 * 1024 * 1024,
        max_file_rows: int = 1_000_000,
        max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        limits = (row_group_rows, row_group_bytes, max_file_rows, max_file_bytes)
        if any(limit is not None and limit <= 0 for limit in limits):
            raise UsageError("row group and file limits must be positive")
        super().__init__(storage, directory, prefix=prefix, first_part=first_part)
        self.object_type = object_type
        self.schema = schema_for(object_type)
        self.compression = compression or "none"
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.max_file_rows = max_file_rows
        self.max_file_bytes = max_file_bytes
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._stream: pa.BufferedOutputStream | None = None  # the part's bytes, buffered
        self._writing: Future[None] | None = None  # the part's row group being written

    def _start(self, out: CountingWriter) -> None:
        # Arrow's writer calls a Python file object, which needs the GIL, once or twice per
        # data page; while another thread holds the GIL each call waits for it, which made
        # writing several times slower. Buffering in Arrow calls it once per 256 KB (one buffer
        # per open part, so kept small).
        self._stream = pa.BufferedOutputStream(pa.PythonFile(out, mode="w"), buffer_size=WRITE_BUFFER_BYTES)
        self._writer = pq.ParquetWriter(
            self._stream,
            self.schema,
            compression=self.compression,
            # Dictionaries pay only for low-cardinality columns; statistics only where a reader
            # can prune with them (ids, versions, timestamps). Both cost CPU on wide JSON text.
            use_dictionary=[n for n in DICTIONARY_COLUMNS if n in self.schema.names],
            write_statistics=[n for n in STATISTICS_COLUMNS if n in self.schema.names],
        )

    def _settle(self) -> None:
        """Wait for the row group being written; raise its error."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def _finish(self) -> None:
        self._settle()
        if self._writer is not None:
            self._writer.close()  # writes the footer
            self._writer = None
        if self._stream is not None:
            self._stream.close()  # flushes the buffer; the atomic file stays open
            self._stream = None

    def _abandon(self) -> None:
        with contextlib.suppress(Exception):  # the part is thrown away; its error was reported
            self._settle()
        self._finish()

    def _group_size(self) -> int:
        return min(self.row_group_rows, self.max_file_rows - self._part_rows)

    def write_page(self, page: bytes, rows: int | None = None) -> list[FileInfo]:
        table = page_to_table(page, self.object_type)
        if not table.num_rows:
            return []
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        published: list[FileInfo] = []
        while self._pending_rows >= self._group_size() or (
            self._pending_rows and self._pending_bytes >= self.row_group_bytes
        ):
            published += self._write_group()
        return published

    def _write_group(self) -> list[FileInfo]:
        """Write one row group from the buffer; publish the part if it is now full."""
        size = min(self._group_size(), self._pending_rows)
        buffered = pa.concat_tables(self._pending)
        group, rest = buffered.slice(0, size), buffered.slice(size)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        self._pending_bytes = rest.nbytes
        self._ensure_open()
        assert self._writer is not None and self._stream is not None
        self._settle()
        self._writing = _write_row_group(self._writer, group)
        self._part_rows += size
        if self._part_rows >= self.max_file_rows:
            return self._publish()
        if self.max_file_bytes is not None:
            self._settle()
            if self._stream.tell() >= self.max_file_bytes:
                return self._publish()
        return []

    def _drain(self) -> list[FileInfo]:
        published: list[FileInfo] = []
        while self._pending_rows:
            published += self._write_group()
        return published

    def abort(self) -> None:
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        super().abort()
