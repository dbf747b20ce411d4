"""The sqlglot layer: tokenizing query text and parsing token runs into sqlglot trees.

Both query syntaxes (BTQL clauses and SQL) and single filter expressions go through the
same tokenizer and parser, so quoting, escaping and operator precedence are identical
everywhere. The parser is sqlglot's default one with two changes: ``a includes b`` is a
binary operator at the level of ``LIKE``/``IN``, and every function call stays a generic
call (name + arguments) so ``querylang`` alone decides which functions exist. sqlglot's
errors are turned here into one-line ``QuerySyntaxError`` messages naming line, column and
the offending token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.parser import Parser
from sqlglot.tokens import Token, Tokenizer, TokenType


class QuerySyntaxError(ValueError):
    """A query or filter text that cannot be parsed or uses something unsupported.

    A plain ``ValueError``: the query language is shared with the emulator, so it knows nothing
    of btpipe's error tree; the client turns it into a usage error where it parses user text."""


class Includes(exp.Expression, exp.Binary, exp.Predicate):
    """``left includes right``: the array ``left`` contains ``right`` (BTQL operator)."""


INCLUDES_WORD = "INCLUDES"


class _BtqlParser(Parser):
    """sqlglot's parser plus the ``includes`` operator, with no function-specific parsing."""

    FUNCTIONS: ClassVar[dict[str, Callable]] = {}

    def _parse_range(self, this: exp.Expr | None = None, parse_is: bool = False) -> exp.Expr | None:
        this = super()._parse_range(this, parse_is)
        while (
            this is not None
            and self._curr is not None
            and self._curr.token_type == TokenType.VAR
            and self._curr.text.upper() == INCLUDES_WORD
        ):
            self._advance()
            right = self._parse_bitwise()
            if right is None:
                self.raise_error("Expecting a value after INCLUDES")
            this = self.expression(Includes(this=this, expression=right))
            # Further range operators (LIKE, IN, IS, ...) may follow.
            this = super()._parse_range(this, parse_is)
        return this

    def parse_tokens(self, method: Callable[[Parser], Any], tokens: list[Token], sql: str) -> Any:
        """Run one parse ``method`` over ``tokens``, which must all be consumed."""
        results = self._parse(method, tokens, sql)
        if len(results) != 1:
            raise QuerySyntaxError("a query must be a single statement (remove the ';')")
        return results[0]


_DIALECT = Dialect.get_or_raise(None)


def tokenize(text: str) -> list[Token]:
    """Tokens of ``text``; comments are attached to tokens, never returned as tokens. Text that
    was not UTF-8 (bytes a command line decoded as surrogates) is refused: no query could carry it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line, column = position(text, exc.start)
        raise QuerySyntaxError(f"the text is not valid UTF-8 (at line {line}, column {column})") from None
    tokenizer = Tokenizer(dialect=_DIALECT)
    try:
        return tokenizer.tokenize(text)
    except TokenError as exc:
        # The tokenizer's scanner keeps the start of the token it failed on (an unterminated
        # string or quoted identifier, a malformed number); older sqlglot has no scanner.
        start = getattr(getattr(tokenizer, "_core", tokenizer), "_start", None)
        what = "unterminated string, quoted identifier or malformed number"
        if not isinstance(start, int):
            raise QuerySyntaxError(f"syntax error: {what}") from exc
        line, column = position(text, start)
        near = text[start : start + 20]
        raise QuerySyntaxError(f"syntax error at line {line}, column {column} near {near!r}: {what}") from exc


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of character ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def token_location(text: str, token: Token) -> str:
    """``line L, column C`` of the first character of ``token``."""
    line, column = position(text, token.start)
    return f"line {line}, column {column}"


def _parse(method: Callable[[Parser], Any], tokens: Sequence[Token], text: str) -> Any:
    parser = _BtqlParser(dialect=_DIALECT)
    try:
        return parser.parse_tokens(method, list(tokens), text)
    except ParseError as exc:
        raise QuerySyntaxError(_describe(exc, tokens, text)) from exc


def _describe(exc: ParseError, tokens: Sequence[Token], text: str) -> str:
    """One line from a sqlglot ParseError: where, the token there, and what was expected."""
    error = exc.errors[0] if exc.errors else {}
    highlight = str(error.get("highlight") or "")
    line, col = error.get("line"), error.get("col")
    description = str(error.get("description") or "")
    if not highlight or line is None or col is None:
        where = f"at end of {_excerpt(tokens, text)!r}"
    else:
        # sqlglot reports the column of the token's last character.
        start_col = col - len(highlight) + 1 if "\n" not in highlight else col
        where = f"at line {line}, column {start_col} near {highlight!r}"
    hint = f": {description[0].lower()}{description[1:]}" if description.startswith("Expecting") else ""
    return f"syntax error {where}{hint}"


def _excerpt(tokens: Sequence[Token], text: str) -> str:
    if not tokens:
        return ""
    return text[tokens[0].start : tokens[-1].end + 1]


def parse_condition(tokens: Sequence[Token], text: str) -> exp.Expr:
    """One expression without an alias (a filter)."""
    return _parse(lambda p: p._parse_disjunction(), tokens, text)


def parse_items(tokens: Sequence[Token], text: str) -> list[exp.Expr]:
    """A comma-separated list of expressions, each with an optional alias."""
    return _parse(lambda p: p._parse_csv(p._parse_expression), tokens, text)


def parse_sort_items(tokens: Sequence[Token], text: str) -> list[exp.Expr]:
    """A comma-separated list of ``expr [asc|desc]``."""
    return _parse(lambda p: p._parse_csv(p._parse_ordered), tokens, text)


def parse_table(tokens: Sequence[Token], text: str) -> exp.Expr:
    """A table expression such as ``project_logs('<id>') traces``."""
    return _parse(lambda p: p._parse_table(), tokens, text)


def parse_statement(tokens: Sequence[Token], text: str) -> exp.Expr:
    """A whole SQL statement."""
    return _parse(lambda p: p._parse_statement(), tokens, text)
