"""SQL syntax: ``SELECT ... FROM project_logs('<id>', shape => 'traces') WHERE ... LIMIT n``.

A SELECT maps onto the query form the way the API reads it: with aggregates and no
GROUP BY the items are ``measures``; with GROUP BY the group keys are ``dimensions`` and
the aggregates ``measures``; otherwise the items are ``select``. Clauses the query form
cannot express (JOIN, HAVING, OFFSET, UNION, ...) are refused by name.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.tokens import Token

from pipeline.querylang import parts
from pipeline.querylang.ast import Query
from pipeline.querylang.convert import to_expr
from pipeline.querylang.syntax import QuerySyntaxError, parse_statement

_SUPPORTED_ARGS = frozenset({"expressions", "from", "where", "group", "order", "limit"})
_CLAUSE_NAMES = {"joins": "join", "laterals": "lateral", "windows": "window", "locks": "for update"}


def parse_sql(tokens: list[Token], text: str) -> Query:
    """The query for a SQL SELECT (already tokenized)."""
    node = parse_statement(tokens, text)
    if isinstance(node, exp.SetOperation):
        raise QuerySyntaxError(f"unsupported clause {node.key!r}")
    if not isinstance(node, exp.Select):
        raise QuerySyntaxError("a SQL query must be a single SELECT")
    args = {key.rstrip("_"): value for key, value in node.args.items() if value}
    for key in args:
        if key not in _SUPPORTED_ARGS:
            raise QuerySyntaxError(f"unsupported clause {_CLAUSE_NAMES.get(key, key)!r}")
    if "from" not in args:
        raise QuerySyntaxError("query has no FROM clause")
    query: Query = {"from": parts.source(args["from"].this, shape_word_allowed=False)}
    query.update(_columns(node.expressions, args.get("group")))
    if "where" in args:
        query["filter"] = to_expr(args["where"].this)
    if "order" in args:
        query["sort"] = parts.sort_items(args["order"].expressions)
    if "limit" in args:
        limit = args["limit"]
        if any(v for k, v in limit.args.items() if k != "expression"):
            raise QuerySyntaxError(f"unsupported clause {limit.sql()!r}")
        query["limit"] = parts.limit_value(limit.expression)
    return query


def _columns(nodes: list[exp.Expr], group: exp.Group | None) -> Query:
    """``select``, or ``dimensions`` + ``measures``, from the SELECT list and GROUP BY."""
    if group is not None and any(v for k, v in group.args.items() if k != "expressions"):
        raise QuerySyntaxError(f"unsupported clause {group.sql()!r}")
    if parts.is_star(nodes):
        if group is not None:
            raise QuerySyntaxError("SELECT * cannot be combined with GROUP BY")
        return {"select": [{"op": "star"}]}
    selected = parts.items(nodes)
    aggregated = [item for item in selected if parts.has_aggregate(item["expr"])]
    if group is None and not aggregated:
        return {"select": selected}
    dimensions = [_group_key(key, selected) for key in (group.expressions if group is not None else [])]
    for item in selected:
        if item not in aggregated and item not in dimensions:
            raise QuerySyntaxError(
                f"{item['alias']!r} must be listed in GROUP BY or used inside an aggregate function"
            )
    columns: Query = {}
    if aggregated:
        columns["measures"] = aggregated
    if dimensions:
        columns["dimensions"] = dimensions
    return columns


def _group_key(node: exp.Expr, selected: list[parts.Item]) -> parts.Item:
    """A GROUP BY key as a dimension: a position (``1``), a select alias, or an expression."""
    expr = to_expr(node)
    if expr["op"] == "literal" and isinstance(expr["value"], int) and not isinstance(expr["value"], bool):
        position = expr["value"]
        if not 1 <= position <= len(selected):
            raise QuerySyntaxError(f"GROUP BY position {position} is not in the select list")
        return selected[position - 1]
    for item in selected:
        if item["expr"] == expr:
            return item
    if expr["op"] == "ident" and len(expr["name"]) == 1:
        for item in selected:
            if item["alias"] == expr["name"][0]:
                return item
    return {"alias": parts.default_alias(expr), "expr": expr}
