"""Query pieces shared by the BTQL-clause and SQL syntaxes: the source object, select /
dimension / measure items, sort items and the limit.

Both syntaxes parse their pieces with the same sqlglot parser, so each piece is built
from a sqlglot node in exactly one place here.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from pipeline.querylang.ast import AGGREGATE_FUNCTIONS, OBJECT_TYPES, SHAPES, Expr, from_object
from pipeline.querylang.convert import to_expr, unsupported
from pipeline.querylang.render import to_text
from pipeline.querylang.syntax import QuerySyntaxError

Item = dict[str, Any]


def source(node: exp.Expr, shape_word_allowed: bool) -> dict[str, Any]:
    """The ``from`` node for ``project_logs('<id>', ...)``, with its shape.

    The shape is either a ``shape => 'traces'`` argument or, in BTQL, a trailing word
    (``project_logs('<id>') traces``), which sqlglot reads as a table alias.
    """
    call = node.this if isinstance(node, exp.Table) else None
    if not isinstance(call, exp.Anonymous):
        raise QuerySyntaxError(
            f"from must be one of {', '.join(t + '(...)' for t in OBJECT_TYPES)}, not {node.sql()!r}"
        )
    object_type = str(call.this).lower()
    if object_type not in OBJECT_TYPES:
        raise QuerySyntaxError(
            f"unknown object type {str(call.this)!r} (expected one of {', '.join(OBJECT_TYPES)})"
        )
    ids: list[str] = []
    shape: str | None = None
    for arg in call.expressions:
        if isinstance(arg, exp.Kwarg) and arg.this.name.lower() == "shape":
            shape = _shape_value(arg.expression)
        elif isinstance(arg, exp.Literal) and arg.is_string:
            ids.append(arg.this)
        else:
            raise QuerySyntaxError(f"{object_type}() takes quoted object ids, not {arg.sql()!r}")
    if not ids:
        raise QuerySyntaxError(f"{object_type}() needs at least one object id")
    alias = node.args.get("alias")
    if alias is not None:
        if not shape_word_allowed or shape is not None or alias.columns:
            raise QuerySyntaxError(f"unexpected {alias.sql()!r} after {object_type}(...)")
        shape = _check_shape(alias.name)
    for key, value in node.args.items():
        if value and key not in ("this", "alias"):
            raise unsupported(node)
    return from_object(object_type, *ids, shape=shape or "spans")


def _shape_value(node: exp.Expr) -> str:
    if not (isinstance(node, exp.Literal) and node.is_string):
        raise QuerySyntaxError(f"shape must be a quoted word, not {node.sql()!r}")
    return _check_shape(node.this)


def _check_shape(word: str) -> str:
    shape = word.lower()
    if shape not in SHAPES:
        raise QuerySyntaxError(f"unknown shape {word!r} (expected one of {', '.join(SHAPES)})")
    return shape


def is_star(nodes: list[exp.Expr]) -> bool:
    """True for a lone ``*``; a ``*`` mixed with other items is refused."""
    stars = [n for n in nodes if isinstance(n, exp.Star)]
    if stars and len(nodes) > 1:
        raise QuerySyntaxError("'*' cannot be combined with other items")
    return bool(stars)


def items(nodes: list[exp.Expr]) -> list[Item]:
    """``[{"alias", "expr"}]`` for select-like items (``expr [AS alias]``)."""
    result: list[Item] = []
    for node in nodes:
        if isinstance(node, exp.Alias):
            expr = to_expr(node.this)
            alias = node.alias
        else:
            expr = to_expr(node)
            alias = default_alias(expr)
        result.append({"alias": alias, "expr": expr})
    return result


def default_alias(expr: Expr) -> str:
    """The name an unaliased item gets: a field's last name part, else its text."""
    if expr["op"] == "ident":
        return str(expr["name"][-1])
    return to_text(expr)


def sort_items(nodes: list[exp.Expr]) -> list[Item]:
    result = []
    for node in nodes:
        if not isinstance(node, exp.Ordered):
            raise unsupported(node)
        result.append({"expr": to_expr(node.this), "dir": "desc" if node.args.get("desc") else "asc"})
    return result


def limit_value(node: exp.Expr | None) -> int:
    """A limit must be a non-negative whole number."""
    value = to_expr(node) if node is not None else None
    if (
        value is None
        or value["op"] != "literal"
        or not isinstance(value["value"], int)
        or isinstance(value["value"], bool)
        or value["value"] < 0
    ):
        text = node.sql() if node is not None else ""
        raise QuerySyntaxError(f"limit must be a whole number, not {text!r}")
    return int(value["value"])


def has_aggregate(expr: Any) -> bool:
    """Whether an expression calls an aggregate function anywhere inside."""
    if isinstance(expr, dict):
        if expr.get("op") == "function" and expr["name"]["name"][-1] in AGGREGATE_FUNCTIONS:
            return True
        return any(has_aggregate(v) for v in expr.values())
    if isinstance(expr, list):
        return any(has_aggregate(v) for v in expr)
    return False
