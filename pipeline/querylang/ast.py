"""The parsed query form: what SDKs send to ``POST /btql`` and what every query becomes.

Text queries (BTQL clauses or SQL) are parsed into this form by ``querylang.parse``; the
export pager builds it directly with the helpers below (user values only ever travel as
``literal`` nodes, never pasted into query text); the emulator compiles it to SQLite.

Query object (plain JSON-compatible dicts)::

    {
      "from": {"op": "function", "name": {"op": "ident", "name": ["project_logs"]},
               "args": [{"op": "literal", "value": "<object id>"}, ...],
               "shape": "spans" | "traces" | "summary"},         # shape optional, default spans
      "select": [{"op": "star"}] | [{"alias": "name", "expr": EXPR}, ...],
      "filter": EXPR,                                            # optional
      "sort": [{"expr": EXPR, "dir": "asc" | "desc"}],           # optional
      "dimensions": [{"alias": "name", "expr": EXPR}, ...],      # optional (group by)
      "measures": [{"alias": "name", "expr": EXPR}, ...],        # optional (aggregates)
      "limit": 1000,                                             # optional
      "cursor": "<opaque>"                                       # optional
    }

Expressions (EXPR)::

    {"op": "literal", "value": V}                  V: null, bool, number, string, or a list (for in)
    {"op": "ident", "name": ["metadata", "orgName"]}
    {"op": "star"}                                 only inside count(*)
    {"op": OP, "left": EXPR, "right": EXPR}        OP: eq ne lt le gt ge like ilike includes in
                                                       add sub mul div mod
    {"op": "and" | "or", "children": [EXPR, ...]}  (readers also accept "left"/"right")
    {"op": "not" | "isnull" | "isnotnull" | "neg", "expr": EXPR}
    {"op": "function", "name": {"op": "ident", "name": ["count"]}, "args": [EXPR, ...]}
    {"op": "if", "conds": [{"cond": EXPR, "then": EXPR}, ...], "else": EXPR}
"""

from __future__ import annotations

from typing import Any, Final, Literal

Expr = dict[str, Any]
Query = dict[str, Any]

ARITHMETIC_OPS = frozenset({"add", "sub", "mul", "div", "mod"})
SHAPES = ("spans", "traces", "summary")

#: The objects whose rows a query reads (the ``from`` functions); every module that names an
#: object type uses these two, the emulator included.
ObjectType = Literal["project_logs", "dataset", "experiment"]
OBJECT_TYPES: Final[tuple[ObjectType, ...]] = ("project_logs", "dataset", "experiment")
MAX_LIMIT = 1000


def ident(*path: str) -> Expr:
    return {"op": "ident", "name": list(path)}


def literal(value: Any) -> Expr:
    return {"op": "literal", "value": value}


def binary(op: str, left: Expr, right: Expr) -> Expr:
    return {"op": op, "left": left, "right": right}


def all_of(*children: Expr | None) -> Expr | None:
    """AND of the given expressions, dropping ``None``; ``None`` when nothing is left."""
    kept = [c for c in children if c is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else {"op": "and", "children": kept}


def function(name: str, *args: Expr) -> Expr:
    return {"op": "function", "name": ident(name), "args": list(args)}


def from_object(object_type: str, *object_ids: str, shape: str = "spans") -> dict[str, Any]:
    node: dict[str, Any] = {
        "op": "function",
        "name": ident(object_type),
        "args": [literal(i) for i in object_ids],
    }
    if shape != "spans":
        node["shape"] = shape
    return node


# Functions a query may call, with their (min, max) argument counts (max ``None``: any).
# ``includes(a, b)`` is not listed: it is read as the ``includes`` operator.
AGGREGATE_FUNCTIONS = frozenset({"count", "sum", "avg", "min", "max"})
FUNCTION_ARITY: dict[str, tuple[int, int | None]] = {
    "count": (1, 1),
    "sum": (1, 1),
    "avg": (1, 1),
    "min": (1, 1),
    "max": (1, 1),
    "coalesce": (1, None),
    "lower": (1, 1),
    "upper": (1, 1),
    "length": (1, 1),
    "abs": (1, 1),
}
