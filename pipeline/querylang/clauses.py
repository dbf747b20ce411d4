"""BTQL clause syntax: ``select: ...`` / ``from: ...`` / ``filter: ...`` lines.

Clauses are found on the token stream, never on raw text: a clause starts with a word
and a colon at the start of a line or after a ``|`` separator. Working on tokens means a
``|``, ``--`` or newline inside a quoted value is just part of that value, and every error
points at the real line and column of the query text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlglot.tokens import Token, TokenType

from pipeline.querylang import parts
from pipeline.querylang.ast import Query
from pipeline.querylang.convert import to_expr
from pipeline.querylang.syntax import (
    QuerySyntaxError,
    parse_condition,
    parse_items,
    parse_sort_items,
    parse_table,
    token_location,
)

Body = Sequence[Token]


def _select(body: Body, text: str) -> Any:
    nodes = parse_items(body, text)
    return [{"op": "star"}] if parts.is_star(nodes) else parts.items(nodes)


def _items(body: Body, text: str) -> Any:
    nodes = parse_items(body, text)
    if any(n.key == "star" for n in nodes):
        raise QuerySyntaxError("'*' is only allowed in select:")
    return parts.items(nodes)


def _cursor(body: Body, text: str) -> Any:
    """A cursor is opaque: a quoted string, or the bare text as written."""
    if len(body) == 1 and body[0].token_type == TokenType.STRING:
        return body[0].text
    return text[body[0].start : body[-1].end + 1]


_CLAUSES: dict[str, Callable[[Body, str], Any]] = {
    "select": _select,
    "from": lambda body, text: parts.source(parse_table(body, text), shape_word_allowed=True),
    "filter": lambda body, text: to_expr(parse_condition(body, text)),
    "sort": lambda body, text: parts.sort_items(parse_sort_items(body, text)),
    "limit": lambda body, text: parts.limit_value(parse_condition(body, text)),
    "cursor": _cursor,
    "dimensions": _items,
    "measures": _items,
    "preview_length": lambda body, text: parts.limit_value(parse_condition(body, text)),
}
# Clauses that only shape how the web UI previews values: checked, then left out.
_DISPLAY_ONLY = frozenset({"preview_length"})


def parse_clauses(tokens: list[Token], text: str) -> Query:
    """The query for BTQL clause text (already tokenized)."""
    query: Query = {}
    seen: set[str] = set()
    for name_token, body in _split(tokens, text):
        name = name_token.text.lower()
        builder = _CLAUSES.get(name)
        if builder is None:
            raise QuerySyntaxError(f"unsupported clause {name!r} at {token_location(text, name_token)}")
        if name in seen:
            raise QuerySyntaxError(f"duplicate clause {name!r} at {token_location(text, name_token)}")
        if not body:
            raise QuerySyntaxError(f"clause {name!r} is empty at {token_location(text, name_token)}")
        value = builder(body, text)
        seen.add(name)
        if name not in _DISPLAY_ONLY:
            query[name] = value
    if "from" not in query:
        raise QuerySyntaxError("query has no 'from:' clause")
    return query


def _split(tokens: list[Token], text: str) -> list[tuple[Token, list[Token]]]:
    """(clause name token, body tokens) pairs, in order."""
    clauses: list[tuple[Token, list[Token]]] = []
    i = 0
    while i < len(tokens):
        if _starts_clause(tokens, i, text):
            clauses.append((tokens[i], []))
            i += 2
            continue
        if not clauses:
            raise QuerySyntaxError(
                f"expected a clause such as 'select:' or 'from:' at {token_location(text, tokens[i])}"
                f" near {tokens[i].text!r}"
            )
        is_separator = tokens[i].token_type == TokenType.PIPE and _starts_clause(tokens, i + 1, text)
        if not is_separator:
            clauses[-1][1].append(tokens[i])
        i += 1
    return clauses


def _starts_clause(tokens: list[Token], i: int, text: str) -> bool:
    """A word followed by ':' that opens the query, a line, or follows a '|'."""
    if i + 1 >= len(tokens) or tokens[i + 1].token_type != TokenType.COLON:
        return False
    word = tokens[i]
    if (
        word.token_type in (TokenType.STRING, TokenType.IDENTIFIER)
        or not word.text.replace("_", "").isalpha()
    ):
        return False
    if i == 0:
        return True
    previous = tokens[i - 1]
    return previous.token_type == TokenType.PIPE or "\n" in text[previous.end + 1 : tokens[i].start]
