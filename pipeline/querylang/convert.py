"""sqlglot expression trees -> the parsed expression form of ``querylang.ast``.

Only what the query form can express is accepted; anything else sqlglot understands
(casts, subqueries, window functions, ``IS TRUE``, ...) is refused with a message naming
the construct, so a query never silently means something other than what was written.
Parentheses carry no node of their own, except that they stop ``a AND (b AND c)`` from
being flattened into one ``and`` and ``-(1)`` from being folded into the literal ``-1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sqlglot import exp

from pipeline.querylang.ast import FUNCTION_ARITY, Expr, binary, function, ident, literal
from pipeline.querylang.syntax import Includes, QuerySyntaxError

_BINARY_OPS: dict[type[exp.Expr], str] = {
    exp.EQ: "eq",
    exp.NEQ: "ne",
    exp.LT: "lt",
    exp.LTE: "le",
    exp.GT: "gt",
    exp.GTE: "ge",
    exp.Like: "like",
    exp.ILike: "ilike",
    Includes: "includes",
    exp.Add: "add",
    exp.Sub: "sub",
    exp.Mul: "mul",
    exp.Div: "div",
    exp.Mod: "mod",
}
_CONNECTORS: dict[type[exp.Expr], str] = {exp.And: "and", exp.Or: "or"}


def to_expr(node: exp.Expr) -> Expr:
    """The query-form expression for one sqlglot expression."""
    converter = _CONVERTERS.get(type(node))
    if converter is None:
        raise unsupported(node)
    return converter(node)


def unsupported(node: exp.Expr) -> QuerySyntaxError:
    try:
        text = node.sql()
    except Exception:  # a node the SQL generator cannot print: name its kind instead
        text = node.key
    return QuerySyntaxError(f"unsupported syntax {text!r}{_where(node)}")


def _where(node: exp.Expr) -> str:
    """`` at line L, column C`` of the construct's first token, when sqlglot recorded it."""
    located = [n.meta for n in node.walk() if n.meta.get("start") is not None and n.meta.get("col")]
    if not located:
        return ""
    first = min(located, key=lambda meta: meta["start"])
    # sqlglot records the column of a token's last character.
    return f" at line {first['line']}, column {first['col'] - (first['end'] - first['start'])}"


def ident_path(node: exp.Expr) -> list[str]:
    """The parts of a dotted name (``a.b."c d"``), whatever sqlglot nested them as."""
    if isinstance(node, exp.Column):
        parts = node.parts
    elif isinstance(node, exp.Dot):
        return [*ident_path(node.this), *ident_path(node.expression)]
    elif isinstance(node, exp.Identifier):
        parts = [node]
    else:
        raise unsupported(node)
    if not all(isinstance(p, exp.Identifier) for p in parts):
        raise unsupported(node)
    return [p.name for p in parts]


def number(text: str) -> int | float:
    """A numeric literal's value: int unless written with a fraction or exponent. One beyond a
    double's range is refused: it would become infinity, which JSON writes as null."""
    if any(c in text for c in ".eE"):
        value = float(text)
        if not math.isfinite(value):
            raise QuerySyntaxError(f"the number {text} is beyond the range of a 64-bit float")
        return value
    return int(text)


def _literal(node: exp.Literal) -> Expr:
    return literal(node.this if node.is_string else number(node.this))


def _neg(node: exp.Neg) -> Expr:
    inner = node.this
    if isinstance(inner, exp.Literal) and not inner.is_string:
        return literal(-number(inner.this))
    return {"op": "neg", "expr": to_expr(inner)}


def _binary(node: exp.Expr) -> Expr:
    op = _BINARY_OPS[type(node)]
    expr = binary(op, to_expr(node.this), to_expr(node.expression))
    return {"op": "not", "expr": expr} if node.args.get("negate") else expr


def _connector(node: exp.Expr) -> Expr:
    """``a AND b AND c`` is one node with three children; parenthesized groups stay apart."""
    kind = type(node)
    operands: list[exp.Expr] = []
    pending = [node]
    while pending:
        current = pending.pop()
        if type(current) is kind:
            pending.extend([current.expression, current.this])
        else:
            operands.append(current)
    return {"op": _CONNECTORS[kind], "children": [to_expr(o) for o in operands]}


def _not(node: exp.Not) -> Expr:
    inner = node.this
    if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
        return {"op": "isnotnull", "expr": to_expr(inner.this)}
    return {"op": "not", "expr": to_expr(inner)}


def _is(node: exp.Is) -> Expr:
    if not isinstance(node.expression, exp.Null):
        raise unsupported(node)
    return {"op": "isnull", "expr": to_expr(node.this)}


def _in(node: exp.In) -> Expr:
    if any(node.args.get(k) for k in ("query", "unnest", "field")):
        raise unsupported(node)
    values = []
    for item in node.expressions:
        value = to_expr(item)
        if value["op"] != "literal":
            raise QuerySyntaxError(f"IN list must hold only literal values, not {item.sql()!r}")
        values.append(value["value"])
    return binary("in", to_expr(node.this), literal(values))


def _case(node: exp.Case) -> Expr:
    subject = node.this
    conds = []
    for branch in node.args.get("ifs") or []:
        cond = to_expr(branch.this)
        if subject is not None:
            cond = binary("eq", to_expr(subject), cond)
        conds.append({"cond": cond, "then": to_expr(branch.args["true"])})
    default = node.args.get("default")
    return {"op": "if", "conds": conds, "else": to_expr(default) if default is not None else literal(None)}


def _call(node: exp.Anonymous) -> Expr:
    name = str(node.this).lower()
    args = node.expressions
    if name == "includes":
        if len(args) != 2:
            raise QuerySyntaxError(f"function 'includes' takes 2 arguments, got {len(args)}")
        return binary("includes", to_expr(args[0]), to_expr(args[1]))
    arity = FUNCTION_ARITY.get(name)
    if arity is None:
        raise QuerySyntaxError(f"unknown function {name!r}{_where(node)}")
    low, high = arity
    if len(args) < low or (high is not None and len(args) > high):
        wanted = str(low) if low == high else f"{low} or more" if high is None else f"{low} to {high}"
        raise QuerySyntaxError(f"function {name!r} takes {wanted} argument(s), got {len(args)}")
    converted = []
    for arg in args:
        if isinstance(arg, exp.Star):
            if name != "count":
                raise QuerySyntaxError(f"'*' is only allowed in count(*), not in {name}()")
            converted.append({"op": "star"})
        else:
            converted.append(to_expr(arg))
    return function(name, *converted)


_CONVERTERS: dict[type[exp.Expr], Callable[[Any], Expr]] = {
    exp.Paren: lambda node: to_expr(node.this),
    exp.Column: lambda node: ident(*ident_path(node)),
    exp.Dot: lambda node: ident(*ident_path(node)),
    exp.Identifier: lambda node: ident(node.name),
    exp.Literal: _literal,
    exp.Boolean: lambda node: literal(bool(node.this)),
    exp.Null: lambda node: literal(None),
    exp.Neg: _neg,
    exp.Not: _not,
    exp.Is: _is,
    exp.In: _in,
    exp.Case: _case,
    exp.Anonymous: _call,
    **{kind: _binary for kind in _BINARY_OPS},
    **{kind: _connector for kind in _CONNECTORS},
}
