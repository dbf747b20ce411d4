"""Encoding: ``/btql`` JSONL pages, or parsed rows, into Arrow tables of the btpipe schema.

Two paths give the same table. The fast one (``fast_page_table``) decodes a page with one
msgspec call and keeps every free-form field as the server's JSON bytes; the general one
(``rows_to_table``) takes parsed rows of any shape. ``page_to_table`` tries the first and falls
back to the second. What each column holds is :mod:`pipeline.common.arrow_schema`'s to say.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.common.arrow_schema import (
    EXTRA_COLUMN,
    Kind,
    column_kind,
    decoded_number,
    format_created,
    schema_for,
)
from pipeline.common.jsoncodec import dumps, parse_page
from pipeline.common.rows import ObjectType

# -- one column at a time -------------------------------------------------------------------------
#: A field the row lacks, as opposed to one whose value is null.
_ABSENT: Final = object()


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
            exact = exact and type(decoded_number(as_float)) is type(number) and as_float == number
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
        if column_kind(field.name) is Kind.JSON:
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
    kind = column_kind(field.name)
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
        kind = column_kind(field.name)
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
    kind = column_kind(field.name)
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
