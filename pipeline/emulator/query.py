"""Compiling a ``/btql`` query (see ``pipeline.querylang.ast``) into SQLite SQL.

Query text (BTQL clauses or SQL) is parsed by ``querylang.parse`` first, so text and
parsed objects share this one compiler and the function table of ``querylang.ast``.
The input is the query dict plus the pinned version and the cursor position; the output
is SQL and parameters over the ``rows`` table of ``store.py``. Visibility at version V:
per id, the version with the highest ``xact_id <= V``, unless that version is a delete.
Pages of a spans, traces or summary (see ``summary.py``) query are ordered by ``seq`` (the write order behind
``_pagination_key``), so under a pinned version every visible row appears exactly once
however many rows are written meanwhile.

A ``select *`` page selects the stored JSON text as is: no decode/encode per row.
Projections and aggregates build their JSON in SQLite with ``json_object``. Identifiers
are compiled in two modes: *scalar* (``json_extract``, for comparisons, sorting and
aggregate arguments) and *json* (``->``, for values placed in an output row, so objects
and strings keep their JSON types). User values only ever travel as parameters.

Aggregate queries (``dimensions``/``measures``) group by their dimensions and may sort
by any output column (by alias or by repeating its expression); they are never paged.
Errors raise :class:`QueryError` (a 400) naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.emulator.summary import summary_cte
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
_ARITH_SQL: Final = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%"}


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


def encode_cursor(version: int, last_seq: int) -> str:
    """An opaque cursor: the pinned version and the last row's seq."""
    return base64.urlsafe_b64encode(f"{version}:{last_seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """``(version, last_seq)`` of a cursor made by :func:`encode_cursor`."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, last_seq = text.split(":")
        return int(version), int(last_seq)
    except (binascii.Error, UnicodeDecodeError, ValueError):
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


def parse_limit(value: Any, where: str = "limit") -> int:
    if value is None:
        return MAX_LIMIT
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(f"{where}: expected an integer")
    if not 1 <= value <= MAX_LIMIT:
        raise QueryError(f"{where}: {value} is out of range (1 to {MAX_LIMIT}; the page size is capped at {MAX_LIMIT})")  # fmt: skip
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
            raise QueryError(f"{where}: list or object literals are only allowed on the right of 'in'")
        return self.bind(value)

    def _ident(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        name = _ident_path(node, where)
        if as_json:
            return f"({self.alias}.data -> {self.bind(json_path(name, where))})"
        if len(name) == 1 and name[0] in COLUMN_IDENTS:
            return f"{self.alias}.{COLUMN_IDENTS[name[0]]}"
        return f"json_extract({self.alias}.data, {self.bind(json_path(name, where))})"

    def _operands(self, node: dict[str, Any], where: str, aggregate: bool) -> tuple[str, str]:
        left, right = node.get("left"), node.get("right")
        if left is None or right is None:
            raise QueryError(f"{where}: {node['op']} needs 'left' and 'right'")
        left, right = self._coerce_xact(left, right), self._coerce_xact(right, left)
        return (
            self.expr(left, f"{where}.left", aggregate=aggregate),
            self.expr(right, f"{where}.right", aggregate=aggregate),
        )

    @staticmethod
    def _coerce_xact(node: Any, other: Any) -> Any:
        """A literal compared with ``_xact_id`` compares as an integer (it may come as a string)."""
        is_xact = isinstance(other, dict) and other.get("op") == "ident" and other.get("name") == ["_xact_id"]
        if (
            is_xact
            and isinstance(node, dict)
            and node.get("op") == "literal"
            and isinstance(node.get("value"), str)
        ):
            try:
                return {"op": "literal", "value": int(node["value"])}
            except ValueError:
                raise QueryError(f"_xact_id: {node['value']!r} is not a transaction id") from None
        return node

    def _compare(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        op = node["op"]
        right = node.get("right")
        if op in ("eq", "ne") and isinstance(right, dict) and right.get("op") == "literal" and right.get("value") is None:  # fmt: skip
            left = self.expr(node.get("left"), f"{where}.left", aggregate=aggregate)
            return f"({left} IS {'NOT ' if op == 'ne' else ''}NULL)"
        left_sql, right_sql = self._operands(node, where, aggregate)
        return f"({left_sql} {_COMPARE_SQL[op]} {right_sql})"

    def _arith(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        left_sql, right_sql = self._operands(node, where, aggregate)
        return f"({left_sql} {_ARITH_SQL[node['op']]} {right_sql})"

    def _like(self, node: dict[str, Any], where: str, as_json: bool, aggregate: bool) -> str:
        left_sql, right_sql = self._operands(node, where, aggregate)
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
            self._coerce_xact({"op": "literal", "value": v}, node.get("left"))["value"]
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
        return f"{name}({inner})"


# -- whole queries --------------------------------------------------------------------------


def visible_sql(alias: str, source: Source, version: int, params: list[Any]) -> str:
    """Rows of ``source`` visible at ``version`` (latest version per id, not deleted)."""
    params.extend([source.object_type, *source.object_ids, version, version])
    marks = ",".join("?" * len(source.object_ids))
    a = alias
    return (
        f"{a}.object_type = ? AND {a}.object_id IN ({marks}) AND {a}.xact_id <= ? AND {a}.deleted = 0"
        f" AND ({a}.superseded IS NULL OR {a}.superseded > ?)"
    )


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


def _scope(query: dict[str, Any], source: Source, version: int) -> _Scope:
    if source.shape != "summary":
        return _Scope("", [], "rows")
    head: list[Any] = []
    filter_node = query.get("filter")
    trace_filter = None
    if filter_node is not None:

        def trace_filter() -> str:
            return _Compiler("m", head).expr(filter_node, "query.filter")

    prefix = summary_cte(lambda alias: visible_sql(alias, source, version, head), trace_filter)
    return _Scope(prefix, head, "summary")


def _where_clause(query: dict[str, Any], source: Source, version: int, c: _Compiler) -> str:
    """Visibility plus the filter; for ``traces`` the filter picks whole traces (for
    ``summary`` both live in the summary table's definition)."""
    if source.shape == "summary":
        return "1"
    visible = visible_sql("r", source, version, c.params)
    filter_node = query.get("filter")
    if filter_node is None:
        return visible
    if source.shape == "traces":
        inner = _Compiler("m", c.params)
        m_visible = visible_sql("m", source, version, c.params)
        m_filter = inner.expr(filter_node, "query.filter")
        return (
            f"{visible} AND r.root_span_id IN (SELECT m.root_span_id FROM rows m"
            f" WHERE {m_visible} AND {m_filter})"
        )
    return f"{visible} AND {c.expr(filter_node, 'query.filter')}"


def compile_query(query: dict[str, Any], source: Source, version: int, after_seq: int | None, limit: int) -> Compiled:  # fmt: skip
    """SQL for one page of ``query`` at ``version``, continuing after ``after_seq``."""
    scope = _scope(query, source, version)
    c = _Compiler("r")
    if "measures" in query or "dimensions" in query:
        return _compile_aggregate(query, source, version, limit, scope, c)
    select = query.get("select", [{"op": "star"}])
    columns: tuple[str, ...] | None
    items: list[dict[str, Any]] = []
    if select == [{"op": "star"}]:
        payload, columns = "CAST(r.data AS BLOB)", None
    else:
        items = _named_list(select, "query.select")
        pairs = [(i["alias"], c.expr(i["expr"], f"query.select[{n}].expr", as_json=True)) for n, i in enumerate(items)]  # fmt: skip
        payload, columns = f"CAST({_json_object(pairs)} AS BLOB)", tuple(a for a, _ in pairs)
    where = _where_clause(query, source, version, c)
    sort = query.get("sort")
    if sort is not None:
        order = _order_by(sort, items, c)
    else:
        order = "r.seq"
        if after_seq is not None:
            where += f" AND r.seq > {c.bind(after_seq)}"
    sql = f"{scope.prefix}SELECT r.seq, {payload} FROM {scope.table} r WHERE {where} ORDER BY {order} LIMIT {c.bind(limit)}"  # fmt: skip
    return Compiled(sql, scope.head + c.params, paged=sort is None, columns=columns)


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
        if expr == {"op": "ident", "name": ["_pagination_key"]}:
            sql = "r.seq"
        else:
            sql = c.expr(expr, f"query.sort[{i}].expr")
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


def _compile_aggregate(query: dict[str, Any], source: Source, version: int, limit: int, scope: _Scope, c: _Compiler) -> Compiled:  # fmt: skip
    if "select" in query:
        raise QueryError("query: use either select or dimensions/measures, not both")
    dims = _named_list(query.get("dimensions", []), "query.dimensions")
    measures = _named_list(query.get("measures", []), "query.measures")
    inner_cols = []
    for n, d in enumerate(dims):
        inner_cols.append(f"{c.expr(d['expr'], f'query.dimensions[{n}].expr', as_json=True)} AS d{n}")
    for n, m in enumerate(measures):
        inner_cols.append(f"{c.expr(m['expr'], f'query.measures[{n}].expr', aggregate=True)} AS m{n}")
    where = _where_clause(query, source, version, c)
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


def compile_history(source: Source, version: int, before_seq: int | None, limit: int) -> Compiled:
    """The legacy fetch: every stored version of the live rows at ``version``, newest first."""
    params: list[Any] = []
    live = visible_sql("v", source, version, params)
    marks = ",".join("?" * len(source.object_ids))
    params.extend([source.object_type, *source.object_ids, version])
    where = (
        f"r.id IN (SELECT v.id FROM rows v WHERE {live}) AND r.object_type = ? AND r.object_id IN ({marks})"
        " AND r.xact_id <= ? AND r.deleted = 0"
    )
    if before_seq is not None:
        where += " AND r.seq < ?"
        params.append(before_seq)
    params.append(limit)
    sql = f"SELECT r.seq, CAST(r.data AS BLOB) FROM rows r WHERE {where} ORDER BY r.seq DESC LIMIT ?"
    return Compiled(sql, params, paged=True, columns=None)
