"""Parsed expressions -> BTQL text, for manifests and messages.

The text is built so that ``parse_expression(to_text(e)) == e``: string literals double
their quotes (``'it''s'``), identifier parts are double-quoted unless the tokenizer reads
them back as one plain name, and an operand is parenthesized whenever the parser would
otherwise group it differently. User values therefore can never change the expression's
shape, whatever quotes or backslashes they contain.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from sqlglot import exp
from sqlglot.tokens import TokenType

from pipeline.querylang.ast import Expr
from pipeline.querylang.syntax import QuerySyntaxError, parse_condition, tokenize

# Binding strength, loosest first, mirroring how the parser nests operators.
_OR, _AND, _NOT, _EQUALITY, _COMPARISON, _RANGE, _TERM, _FACTOR, _UNARY, _ATOM = range(10)

_INFIX: dict[str, tuple[str, int]] = {
    "eq": ("=", _EQUALITY),
    "ne": ("!=", _EQUALITY),
    "lt": ("<", _COMPARISON),
    "le": ("<=", _COMPARISON),
    "gt": (">", _COMPARISON),
    "ge": (">=", _COMPARISON),
    "like": ("LIKE", _RANGE),
    "ilike": ("ILIKE", _RANGE),
    "includes": ("INCLUDES", _RANGE),
    "in": ("IN", _RANGE),
    "add": ("+", _TERM),
    "sub": ("-", _TERM),
    "mul": ("*", _FACTOR),
    "div": ("/", _FACTOR),
    "mod": ("%", _FACTOR),
}
_POSTFIX = {"isnull": "IS NULL", "isnotnull": "IS NOT NULL"}


def to_text(expr: Expr) -> str:
    """BTQL text for ``expr``; raises ValueError for a node the text syntax cannot hold."""
    return _render(expr)[0]


def _render(expr: Expr) -> tuple[str, int]:
    """The text of ``expr`` and how strongly it binds."""
    op = expr.get("op")
    if op in _INFIX:
        return _infix(expr)
    handler = _HANDLERS.get(op)  # type: ignore[arg-type]
    if handler is None:
        raise ValueError(f"cannot render expression node {op!r}")
    return handler(expr)


def _operand(expr: Expr, parent: int, strict: bool) -> str:
    """An operand's text, parenthesized if it binds looser than (or, when ``strict``, as
    loosely as) its parent."""
    text, level = _render(expr)
    return f"({text})" if level < parent or (strict and level == parent) else text


def _infix(expr: Expr) -> tuple[str, int]:
    symbol, level = _INFIX[expr["op"]]
    left = _operand(expr["left"], level, strict=False)
    in_list = expr["op"] == "in"
    right = _in_list(expr["right"]) if in_list else _operand(expr["right"], level, strict=True)
    return f"{left} {symbol} {right}", level


def _in_list(expr: Expr) -> str:
    values = expr.get("value") if expr.get("op") == "literal" else None
    if not isinstance(values, list):
        raise ValueError("the right side of 'in' must be a literal list")
    return "(" + ", ".join(_scalar(v) for v in values) + ")"


def _connector(expr: Expr) -> tuple[str, int]:
    level = _OR if expr["op"] == "or" else _AND
    children = expr.get("children")
    if children is None:
        children = [expr["left"], expr["right"]]
    if len(children) < 2:
        raise ValueError(f"'{expr['op']}' needs at least two children")
    joiner = " OR " if level == _OR else " AND "
    return joiner.join(_operand(c, level, strict=True) for c in children), level


def _not(expr: Expr) -> tuple[str, int]:
    return "NOT " + _operand(expr["expr"], _NOT, strict=True), _NOT


def _postfix(expr: Expr) -> tuple[str, int]:
    # The operand of IS [NOT] NULL is kept to arithmetic or tighter, so that
    # ``NOT (x IS NULL)`` and ``x IS NOT NULL`` stay distinct.
    return f"{_operand(expr['expr'], _TERM, strict=False)} {_POSTFIX[expr['op']]}", _NOT


def _neg(expr: Expr) -> tuple[str, int]:
    inner = expr["expr"]
    text, level = _render(inner)
    # A bare number would be read back as a negative literal, and "--" opens a comment.
    if level < _ATOM or inner.get("op") == "literal":
        text = f"({text})"
    return f"-{text}", _UNARY


def _literal(expr: Expr) -> tuple[str, int]:
    value = expr.get("value")
    if isinstance(value, list):
        raise ValueError("a literal list can only appear on the right of 'in'")
    return _scalar(value), _ATOM


def _scalar(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write the number {value!r} as a literal")
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise ValueError(f"cannot write a {type(value).__name__} as a literal")


def quote_name(part: str) -> str:
    """An identifier part as written in a query: bare if it reads back as itself."""
    return part if _is_plain_name(part) else '"' + part.replace('"', '""') + '"'


@functools.lru_cache(maxsize=4096)
def _is_plain_name(part: str) -> bool:
    """Whether ``part`` alone parses as the column ``part`` (not a keyword, number, call...)."""
    try:
        tokens = tokenize(part)
        if len(tokens) != 1 or tokens[0].token_type != TokenType.VAR or tokens[0].text != part:
            return False
        node = parse_condition(tokens, part)
    except QuerySyntaxError:
        return False
    return isinstance(node, exp.Column) and len(node.parts) == 1 and node.name == part


def _ident(expr: Expr) -> tuple[str, int]:
    name = expr["name"]
    if not name:
        raise ValueError("an identifier needs at least one name part")
    return ".".join(quote_name(p) for p in name), _ATOM


def _function(expr: Expr) -> tuple[str, int]:
    name = expr["name"]["name"]
    if len(name) != 1:
        raise ValueError(f"function name must be one word, not {name!r}")
    args = ", ".join(to_text(a) for a in expr.get("args", []))
    return f"{name[0]}({args})", _ATOM


def _star(expr: Expr) -> tuple[str, int]:
    return "*", _ATOM


def _if(expr: Expr) -> tuple[str, int]:
    if not expr["conds"]:
        raise ValueError("'if' needs at least one condition")
    branches = " ".join(f"WHEN {to_text(c['cond'])} THEN {to_text(c['then'])}" for c in expr["conds"])
    default = expr.get("else") or {"op": "literal", "value": None}
    return f"CASE {branches} ELSE {to_text(default)} END", _ATOM


_HANDLERS: dict[str, Callable[[Expr], tuple[str, int]]] = {
    "and": _connector,
    "or": _connector,
    "not": _not,
    "isnull": _postfix,
    "isnotnull": _postfix,
    "neg": _neg,
    "literal": _literal,
    "ident": _ident,
    "function": _function,
    "star": _star,
    "if": _if,
}
