"""Encoding: ``/btql`` JSONL pages, or parsed rows, into Arrow tables of the btpipe schema.

Two paths give the same table. The fast one (``fast_page_table``) decodes a page with one
msgspec call and keeps every free-form field as the server's JSON bytes; the general one
(``rows_to_table``) takes parsed rows of any shape. ``page_to_table`` tries the first and falls
back to the second. Both build each column with the same functions below, once the values
are of the column's type. What each column holds is :mod:`pipeline.common.arrow_schema`'s to say.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Final

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.common.arrow_schema import (
    CANONICAL_VERSION,
    INT_MAP_TYPE,
    JSON_TYPE,
    NAMES_TYPE,
    Kind,
    column_kind,
    format_created,
    parse_created,
    row_fields,
    schema_for,
)
from pipeline.common.jsoncodec import dumps, parse_page
from pipeline.common.rows import ObjectType

#: A field the row lacks, as opposed to one whose value is null.
_ABSENT: Final = object()
_INT64: Final = range(-(2**63), 2**63)


class _Aside:
    """What a table's typed columns cannot hold, row by row: the fields present with a JSON
    null (``_nulls``) and the values kept exactly (``_extra``)."""

    __slots__ = ("extras", "nulls")

    def __init__(self, rows: int) -> None:
        self.extras: list[dict[str, Any] | None] = [None] * rows
        #: Per field with a JSON null somewhere, the rows that have it (in column order).
        self.nulls: list[tuple[str, list[int]]] = []

    def keep_exact(self, name: str, index: int, value: Any) -> None:
        """Record a value its typed column cannot reproduce in the row's ``_extra``."""
        extra = self.extras[index]
        if extra is None:
            extra = self.extras[index] = {}
        extra[name] = value

    def keep_nulls(self, name: str, indexes: list[int]) -> None:
        """Record that rows ``indexes`` have ``name`` with a JSON null (its column holds a null)."""
        if indexes:
            self.nulls.append((name, indexes))

    def _names(self) -> pa.Array:
        """The ``_nulls`` column: per row, the fields it has with a JSON null, in column order."""
        lengths = [0] * len(self.extras)
        for _, indexes in self.nulls:
            for i in indexes:
                lengths[i] += 1
        if len(self.nulls) == 1:  # the usual case, already in row order
            name, indexes = self.nulls[0]
            names = [name] * len(indexes)
        else:
            marks = sorted((i, n) for n, (_, indexes) in enumerate(self.nulls) for i in indexes)
            names = [self.nulls[n][0] for _, n in marks]
        offsets = pa.array(list(itertools.accumulate(lengths, initial=0)), pa.int32())
        return pa.ListArray.from_arrays(offsets, pa.array(names, pa.string()), type=NAMES_TYPE)

    def columns(self) -> list[pa.Array]:
        """The ``_nulls`` and ``_extra`` columns."""
        extras = _json_texts([_ABSENT if e is None else e for e in self.extras])
        return [self._names(), pa.array(extras, pa.string())]


def _table(object_type: ObjectType, columns: list[pa.Array], aside: _Aside) -> pa.Table:
    return pa.Table.from_arrays([*columns, *aside.columns()], schema=schema_for(object_type))


def _nullable(name: str, values: Sequence[Any], aside: _Aside) -> list[Any]:
    """``values`` with None where a row lacks the field or has it null, as Arrow takes them;
    ``_nulls`` records the second."""
    if None in values:
        aside.keep_nulls(name, [i for i, value in enumerate(values) if value is None])
    return [None if v is _ABSENT else v for v in values]


# -- columns, from values of the column's type (None where absent or null) -----------------------
def _json_column(texts: list[bytes | None]) -> pa.Array:
    return pa.ExtensionArray.from_storage(JSON_TYPE, pa.array(texts, pa.string()))


def _version_column(
    name: str, texts: Sequence[str | None], arrow_type: pa.DataType, aside: _Aside
) -> pa.Array:
    """Versions as decimals; a text the decimal would not spell back the same way (a sign, a
    leading zero, too many digits, not a number) keeps its text in ``_extra``."""
    strings = pa.array(texts, pa.string())
    plain = pc.match_substring_regex(strings, CANONICAL_VERSION)
    if pc.all(plain).as_py() is False:
        for i in pc.indices_nonzero(pc.invert(pc.fill_null(plain, True))).to_pylist():
            aside.keep_exact(name, i, texts[i])
        strings = pc.if_else(plain, strings, None)
    return pc.cast(strings, arrow_type)


#: What ``format_created`` writes: a year from 0001, milliseconds, or microseconds whose last
#: three digits are not all zero, and ``Z``.
_CANONICAL_CREATED: Final = (
    r"^([1-9]\d{3}|0[1-9]\d\d|00[1-9]\d|000[1-9])-\d\d-\d\dT\d\d:\d\d:\d\d"
    r"\.\d{3}(\d\d[1-9]|\d[1-9]\d|[1-9]\d\d)?Z$"
)


def _created_column(
    name: str, texts: Sequence[str | None], arrow_type: pa.DataType, aside: _Aside
) -> pa.Array | None:
    """Timestamps of ``texts`` cast in Arrow; texts the column would not spell back the same
    way go to ``_extra``. ``None`` when Arrow cannot parse them."""
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
            aside.keep_exact(name, i, texts[i])
    return stamps


def _typed_created(value: str) -> tuple[datetime | None, bool]:
    """One ``created`` text parsed (None when it does not parse), and whether it spells back."""
    parsed = parse_created(value)
    if parsed is None:
        return None, False
    return parsed, format_created(parsed) == value


def _created_one_by_one(
    name: str, texts: list[str | None], arrow_type: pa.DataType, aside: _Aside
) -> pa.Array:
    """Timestamps parsed one at a time, for a column Arrow cannot parse as a whole."""
    stamps: list[datetime | None] = []
    for i, text in enumerate(texts):
        stamp, exact = (None, True) if text is None else _typed_created(text)
        stamps.append(stamp)
        if not exact:
            aside.keep_exact(name, i, text)
    return pa.array(stamps, type=arrow_type)


def _number_map_columns(
    name: str, maps: list[dict[str, int | float | None] | None], arrow_type: pa.DataType, aside: _Aside
) -> tuple[pa.Array, pa.Array]:
    """The double map of ``maps`` (None where absent or null) and its exact-integer companion.
    A map holding an integer beyond 64 bits keeps its exact value in ``_extra`` (which wins
    when read back); its typed views still hold every entry: the double view each number
    (infinite beyond the double range), the integer view the integers that fit."""
    present = [m for m in maps if m]
    flat = list(itertools.chain.from_iterable(m.values() for m in present))
    is_int = list(map(operator.is_, map(type, flat), itertools.repeat(int)))
    ints: list[int] = list(itertools.compress(flat, is_int))  # type: ignore[arg-type]
    if ints and (max(ints) not in _INT64 or min(ints) not in _INT64):
        for i, m in enumerate(maps):
            if m and any(type(x) is int and x not in _INT64 for x in m.values()):
                aside.keep_exact(name, i, m)
        is_int = [fits and x in _INT64 for fits, x in zip(is_int, flat, strict=True)]
        ints = list(itertools.compress(flat, is_int))  # type: ignore[arg-type]
    offsets = pa.array(list(itertools.accumulate((len(m) if m else 0 for m in maps), initial=0)), pa.int32())
    keys = pa.array(list(itertools.chain.from_iterable(present)), pa.string())
    nulls = pa.array([m is None for m in maps]) if None in maps else None
    try:
        numbers = pa.array(flat, pa.float64())
    except pa.ArrowInvalid:  # an integer beyond 2**53: Arrow will not round it, the double view does
        numbers = pa.array([_double(x) if type(x) is int else x for x in flat], pa.float64())
    doubles = pa.MapArray.from_arrays(offsets, keys, numbers, type=arrow_type, mask=nulls)
    if not ints:
        int_offsets = pa.array([0] * len(offsets), pa.int32())
        return doubles, pa.MapArray.from_arrays(
            int_offsets, keys[:0], pa.array([], pa.int64()), type=INT_MAP_TYPE, mask=nulls
        )
    int_mask = pa.array(is_int, pa.bool_())
    # Integers before each map's first entry: where the map starts among the integers.
    counted = pc.cumulative_sum(pc.cast(int_mask, pa.int32()))
    int_offsets = pc.take(pa.concat_arrays([pa.array([0], pa.int32()), counted]), offsets)
    integers = pa.MapArray.from_arrays(
        int_offsets, keys.filter(int_mask), pa.array(ints, pa.int64()), type=INT_MAP_TYPE, mask=nulls
    )
    return doubles, integers


def _double(value: int) -> float:
    """The nearest double of an integer; infinite beyond the double range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _json_texts(values: list[Any]) -> list[bytes | None]:
    """JSON text per value (None where absent); orjson for the whole column unless a value
    needs the exact path."""
    try:
        return [None if v is _ABSENT else orjson.dumps(v) for v in values]
    except TypeError:  # an integer beyond 64 bits
        return [None if v is _ABSENT else dumps(v) for v in values]


# -- rows: parsed JSON of any shape ---------------------------------------------------------------
def _string_list(value: Any) -> bool:
    return type(value) is list and all(type(item) is str for item in value)


def _number_map(value: Any) -> bool:
    return type(value) is dict and all(type(x) in _MAP_NUMBER_TYPES for x in value.values())


_MAP_NUMBER_TYPES: Final = frozenset({int, float, type(None)})

#: Which values a typed column takes; any other value is kept in ``_extra``.
_FITS: Final[dict[Kind, Callable[[Any], bool]]] = {
    Kind.STRING: lambda v: type(v) is str,
    Kind.VERSION: lambda v: type(v) is str,
    Kind.TIMESTAMP: lambda v: type(v) is str,
    Kind.BOOL: lambda v: type(v) is bool,
    Kind.STRING_LIST: _string_list,
    Kind.NUMBER_MAP: _number_map,
}


def _fitting(name: str, kind: Kind, values: list[Any], aside: _Aside) -> list[Any]:
    """``values`` (None where absent or null) with None for the values the column cannot take,
    which ``_extra`` keeps."""
    fits = _FITS[kind]
    unfit = [i for i, v in enumerate(values) if v is not None and not fits(v)]
    if not unfit:
        return values
    values = list(values)
    for i in unfit:
        aside.keep_exact(name, i, values[i])
        values[i] = None
    return values


def _row_columns(field: pa.Field, values: list[Any], aside: _Aside) -> list[pa.Array]:
    """The column(s) of one field of parsed rows (``_ABSENT`` where a row lacks it)."""
    name, kind = field.name, column_kind(field.name)
    values = _nullable(name, values, aside)
    if kind is Kind.JSON:
        return [_json_column(_json_texts([_ABSENT if v is None else v for v in values]))]
    values = _fitting(name, kind, values, aside)
    if kind is Kind.NUMBER_MAP:
        return list(_number_map_columns(name, values, field.type, aside))
    if kind is Kind.TIMESTAMP:
        stamps = _created_column(name, values, field.type, aside)
        return [stamps if stamps is not None else _created_one_by_one(name, values, field.type, aside)]
    if kind is Kind.VERSION:
        return [_version_column(name, values, field.type, aside)]
    return [pa.array(values, type=field.type)]


def _absent_columns(field: pa.Field, rows: int) -> list[pa.Array]:
    if column_kind(field.name) is Kind.NUMBER_MAP:
        return [pa.nulls(rows, field.type), pa.nulls(rows, INT_MAP_TYPE)]
    return [pa.nulls(rows, field.type)]


def rows_to_table(rows: list[dict[str, Any]], object_type: ObjectType) -> pa.Table:
    """Encode row dicts (as parsed from JSON) into a table of ``schema_for(object_type)``.

    Column by column: a JSON null goes to ``_nulls``, a value the column does not take (or
    cannot spell back exactly) to ``_extra``, and the rest is built in Arrow.
    """
    schema = schema_for(object_type)
    known = frozenset(row_fields(object_type))
    present = set().union(*rows)
    aside = _Aside(len(rows))
    if present - known:
        aside.extras = [
            {k: row[k] for k in row if k not in known} if row.keys() - known else None for row in rows
        ]
    columns: list[pa.Array] = []
    for name in row_fields(object_type):
        field = schema.field(name)
        if name not in present:
            columns += _absent_columns(field, len(rows))
        else:
            columns += _row_columns(field, [row.get(name, _ABSENT) for row in rows], aside)
    return _table(object_type, columns, aside)


# -- pages: one decoder call per page, free-form fields kept as the server's JSON text ------------
#: How the page decoder reads each typed kind: the Python type the value must have, and what
#: an absent field becomes. Scalars read absent as None, so their column converts in one call;
#: an explicit null in one of them fails the decode and that page takes the general path.
_DECODED: Final[dict[Kind, tuple[Any, Any]]] = {
    Kind.STRING: (str, None),
    Kind.VERSION: (str, None),
    Kind.TIMESTAMP: (str, None),
    Kind.BOOL: (bool, None),
    Kind.STRING_LIST: (list[str] | None, _ABSENT),
    Kind.NUMBER_MAP: (dict[str, int | float | None] | None, _ABSENT),
}


@cache
def _decoded_fields(object_type: ObjectType) -> tuple[pa.Field, ...]:
    """The schema's row fields in the page decoder's attribute order."""
    schema = schema_for(object_type)
    return tuple(schema.field(name) for name in row_fields(object_type))


#: What the page decoder gives a free-form field a row lacks: one shared empty ``Raw``, so a
#: column no row has is found by identity.
_NO_TEXT: Final = msgspec.Raw()
_NULL_TEXT: Final = msgspec.Raw(b"null")


@cache
def _page_decoder(object_type: ObjectType) -> msgspec.json.Decoder[Any]:
    """A decoder of one JSONL line into a struct with one attribute per row field.

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


def _raw_json_column(name: str, values: tuple[msgspec.Raw, ...], aside: _Aside) -> pa.Array | None:
    """A JSON column straight from the values' JSON bytes (an empty ``Raw`` is absent, a
    ``null`` goes to ``_nulls``). ``None`` when the bytes are not valid UTF-8 or too long for
    one string column."""
    lengths = list(map(len, values))
    if 4 in lengths and _NULL_TEXT in values:
        nulls = [i for i, v in enumerate(values) if v == _NULL_TEXT]
        aside.keep_nulls(name, nulls)
        for i in nulls:
            lengths[i] = 0
        values = tuple(_NO_TEXT if v == _NULL_TEXT else v for v in values)
    if not any(lengths):
        return pa.nulls(len(values), JSON_TYPE)
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
    return pa.ExtensionArray.from_storage(JSON_TYPE, column)


def _page_columns(field: pa.Field, values: tuple[Any, ...], aside: _Aside) -> list[pa.Array] | None:
    """The column(s) of one field of a decoded page (see ``_DECODED``); ``None`` sends the
    page to the general path."""
    name, kind = field.name, column_kind(field.name)
    if kind is Kind.JSON:
        column = _raw_json_column(name, values, aside)
        return None if column is None else [column]
    if kind in (Kind.STRING, Kind.BOOL):  # None where absent
        return [pa.array(values, type=field.type)]
    if kind is Kind.VERSION:
        return [_version_column(name, values, field.type, aside)]
    if kind is Kind.TIMESTAMP:
        column = _created_column(name, values, field.type, aside)
        return None if column is None else [column]
    # Lists of strings and number maps, as _DECODED typed them; None is an explicit null.
    if values.count(_ABSENT) == len(values):
        return _absent_columns(field, len(values))
    nullable = _nullable(name, values, aside)
    if kind is Kind.NUMBER_MAP:
        return list(_number_map_columns(name, nullable, field.type, aside))
    return [pa.array(nullable, type=field.type)]


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
    if not decoded:
        return schema_for(object_type).empty_table()
    aside = _Aside(len(decoded))
    columns: list[pa.Array] = []
    by_column = zip(*map(msgspec.structs.astuple, decoded), strict=True)
    for field, values in zip(_decoded_fields(object_type), by_column, strict=True):
        built = _page_columns(field, values, aside)
        if built is None:
            return None
        columns += built
    return _table(object_type, columns, aside)


def page_to_table(page: bytes, object_type: ObjectType) -> pa.Table:
    """The table of one JSONL page: the fast path when the page allows, else parsed rows."""
    if not page or page.isspace():
        return schema_for(object_type).empty_table()
    table = fast_page_table(page, object_type)
    return table if table is not None else rows_to_table(parse_page(page), object_type)
