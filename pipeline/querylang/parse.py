"""Query text -> the parsed query form (``querylang.ast``), and expressions back to text.

Two syntaxes are accepted, as the ``/btql`` endpoint does: BTQL clauses (``select:``,
``from:``, ``filter:`` ... one per line or joined with `` | ``) and SQL (``SELECT ... FROM
project_logs('<id>', shape => 'traces') WHERE ...``). Both are tokenized and parsed by
sqlglot (``querylang.syntax``); a text whose first word is SELECT (or WITH), not followed
by a colon, is SQL. Every failure is a ``QuerySyntaxError`` (a ``UsageError``) naming what is wrong
and where.
"""

from __future__ import annotations

from sqlglot.tokens import TokenType

from pipeline.querylang.ast import Expr, Query
from pipeline.querylang.clauses import parse_clauses
from pipeline.querylang.convert import to_expr
from pipeline.querylang.render import to_text
from pipeline.querylang.sql import parse_sql
from pipeline.querylang.syntax import QuerySyntaxError, parse_condition, tokenize

__all__ = ["QuerySyntaxError", "parse_expression", "parse_query", "to_text"]


def parse_expression(text: str) -> Expr:
    """A filter / BTQL expression such as ``metadata.orgName = 'qawolf' and is_root``."""
    tokens = tokenize(text)
    if not tokens:
        raise QuerySyntaxError("empty expression")
    return to_expr(parse_condition(tokens, text))


def parse_query(text: str) -> Query:
    """A whole query, in BTQL clause or SQL syntax."""
    tokens = tokenize(text)
    if not tokens:
        raise QuerySyntaxError("empty query")
    is_sql = tokens[0].token_type in (TokenType.SELECT, TokenType.WITH) and (
        len(tokens) == 1 or tokens[1].token_type != TokenType.COLON
    )
    return parse_sql(tokens, text) if is_sql else parse_clauses(tokens, text)
