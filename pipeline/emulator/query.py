"""Compiling a ``/btql`` query (see ``pipeline.querylang.ast``) into SQLite SQL.

Query text (BTQL clauses or SQL) is parsed by ``querylang.parse`` first, so text and
parsed objects share this one compiler and the function table of ``querylang.ast``.
The input is the query dict plus the pinned version and the cursor position; the output
is SQL and parameters over the ``rows`` table of ``store.py``. Visibility at version V:
per id, the version with the highest ``xact_id <= V``, unless that version is a delete.
Pages of a spans, traces or summary (see ``summary.py``) query are ordered by ``seq`` (the write order behind
``_pagination_key``), so under a pinned version every visible row appears exactly once
however many rows are written meanwhile. A cursor continues such a query, also when it sorts
on ``_pagination_key`` alone (either direction); a ``_pagination_key`` compared with a key
this server wrote compares as its ``seq``, so keyset paging reads only its page.

A ``select *`` page selects the stored JSON text as is: no decode/encode per row.
Projections and aggregates build their JSON in SQLite with ``json_object``. Identifiers
are compiled in two modes: *scalar* (``json_extract``, for comparisons, sorting and
aggregate arguments) and *json* (``->``, for values placed in an output row, so objects
and strings keep their JSON types). User values only ever travel as parameters. In scalar
mode ``created`` is a time: its key of ``timestamps.py``, which literals facing it are
turned into whatever their ISO-8601 spelling.

Aggregate queries (``dimensions``/``measures``) group by their dimensions and may sort
by any output column (by alias or by repeating its expression); they are never paged.
Errors raise :class:`QueryError` (a 400) naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.emulator import jsonvalues
from pipeline.emulator.scanlimit import SCAN_FUNCTION
from pipeline.emulator.summary import summary_cte
from pipeline.emulator.timestamps import canonical_from_key_sql, key_sql, time_key
from pipeline.querylang.ast import (
    AGGREGATE_FUNCTIONS,
    ARITHMETIC_OPS,
    FUNCTION_ARITY,
    MAX_LIMIT,
    OBJECT_TYPES,
    SHAPES,
    ObjectType,
)
from pipeline.querylang.parse import QuerySyntaxError, parse_query


class QueryError(ValueError):
    """A query the emulator cannot run; the message is the 400 body."""


QUERY_FIELDS: Final = frozenset(
    {"from", "select", "filter", "sort", "dimensions", "measures", "limit", "cursor"}
)
#: Identifiers backed by a column of ``rows`` (faster, and ``_xact_id`` compares as an integer).
COLUMN_IDENTS: Final = {"_xact_id": "xact_id", "id": "id", "root_span_id": "root_span_id"}
_COMPARE_SQL: Final = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_CREATED: Final = {"op": "ident", "name": ["created"]}
_PAGINATION_KEY: Final = {"op": "ident", "name": ["_pagination_key"]}
#: A ``_pagination_key`` this server wrote (``store.pagination_key``): compares as its seq.
_OWN_PAGINATION_KEY: Final = re.compile(r"p(\d{20})")
_ARITH_SQL: Final = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%"}


def xact_number(value: str | int) -> int:
    """A transaction id as a number; ValueError for text that is not one or a number beyond
    the 64 bits a transaction id has (SQLite could not even compare it)."""
    number = int(value)
    if not -(2**63) <= number < 2**63:
        raise ValueError(f"{value!r} is out of range")
    return number


@dataclass(frozen=True)
class Source:
    """What a query reads: one object type, one or more object ids, a shape."""

    object_type: ObjectType
    object_ids: tuple[str, ...]
    shape: str


@dataclass(frozen=True)
class Compiled:
    """SQL returning ``(seq, json_bytes)`` rows, plus how to page and describe them.

    The JSON comes back as a BLOB so Python receives the UTF-8 bytes as stored, with no
    decode to ``str`` and no encode back on the way out."""

    sql: str
    params: list[Any]
    paged: bool  # a cursor continues this query (no sort, no aggregates)
    columns: tuple[str, ...] | None  # output names; None for select *


# -- cursors ----------------------------------------------------------------------------


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str, parts: int) -> list[str]:
    try:
        found = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":", parts - 1)
    except (binascii.Error, UnicodeDecodeError):
        found = []
    if len(found) != parts:
        raise QueryError("cursor: malformed cursor (pass back the cursor of the previous page unchanged)")
    return found


def encode_cursor(version: int, last_seq: int) -> str:
    """An opaque ``/btql`` cursor: the pinned version and the last row's seq."""
    return _encode(f"{version}:{last_seq}")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """``(version, last_seq)`` of a cursor made by :func:`encode_cursor`."""
    version, last_seq = _decode(cursor, 2)
    try:
        return int(version), int(last_seq)
    except ValueError:
        raise QueryError(
            "cursor: malformed cursor (pass back the cursor of the previous page unchanged)"
        ) from None


def encode_history_cursor(version: int, xact_id: int, root_span_id: str) -> str:
    """An opaque legacy-fetch cursor: the pinned version and the page's last
    ``(_xact_id, root_span_id)``, the pair the old ``max_*`` cursor names."""
    return _encode(f"{version}:{xact_id}:{root_span_id}")


def decode_history_cursor(cursor: str) -> tuple[int, tuple[int, str]]:
    """``(version, (xact_id, root_span_id))`` of a cursor made by :func:`encode_history_cursor`."""
    version, xact_id, root_span_id = _decode(cursor, 3)
    try:
        return int(version), (int(xact_id), root_span_id)
    except ValueError:
        raise QueryError(
            "cursor: malformed cursor (pass back the cursor of the previous page unchanged)"
        ) from None


# -- the query envelope -----------------------------------------------------------------


def check_query(query: Any) -> dict[str, Any]:
    """The parsed query object: text (BTQL clauses or SQL) goes through the one parser,
    so text and parsed queries reach the same compiler; unknown fields are refused."""
    if isinstance(query, str):
        try:
            query = parse_query(query)
        except QuerySyntaxError as exc:
            raise QueryError(f"query: {exc}") from None
    if not isinstance(query, dict):
        raise QueryError("query: expected query text or a parsed query object")
    unknown = sorted(set(query) - QUERY_FIELDS)
    if unknown:
        raise QueryError(f"query: unknown field {unknown[0]!r} (known: {', '.join(sorted(QUERY_FIELDS))})")
    return query


def parse_source(query: dict[str, Any]) -> Source:
    node = query.get("from")
    if not isinstance(node, dict) or node.get("op") != "function":
        raise QueryError("query.from: expected {'op': 'function', 'name': ..., 'args': [...]}")
    name = _ident_path(node.get("name"), "query.from.name")
    object_type = name[0] if len(name) == 1 else None
    if object_type not in OBJECT_TYPES:
        raise QueryError(f"query.from: unknown source {'.'.join(map(str, name))!r} (use project_logs, dataset or experiment)")  # fmt: skip
    args = node.get("args")
    if not isinstance(args, list) or not args:
        raise QueryError("query.from.args: expected at least one object id literal")
    ids = []
    for i, arg in enumerate(args):
        if not isinstance(arg, dict) or arg.get("op") != "literal" or not isinstance(arg.get("value"), str):
            raise QueryError(f"query.from.args[{i}]: expected a string literal object id")
        ids.append(arg["value"])
    shape = node.get("shape") or "spans"
    if shape not in SHAPES:
        raise QueryError(f"query.from.shape: unknown shape {shape!r} (use {', '.join(SHAPES)})")
    return Source(object_type, tuple(dict.fromkeys(ids)), shape)


def parse_limit(value: Any, where: str = "limit", *, low: int = 1, clamp: bool = False) -> int:
    """A page size: an integer from ``low`` to ``MAX_LIMIT`` (absent: ``MAX_LIMIT``); with
    ``clamp``, one above the cap gets the cap (a route whose spec sets no maximum)."""
    if value is None:
        return MAX_LIMIT
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(f"{where}: expected an integer")
    if clamp and value > MAX_LIMIT:
        return MAX_LIMIT
    if not low <= value <= MAX_LIMIT:
        shown = f"{low} or more" if clamp else f"{low} to {MAX_LIMIT}; the page size is capped at {MAX_LIMIT}"
        raise QueryError(f"{where}: {value} is out of range ({shown})")
    return value


def _ident_path(node: Any, where: str) -> list[Any]:
    if not isinstance(node, dict) or node.get("op") != "ident":
        raise QueryError(f"{where}: expected an identifier")
    name = node.get("name")
    if not isinstance(name, list) or not name or not all(isinstance(p, str | int) and not isinstance(p, bool) for p in name):  # fmt: skip
        raise QueryError(f"{where}: identifier name must be a non-empty list of strings")
    return name


def json_path(name: list[Any], where: str) -> str:
    parts = ["$"]
    for part in name:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif '"' in part:
            raise QueryError(f"{where}: field names containing '\"' are not supported")
        else:
            parts.append(f'."{part}"')
    return "".join(parts)


# -- expressions --------------------------------------------------------------------------


def _composite(node: Any) -> bool:
    """Whether ``node`` is a list or object literal."""
    return (
        isinstance(node, dict) and node.get("op") == "literal" and isinstance(node.get("value"), list | dict)
    )


@dataclass
class _Compiler:
    alias: str
    params: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def expr(self, node: Any, where: str, *, as_json: bool = False, aggregate: bool = False) -> str:
        if not isinstance(node, dict) or not isinstance(node.get("op"), str):
            raise QueryError(f"{where}: expected an expression object with an 'op'")
        op = node["op"]
        handler = self._handlers().get(op)
        if handler is None:
            raise QueryError(f"{where}: unknown op {op!r}")
        return handler(node, where, as_json, aggregate)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any], str, bool, bool], str]]:
        return {
            "literal": self._literal, "ident": self._ident, "function": self._function,
            "and": self._boolean, "or": self._boolean, "not": self._unary, "neg": self._unary,
            "isnull": self._unary, "isnotnull": self._unary, "if": self._if,
            **dict.fromkeys(_COMPARE_SQL, self._compare), **dict.fromkeys(ARITHMETIC_OPS, self._arith),
            "like": self._like, "ilike": self._like, "includes": self._includes, "in": self._in,
        }  # fmt: skip

    def _literal(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        value = node.get("value")
        if isinstance(value, list | dict):
            raise QueryError(f"{where}: list or object literals are only allowed with 'in', '=' and '!='")
        return self.bind(value)

    def _ident(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        name = _ident_path(node, where)
        if as_json:
            return f"({self.alias}.data -> {self.bind(json_path(name, where))})"
        if len(name) == 1 and name[0] in COLUMN_IDENTS:
            return f"{self.alias}.{COLUMN_IDENTS[name[0]]}"
        extracted = f"json_extract({self.alias}.data, {self.bind(json_path(name, where))})"
        return key_sql(extracted) if node == _CREATED else extracted  # created is a time value

    def _operands(self, node: dict[str, Any], where: str, aggregate: bool, times: bool = True) -> tuple[str, str]:  # fmt: skip
        """Both sides compiled; a literal facing ``_xact_id`` becomes an integer and, when
        ``times``, one facing ``created`` becomes a time key (see ``timestamps.py``); without
        ``times`` (patterns) ``created`` is its stored text."""
        left, right = node.get("left"), node.get("right")
        if left is None or right is None:
            raise QueryError(f"{where}: {node['op']} needs 'left' and 'right'")
        return (
            self._side(left, right, f"{where}.left", aggregate, times),
            self._side(right, left, f"{where}.right", aggregate, times),
        )

    def _side(self, node: Any, other: Any, where: str, aggregate: bool, times: bool) -> str:
        if node == _CREATED and not times:
            return f"json_extract({self.alias}.data, {self.bind('$.created')})"  # the stored text
        return self.expr(self._coerce(node, other, where, times), where, aggregate=aggregate)

    @staticmethod
    def _coerce(node: Any, other: Any, where: str, times: bool = True) -> Any:
        """A literal compared with ``_xact_id`` compares as an integer (it may come as a
        string); one compared with ``created`` as a time, whatever its ISO-8601 spelling."""
        if not (isinstance(node, dict) and node.get("op") == "literal" and node.get("value") is not None):
            return node
        value = node["value"]
        if other == {"op": "ident", "name": ["_xact_id"]} and isinstance(value, str):
            try:
                return {"op": "literal", "value": xact_number(value)}
            except ValueError:
                raise QueryError(f"_xact_id: {value!r} is not a transaction id") from None
        if other == _CREATED and times:
            try:
                return {"op": "literal", "value": time_key(value)}
            except (TypeError, ValueError):
                raise QueryError(f"{where}: created compares with ISO-8601 times, not {value!r}") from None
        return node

    def _compare(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        op = node["op"]
        left, right = node.get("left"), node.get("right")
        if op in ("eq", "ne") and isinstance(right, dict) and right.get("op") == "literal" and right.get("value") is None:  # fmt: skip
            left_sql = self.expr(left, f"{where}.left", aggregate=aggregate)
            return f"({left_sql} IS {'NOT ' if op == 'ne' else ''}NULL)"
        if op in ("eq", "ne") and (_composite(right) or _composite(left)):
            return self._json_equal(node, where)
        if left == _PAGINATION_KEY and (seq := _own_seq(right)) is not None:
            return f"({self.alias}.seq {_COMPARE_SQL[op]} {self.bind(seq)})"  # keyset paging on the index
        if right == _PAGINATION_KEY and (seq := _own_seq(left)) is not None:
            return f"({self.bind(seq)} {_COMPARE_SQL[op]} {self.alias}.seq)"
        left_sql, right_sql = self._operands(node, where, aggregate)
        return f"({left_sql} {_COMPARE_SQL[op]} {right_sql})"

    def _json_equal(self, node: dict[str, Any], where: str) -> str:
        """``field = [..]`` or ``{..}``: the field's JSON value equals the literal, as JSON
        (object keys in any order, ``true`` not ``1``), as the SDKs' span filters send it."""
        left, right = node.get("left"), node.get("right")
        side, target, literal = ("left", left, right) if _composite(right) else ("right", right, left)
        assert isinstance(literal, dict)
        if not (isinstance(target, dict) and target.get("op") == "ident"):
            raise QueryError(f"{where}.{side}: a list or object compares only with a field")
        value = self.expr(target, f"{where}.{side}", as_json=True)
        equal = f"bt_json_equal({value}, {self.bind(jsonvalues.dumps(literal['value']).decode())})"
        return equal if node["op"] == "eq" else f"(NOT {equal})"

    def _arith(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        left_sql, right_sql = self._operands(node, where, aggregate)
        return f"({left_sql} {_ARITH_SQL[node['op']]} {right_sql})"

    def _like(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        left_sql, right_sql = self._operands(node, where, aggregate, times=False)  # a pattern is text
        return f"bt_like({left_sql}, {right_sql}, {int(node['op'] == 'ilike')})"

    def _includes(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        left, right = node.get("left"), node.get("right")
        if left is None or right is None:
            raise QueryError(f"{where}: includes needs 'left' and 'right'")
        if not (isinstance(left, dict) and left.get("op") == "ident"):
            return f"(instr({self.expr(left, where + '.left')}, {self.expr(right, where + '.right')}) > 0)"
        path = json_path(_ident_path(left, f"{where}.left"), f"{where}.left")
        d = f"{self.alias}.data"
        # parameters are bound in the order they appear in the SQL text
        sql = f"(CASE json_type({d}, {self.bind(path)})"
        sql += f" WHEN 'array' THEN EXISTS (SELECT 1 FROM json_each({d}, {self.bind(path)})"
        sql += f" WHERE value = {self.expr(right, where + '.right')})"
        sql += f" WHEN 'text' THEN instr(json_extract({d}, {self.bind(path)}), {self.expr(right, where + '.right')}) > 0"
        return sql + " ELSE 0 END)"

    def _in(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        right = node.get("right")
        if (
            not isinstance(right, dict)
            or right.get("op") != "literal"
            or not isinstance(right.get("value"), list)
        ):
            raise QueryError(f"{where}.right: 'in' needs a list literal")
        left_sql = self.expr(node.get("left"), f"{where}.left", aggregate=aggregate)
        values = [
            self._coerce({"op": "literal", "value": v}, node.get("left"), f"{where}.right")["value"]
            for v in right["value"]
        ]
        if not values:
            return "0"
        return f"({left_sql} IN ({', '.join(self.bind(v) for v in values)}))"

    def _boolean(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        children = node.get("children")
        if children is None and "left" in node and "right" in node:
            children = [node["left"], node["right"]]
        if not isinstance(children, list) or not children:
            raise QueryError(f"{where}: {node['op']} needs 'children' (or 'left' and 'right')")
        joiner = " AND " if node["op"] == "and" else " OR "
        parts = [self.expr(c, f"{where}.children[{i}]", aggregate=aggregate) for i, c in enumerate(children)]
        return "(" + joiner.join(parts) + ")"

    def _unary(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        if "expr" not in node:
            raise QueryError(f"{where}: {node['op']} needs 'expr'")
        inner = self.expr(node["expr"], f"{where}.expr", aggregate=aggregate)
        return {
            "not": f"(NOT {inner})",
            "neg": f"(-{inner})",
            "isnull": f"({inner} IS NULL)",
            "isnotnull": f"({inner} IS NOT NULL)",
        }[node["op"]]

    def _if(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        conds = node.get("conds")
        if not isinstance(conds, list) or not conds:
            raise QueryError(f"{where}: if needs a non-empty 'conds' list")
        parts = []
        for i, c in enumerate(conds):
            if not isinstance(c, dict) or "cond" not in c or "then" not in c:
                raise QueryError(f"{where}.conds[{i}]: expected {{'cond': ..., 'then': ...}}")
            cond = self.expr(c["cond"], f"{where}.conds[{i}].cond", aggregate=aggregate)
            then = self.expr(c["then"], f"{where}.conds[{i}].then", as_json=as_json, aggregate=aggregate)
            parts.append(f"WHEN {cond} THEN {then}")
        otherwise = node.get("else")
        tail = "" if otherwise is None else f" ELSE {self.expr(otherwise, where + '.else', as_json=as_json, aggregate=aggregate)}"  # fmt: skip
        return f"(CASE {' '.join(parts)}{tail} END)"

    def _function(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        name_path = _ident_path(node.get("name"), f"{where}.name")
        name = str(name_path[0]).lower() if len(name_path) == 1 else ".".join(map(str, name_path))
        args = node.get("args") or []
        if not isinstance(args, list):
            raise QueryError(f"{where}.args: expected a list")
        if name not in FUNCTION_ARITY:
            raise QueryError(f"{where}: unknown function {name!r}")
        lo, hi = FUNCTION_ARITY[name]
        if len(args) < lo or (hi is not None and len(args) > hi):
            wanted = str(lo) if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            raise QueryError(f"{where}: {name} takes {wanted} argument(s), got {len(args)}")
        if name in AGGREGATE_FUNCTIONS:
            if not aggregate:
                raise QueryError(f"{where}: aggregate function {name!r} is only allowed in measures")
            return self._aggregate(name, args[0], where)
        compiled = [self.expr(a, f"{where}.args[{i}]", aggregate=aggregate) for i, a in enumerate(args)]
        return f"{name}({', '.join(compiled)})"  # every listed scalar function has SQLite's name

    def _aggregate(self, name: str, arg: Any, where: str) -> str:
        if not isinstance(arg, dict):
            raise QueryError(f"{where}.args[0]: expected an expression object with an 'op'")
        if name == "count" and (arg.get("op") == "star" or (arg.get("op") == "literal" and arg.get("value") is not None)):  # fmt: skip
            return "count(*)"
        inner = self.expr(arg, f"{where}.args[0]")
        if name in ("min", "max") and arg == {"op": "ident", "name": ["_xact_id"]}:
            return f"CAST({name}({inner}) AS TEXT)"  # versions travel as decimal strings
        if name in ("min", "max") and arg == _CREATED:
            return canonical_from_key_sql(f"{name}({inner})")  # the time key back to its spelling
        return f"{name}({inner})"


def _own_seq(node: Any) -> int | None:
    """The seq behind a ``_pagination_key`` literal this server wrote, else None (other
    texts compare as text)."""
    if isinstance(node, dict) and node.get("op") == "literal" and isinstance(node.get("value"), str):
        found = _OWN_PAGINATION_KEY.fullmatch(node["value"])
        if found:
            return int(found.group(1))
    return None


# -- whole queries --------------------------------------------------------------------------


@dataclass(frozen=True)
class Visibility:
    """Which row versions a query sees: those of ``source`` visible at ``version``, each read
    counted by ``bt_scan`` when ``counted`` (see ``scanlimit.py``)."""

    source: Source
    version: int
    counted: bool = False

    def sql(
        self, alias: str, params: list[Any], in_seq_order: bool = False, seqs: SeqRange | None = None
    ) -> str:
        """Latest version per id at ``version``, not deleted. The scan counter comes right
        after the terms the indexes answer, so every row the scan reads is counted.

        ``in_seq_order``: the rows are read in seq order up to a limit, so the version bound
        is kept from the planner (``+``): without statistics it would rather range over
        ``rows_visible`` and sort the whole object than walk ``rows_seq`` and stop after
        the page. ``seqs``: the tightest seq bounds the query's terms imply, given to the index
        as one range (SQLite ranges over the first bound of each side it finds)."""
        params.extend([self.source.object_type, *self.source.object_ids])
        marks = ",".join("?" * len(self.source.object_ids))
        a = alias
        ranged = ""
        if seqs is not None and seqs.after is not None:
            ranged += f" AND {a}.seq > ?"
            params.append(seqs.after)
        if seqs is not None and seqs.until is not None:
            ranged += f" AND {a}.seq <= ?"
            params.append(seqs.until)
        params.extend([self.version, self.version])
        counter = f" AND {SCAN_FUNCTION}({a}.seq)" if self.counted else ""
        bound = f"+{a}.xact_id" if in_seq_order else f"{a}.xact_id"
        return (
            f"{a}.object_type = ? AND {a}.object_id IN ({marks}){ranged}{counter} AND {bound} <= ?"
            f" AND {a}.deleted = 0 AND ({a}.superseded IS NULL OR {a}.superseded > ?)"
        )


@dataclass(frozen=True)
class SeqRange:
    """Seqs a query can read: above ``after``, up to ``until`` (None: unbounded)."""

    after: int | None = None
    until: int | None = None

    def narrowed(self, op: str, seq: int) -> SeqRange:
        """This range with ``seq {op} <seq>`` also holding."""
        if op in ("gt", "ge"):
            after = seq if op == "gt" else seq - 1
            return SeqRange(after if self.after is None else max(self.after, after), self.until)
        if op in ("lt", "le"):
            until = seq if op == "le" else seq - 1
            return SeqRange(self.after, until if self.until is None else min(self.until, until))
        if op == "eq":
            return self.narrowed("ge", seq).narrowed("le", seq)
        return self


#: A comparison read the other way round: ``k < x`` is ``x > k``.
_FLIPPED: Final = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge", "eq": "eq"}


def seq_range(filter_node: Any, cursor: tuple[str, int] | None = None) -> SeqRange:
    """The seqs every row ``filter_node`` matches lies in, from its comparisons of
    ``_pagination_key`` with keys this server wrote among the terms of its top-level ``and``
    (at any nesting), and from a cursor (``ASC``/``DESC``, the seq it continues after)."""
    found = SeqRange()
    stack = [filter_node]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        op = node.get("op")
        if op == "and":
            children = node.get("children")
            stack.extend(children if isinstance(children, list) else [node.get("left"), node.get("right")])
        elif op in _FLIPPED:
            left, right = node.get("left"), node.get("right")
            if left == _PAGINATION_KEY and (seq := _own_seq(right)) is not None:
                found = found.narrowed(op, seq)
            elif right == _PAGINATION_KEY and (seq := _own_seq(left)) is not None:
                found = found.narrowed(_FLIPPED[op], seq)
    if cursor is not None:
        direction, seq = cursor
        found = found.narrowed("gt" if direction == "ASC" else "lt", seq)
    return found


def _named_list(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise QueryError(f"{where}: expected a list of {{'alias': ..., 'expr': ...}}")
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("alias"), str) or "expr" not in item:
            raise QueryError(f"{where}[{i}]: expected {{'alias': <string>, 'expr': <expression>}}")
    return value


def _sql_string(text: str) -> str:
    """A SQL string literal (aliases are inlined so parameter order follows the SQL text)."""
    return "'" + text.replace("'", "''") + "'"


def _json_object(pairs: list[tuple[str, str]]) -> str:
    return "json_object(" + ", ".join(f"{_sql_string(alias)}, {sql}" for alias, sql in pairs) + ")"


@dataclass(frozen=True)
class _Scope:
    """What a query reads: ``rows``, or the ``summary`` table built by a WITH prefix whose
    parameters (``head``) are bound before any other."""

    prefix: str
    head: list[Any]
    table: str


def _scope(query: dict[str, Any], seen: Visibility) -> _Scope:
    if seen.source.shape != "summary":
        return _Scope("", [], "rows")
    head: list[Any] = []
    filter_node = query.get("filter")
    trace_filter = None
    if filter_node is not None:

        def trace_filter() -> str:
            return _Compiler("m", head).expr(filter_node, "query.filter")

    prefix = summary_cte(lambda alias: seen.sql(alias, head), trace_filter)
    return _Scope(prefix, head, "summary")


def _where_clause(query: dict[str, Any], seen: Visibility, c: _Compiler, in_seq_order: bool = False, cursor: tuple[str, int] | None = None) -> str:  # fmt: skip
    """Visibility plus the filter; for ``traces`` the filter picks whole traces (for
    ``summary`` both live in the summary table's definition). ``cursor``: the direction and
    the seq a page continues after."""
    if seen.source.shape == "summary":
        return "1"
    filter_node = query.get("filter")
    # Spans only: a traces filter picks traces, whose other rows may lie anywhere.
    seqs = seq_range(filter_node, cursor) if seen.source.shape == "spans" else None
    # A lookup by id is best served by the id index, whatever the order (see Visibility.sql).
    visible = seen.sql("r", c.params, in_seq_order and not _looks_up_ids(filter_node), seqs)
    if filter_node is None:
        return visible
    if seen.source.shape == "traces":
        inner = _Compiler("m", c.params)
        m_visible = seen.sql("m", c.params)
        m_filter = inner.expr(filter_node, "query.filter")
        return (
            f"{visible} AND r.root_span_id IN (SELECT m.root_span_id FROM rows m"
            f" WHERE {m_visible} AND {m_filter})"
        )
    return f"{visible} AND {c.expr(filter_node, 'query.filter')}"


def _looks_up_ids(node: Any) -> bool:
    """Whether a filter pins ``id`` to given values (``id = x``, ``id in [...]``, or such a
    term among the children of an ``and``)."""
    if not isinstance(node, dict):
        return False
    if node.get("op") == "and":
        children = node.get("children") or [node.get("left"), node.get("right")]
        return isinstance(children, list) and any(_looks_up_ids(child) for child in children)
    return node.get("op") in ("eq", "in") and {"op": "ident", "name": ["id"]} in (node.get("left"), node.get("right"))  # fmt: skip


def compile_query(query: dict[str, Any], seen: Visibility, after_seq: int | None, limit: int) -> Compiled:
    """SQL for one page of ``query``, continuing after the row ``after_seq`` of a cursor."""
    scope = _scope(query, seen)
    c = _Compiler("r")
    if "measures" in query or "dimensions" in query:
        return _compile_aggregate(query, seen, limit, scope, c)
    select = query.get("select", [{"op": "star"}])
    columns: tuple[str, ...] | None
    items: list[dict[str, Any]] = []
    if select == [{"op": "star"}]:
        payload, columns = "CAST(r.data AS BLOB)", None
    else:
        items = _named_list(select, "query.select")
        pairs = [(i["alias"], c.expr(i["expr"], f"query.select[{n}].expr", as_json=True)) for n, i in enumerate(items)]  # fmt: skip
        payload, columns = f"CAST({_json_object(pairs)} AS BLOB)", tuple(a for a, _ in pairs)
    direction = paging_direction(query.get("sort"))
    cursor = (direction, after_seq) if direction is not None and after_seq is not None else None
    where = _where_clause(query, seen, c, in_seq_order=direction is not None, cursor=cursor)
    if direction is None:
        order = _order_by(query["sort"], items, c)
    else:
        order = f"r.seq {direction}"
        if after_seq is not None:
            where += f" AND r.seq {'>' if direction == 'ASC' else '<'} {c.bind(after_seq)}"
    sql = f"{scope.prefix}SELECT r.seq, {payload} FROM {scope.table} r WHERE {where} ORDER BY {order} LIMIT {c.bind(limit)}"  # fmt: skip
    return Compiled(sql, scope.head + c.params, paged=direction is not None, columns=columns)


def paging_direction(sort: Any) -> str | None:
    """``ASC`` or ``DESC`` when a query reads in the write order a cursor continues (no sort,
    or a sort on ``_pagination_key`` alone, as ``bt sync`` sends); None for any other sort."""
    if sort is None:
        return "ASC"
    items = _sort_items(sort)
    if len(items) == 1 and items[0][0] == _PAGINATION_KEY:
        return items[0][1]
    return None


def _sort_items(sort: Any) -> list[tuple[Any, str]]:
    """``(expression, ASC|DESC)`` pairs of a ``sort`` list, checked."""
    if not isinstance(sort, list):
        raise QueryError("query.sort: expected a list of {'expr': ..., 'dir': 'asc'|'desc'}")
    items = []
    for i, item in enumerate(sort):
        if not isinstance(item, dict) or "expr" not in item or item.get("dir", "asc") not in ("asc", "desc"):
            raise QueryError(f"query.sort[{i}]: expected {{'expr': <expression>, 'dir': 'asc'|'desc'}}")
        items.append((item["expr"], item.get("dir", "asc").upper()))
    return items


def _order_by(sort: Any, selected: list[dict[str, Any]], c: _Compiler) -> str:
    """ORDER BY terms; a bare name that is a select alias sorts by that column (as in SQL)."""
    aliases = {item["alias"]: item["expr"] for item in selected}
    terms = []
    for i, (expr, direction) in enumerate(_sort_items(sort)):
        name = expr.get("name") if isinstance(expr, dict) and expr.get("op") == "ident" else None
        if isinstance(name, list) and len(name) == 1 and name[0] in aliases:
            expr = aliases[name[0]]
        sql = "r.seq" if expr == _PAGINATION_KEY else c.expr(expr, f"query.sort[{i}].expr")
        terms.append(f"{sql} {direction}")
    return ", ".join([*terms, "r.seq"])


def _aggregate_order(sort: Any, outputs: list[tuple[dict[str, Any], str]]) -> list[str]:
    """ORDER BY terms of an aggregate query: each sort key must name one of its output
    columns, by alias or by repeating its expression (the rows no longer exist)."""
    terms = []
    for i, (expr, direction) in enumerate(_sort_items(sort)):
        found = None
        for item, column in outputs:
            is_alias = expr == {"op": "ident", "name": [item["alias"]]}
            if is_alias or expr == item["expr"]:
                found = column
                break
        if found is None:
            raise QueryError(
                f"query.sort[{i}]: an aggregate query sorts by one of its dimensions or measures"
                f" ({', '.join(item['alias'] for item, _ in outputs)})"
            )
        terms.append(f"{found} {direction}")
    return terms


def _compile_aggregate(query: dict[str, Any], seen: Visibility, limit: int, scope: _Scope, c: _Compiler) -> Compiled:  # fmt: skip
    if "select" in query:
        raise QueryError("query: use either select or dimensions/measures, not both")
    dims = _named_list(query.get("dimensions", []), "query.dimensions")
    measures = _named_list(query.get("measures", []), "query.measures")
    inner_cols = []
    for n, d in enumerate(dims):
        inner_cols.append(f"{c.expr(d['expr'], f'query.dimensions[{n}].expr', as_json=True)} AS d{n}")
    for n, m in enumerate(measures):
        inner_cols.append(f"{c.expr(m['expr'], f'query.measures[{n}].expr', aggregate=True)} AS m{n}")
    where = _where_clause(query, seen, c)
    dim_cols = [f"d{n}" for n in range(len(dims))]
    group = f" GROUP BY {', '.join(dim_cols)}" if dims else ""
    inner = f"SELECT {', '.join(inner_cols)} FROM {scope.table} r WHERE {where}{group}"
    pairs = [(d["alias"], f"json(d{n})") for n, d in enumerate(dims)] + [
        (m["alias"], f"m{n}") for n, m in enumerate(measures)
    ]
    outputs = [*zip(dims, dim_cols, strict=True), *((m, f"m{n}") for n, m in enumerate(measures))]
    terms = _aggregate_order(query.get("sort") or [], outputs) + dim_cols
    order = f" ORDER BY {', '.join(terms)}" if terms else ""
    sql = f"{scope.prefix}SELECT 0, CAST({_json_object(pairs)} AS BLOB) FROM ({inner}){order} LIMIT {c.bind(limit)}"  # fmt: skip
    return Compiled(sql, scope.head + c.params, paged=False, columns=tuple(a for a, _ in pairs))


def compile_history(source: Source, version: int, before: tuple[int, str] | None, traces: int) -> Compiled:
    """The legacy fetch: every stored version of the rows live at ``version``, newest first.

    The spec pages it by ``(_xact_id, root_span_id)``, from latest to earliest, and its
    ``limit`` counts traces: a page holds every row version of ``traces`` such pairs (a
    trace written in one request is one pair; one written over several requests is read
    back one transaction at a time, as the spec's history walk does), continuing below
    ``before``. The rows come back as ``(seq, json, xact_id, root_span_id, id)``."""
    params: list[Any] = []
    live = Visibility(source, version).sql("v", params)
    marks = ",".join("?" * len(source.object_ids))
    params.extend([source.object_type, *source.object_ids, version])
    where = (
        f"r.id IN (SELECT v.id FROM rows v WHERE {live}) AND r.object_type = ? AND r.object_id IN ({marks})"
        " AND r.xact_id <= ? AND r.deleted = 0"
    )
    if before is not None:
        where += " AND (r.xact_id, r.root_span_id) < (?, ?)"
        params.extend(before)
    params.append(traces)
    sql = (
        f"WITH history AS (SELECT r.seq, r.xact_id, r.root_span_id, r.data, r.id FROM rows r WHERE {where}),"
        " page AS (SELECT DISTINCT xact_id, root_span_id FROM history"
        " ORDER BY xact_id DESC, root_span_id DESC LIMIT ?)"
        " SELECT h.seq, CAST(h.data AS BLOB), h.xact_id, h.root_span_id, h.id FROM history h"
        " JOIN page p ON p.xact_id = h.xact_id AND p.root_span_id = h.root_span_id"
        " ORDER BY h.xact_id DESC, h.root_span_id DESC, h.seq DESC"
    )
    return Compiled(sql, params, paged=True, columns=None)
