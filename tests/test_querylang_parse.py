"""Query text parsing: the walkthrough's queries, the error catalogue, and text round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot.parser import Parser
from sqlglot.tokens import Tokenizer

from pipeline.querylang.ast import FUNCTION_ARITY, Expr, binary, from_object, function, ident, literal
from pipeline.querylang.parse import QuerySyntaxError, parse_expression, parse_query, to_text

EXPERIMENT_ID = "bdec1c5e-8c00-4033-84f0-4e3aa522ecaf"
PROJECT_ID = "5d8a0c8e-2f43-4c3b-9d55-4a8f1d2e7b10"


def item(alias: str, expr: Expr) -> dict:
    return {"alias": alias, "expr": expr}


def if_(cond: Expr, then: Expr, otherwise: Expr) -> Expr:
    return {"op": "if", "conds": [{"cond": cond, "then": then}], "else": otherwise}


def unary(op: str, expr: Expr) -> Expr:
    return {"op": op, "expr": expr}


def and_(*children: Expr) -> Expr:
    return {"op": "and", "children": list(children)}


def or_(*children: Expr) -> Expr:
    return {"op": "or", "children": list(children)}


# --- the walkthrough's queries, SQL and BTQL ------------------------------------------

REVIEW_SQL = f"""
      SELECT
        sum(CASE WHEN scores."response quality" IS NOT NULL THEN 1 ELSE 0 END) AS reviewed,
        sum(CASE WHEN is_root THEN 1 ELSE 0 END) AS total
      FROM experiment('{EXPERIMENT_ID}')
      """
REVIEW_BTQL = """
      from: experiment('<experiment_id>')
      measures: sum(scores."response quality" IS NOT NULL) AS reviewed, count(1) AS total
      filter: is_root -- Only count traces, not spans
      """
ORG_SQL = f"""
      SELECT span_attributes, metrics
      FROM project_logs('{PROJECT_ID}', shape => 'traces')
      WHERE metadata.orgName = 'qawolf'
      LIMIT 10
      """
ORG_BTQL = f"""
      select: span_attributes, metrics
      from: project_logs('{PROJECT_ID}') traces
      filter: metadata.orgName = 'qawolf'
      limit:10
      """
DELETE_SQL = f"""
      SELECT id
      FROM project_logs('{PROJECT_ID}', shape => 'traces')
      WHERE metadata.user_id = 'user-42'
      """
DELETE_BTQL = f"""
      select: id
      from: project_logs('{PROJECT_ID}') traces
      filter: metadata.user_id = 'user-42'
      """

REVIEWED_CASE = if_(unary("isnotnull", ident("scores", "response quality")), literal(1), literal(0))
ORG_QUERY = {
    "select": [item("span_attributes", ident("span_attributes")), item("metrics", ident("metrics"))],
    "from": from_object("project_logs", PROJECT_ID, shape="traces"),
    "filter": binary("eq", ident("metadata", "orgName"), literal("qawolf")),
    "limit": 10,
}
DELETE_QUERY = {
    "select": [item("id", ident("id"))],
    "from": from_object("project_logs", PROJECT_ID, shape="traces"),
    "filter": binary("eq", ident("metadata", "user_id"), literal("user-42")),
}


def test_review_status_sql() -> None:
    assert parse_query(REVIEW_SQL) == {
        "from": from_object("experiment", EXPERIMENT_ID),
        "measures": [
            item("reviewed", function("sum", REVIEWED_CASE)),
            item("total", function("sum", if_(ident("is_root"), literal(1), literal(0)))),
        ],
    }


def test_review_status_btql() -> None:
    assert parse_query(REVIEW_BTQL) == {
        "from": from_object("experiment", "<experiment_id>"),
        "measures": [
            item("reviewed", function("sum", unary("isnotnull", ident("scores", "response quality")))),
            item("total", function("count", literal(1))),
        ],
        "filter": ident("is_root"),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [(ORG_SQL, ORG_QUERY), (ORG_BTQL, ORG_QUERY), (DELETE_SQL, DELETE_QUERY), (DELETE_BTQL, DELETE_QUERY)],
    ids=["org-sql", "org-btql", "delete-sql", "delete-btql"],
)
def test_walkthrough_queries(text: str, expected: dict) -> None:
    assert parse_query(text) == expected


def test_btql_clauses_joined_with_pipes() -> None:
    assert parse_query(" | ".join(line.strip() for line in ORG_BTQL.strip().splitlines())) == ORG_QUERY


def test_btql_star_sort_cursor_several_ids_and_separators_inside_values() -> None:
    text = (
        "select: * | from: dataset('a', 'b') summary\n"
        "filter: input = 'x | filter: y' -- not a clause\n"
        "  and tags includes 'z'\n"
        "sort: created desc, id | limit: 5 | cursor: 'c1|2' | preview_length: 100"
    )
    assert parse_query(text) == {
        "select": [{"op": "star"}],
        "from": from_object("dataset", "a", "b", shape="summary"),
        "filter": and_(
            binary("eq", ident("input"), literal("x | filter: y")),
            binary("includes", ident("tags"), literal("z")),
        ),
        "sort": [{"expr": ident("created"), "dir": "desc"}, {"expr": ident("id"), "dir": "asc"}],
        "limit": 5,
        "cursor": "c1|2",
    }


def test_btql_bare_cursor_and_dimensions() -> None:
    text = (
        "from: project_logs('p')\n"
        "dimensions: metadata.model, span_attributes.type AS kind\n"
        "measures: count(*) AS n, avg(metrics.tokens)\n"
        "cursor: aGVsbG8+/w=="
    )
    assert parse_query(text) == {
        "from": from_object("project_logs", "p"),
        "dimensions": [
            item("model", ident("metadata", "model")),
            item("kind", ident("span_attributes", "type")),
        ],
        "measures": [
            item("n", function("count", {"op": "star"})),
            item("avg(metrics.tokens)", function("avg", ident("metrics", "tokens"))),
        ],
        "cursor": "aGVsbG8+/w==",
    }


def test_sql_group_by_makes_dimensions_and_measures() -> None:
    text = (
        "SELECT metadata.model AS model, span_attributes.type, count(1) AS n, max(_xact_id) AS v\n"
        "FROM project_logs('p') WHERE NOT is_root GROUP BY model, 2, metadata.region ORDER BY n DESC LIMIT 3"
    )
    assert parse_query(text) == {
        "from": from_object("project_logs", "p"),
        "dimensions": [
            item("model", ident("metadata", "model")),
            item("type", ident("span_attributes", "type")),
            item("region", ident("metadata", "region")),
        ],
        "measures": [item("n", function("count", literal(1))), item("v", function("max", ident("_xact_id")))],
        "filter": unary("not", ident("is_root")),
        "sort": [{"expr": ident("n"), "dir": "desc"}],
        "limit": 3,
    }


def test_sql_star_and_multiple_ids() -> None:
    assert parse_query("select * from dataset('a', 'b') where id in ('x', 'y')") == {
        "select": [{"op": "star"}],
        "from": from_object("dataset", "a", "b"),
        "filter": binary("in", ident("id"), literal(["x", "y"])),
    }


# --- expressions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.b.c.d.e = 1", binary("eq", ident("a", "b", "c", "d", "e"), literal(1))),
        ('"my field"."x.y" <> -2.5', binary("ne", ident("my field", "x.y"), literal(-2.5))),
        ("x != null", binary("ne", ident("x"), literal(None))),
        (
            "x >= 1 AND y < 2 AND z <= 3",
            and_(
                binary("ge", ident("x"), literal(1)),
                binary("lt", ident("y"), literal(2)),
                binary("le", ident("z"), literal(3)),
            ),
        ),
        ("a OR (b OR c)", or_(ident("a"), or_(ident("b"), ident("c")))),
        (
            "x > 1 or y = true and z = false",
            or_(
                binary("gt", ident("x"), literal(1)),
                and_(binary("eq", ident("y"), literal(True)), binary("eq", ident("z"), literal(False))),
            ),
        ),
        (
            "input LIKE 'a%' AND output ILIKE '%B'",
            and_(
                binary("like", ident("input"), literal("a%")),
                binary("ilike", ident("output"), literal("%B")),
            ),
        ),
        ("input NOT LIKE 'a%'", unary("not", binary("like", ident("input"), literal("a%")))),
        ("x NOT IN (1, 2.5, 'a')", unary("not", binary("in", ident("x"), literal([1, 2.5, "a"])))),
        ("x IS NULL", unary("isnull", ident("x"))),
        ("NOT (x IS NULL)", unary("not", unary("isnull", ident("x")))),
        ("includes(tags, 'x')", binary("includes", ident("tags"), literal("x"))),
        (
            "(a + b) * c - d / 2 % 3",
            binary(
                "sub",
                binary("mul", binary("add", ident("a"), ident("b")), ident("c")),
                binary("mod", binary("div", ident("d"), literal(2)), literal(3)),
            ),
        ),
        ("-(x)", unary("neg", ident("x"))),
        (
            "COALESCE(metadata.a, 'none') = lower(input)",
            binary(
                "eq",
                function("coalesce", ident("metadata", "a"), literal("none")),
                function("lower", ident("input")),
            ),
        ),
        (
            "CASE x WHEN 1 THEN 'one' END",
            {
                "op": "if",
                "conds": [{"cond": binary("eq", ident("x"), literal(1)), "then": literal("one")}],
                "else": literal(None),
            },
        ),
        ("'it''s \\ fine'", literal("it's \\ fine")),
        ("12345678901234567890", literal(12345678901234567890)),
        ("1e-05", literal(1e-05)),
    ],
)
def test_expressions(text: str, expected: Expr) -> None:
    assert parse_expression(text) == expected


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT id\nFROM project_logs('p')\nWHERE a = = 1", "syntax error at line 3, column 11 near '='"),
        (
            "SELECT id FROM project_logs('p') WHERE (a = 1",
            "syntax error at line 1, column 45 near '1': expecting )",
        ),
        (
            "SELECT id FROM logs('p')",
            "unknown object type 'logs' (expected one of project_logs, dataset, experiment)",
        ),
        ("SELECT id FROM project_logs('p') JOIN dataset('d') ON 1 = 1", "unsupported clause 'join'"),
        ("SELECT id FROM project_logs('p') LIMIT 5 OFFSET 2", "unsupported clause 'offset'"),
        (
            "SELECT count(1) FROM project_logs('p') GROUP BY id HAVING count(1) > 1",
            "unsupported clause 'having'",
        ),
        ("SELECT 1 FROM project_logs('p') UNION SELECT 2 FROM dataset('d')", "unsupported clause 'union'"),
        (
            "SELECT id, count(1) FROM project_logs('p')",
            "'id' must be listed in GROUP BY or used inside an aggregate function",
        ),
        (
            "SELECT id FROM project_logs('p', shape => 'trees')",
            "unknown shape 'trees' (expected one of spans, traces, summary)",
        ),
        ("SELECT id FROM project_logs()", "project_logs() needs at least one object id"),
        ("SELECT id", "query has no FROM clause"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "unsupported clause 'with'"),
        (
            "SELECT count(DISTINCT id) FROM dataset('d')",
            "unsupported syntax 'DISTINCT id' at line 1, column 23",
        ),
        ("SELECT id FROM project_logs('p') LIMIT 'ten'", "limit must be a whole number, not \"'ten'\""),
        ("select: id\njoin: dataset('d')", "unsupported clause 'join' at line 2, column 1"),
        ("select: id\nfrom: experiment('e')\nselect: x", "duplicate clause 'select' at line 3, column 1"),
        ("from: experiment('e')\nfilter:", "clause 'filter' is empty at line 2, column 1"),
        ("select: id", "query has no 'from:' clause"),
        ("hello: world", "unsupported clause 'hello' at line 1, column 1"),
        ("id = 1", "expected a clause such as 'select:' or 'from:' at line 1, column 1 near 'id'"),
        ("from: project_logs('p') traces spans", "syntax error at line 1, column 32 near 'spans'"),
        ("from: project_logs('p')\nfilter: foo(x) = 1", "unknown function 'foo' at line 2, column 9"),
        (
            "from: project_logs('p')\nfilter: x = 'open",
            'syntax error at line 2, column 13 near "\'open": unterminated string, quoted identifier or malformed number',
        ),
        ("from: project_logs('p')\nsort: x desc\nlimit: -1", "limit must be a whole number, not '-1'"),
        ("", "empty query"),
        ("-- only a comment", "empty query"),
    ],
)
def test_query_errors(text: str, message: str) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query(text)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a = 1 b", "syntax error at line 1, column 7 near 'b'"),
        ("sum(x, y)", "function 'sum' takes 1 argument(s), got 2"),
        ("coalesce()", "function 'coalesce' takes 1 or more argument(s), got 0"),
        ("sum(*)", "'*' is only allowed in count(*), not in sum()"),
        ("x IN (y)", "IN list must hold only literal values, not 'y'"),
        ("a = 1 AND\n  x IS TRUE", "unsupported syntax 'x IS TRUE' at line 2, column 3"),
        ("CAST(x AS INT) = 1", "unsupported syntax 'CAST(x AS INT)' at line 1, column 6"),
        ("a = 1; b = 2", "a query must be a single statement (remove the ';')"),
        ("", "empty expression"),
        ("metadata.x = 1e400", "the number 1e400 is beyond the range of a 64-bit float"),
        ("metadata.x IN (1, -1e999)", "the number 1e999 is beyond the range of a 64-bit float"),
    ],
)
def test_expression_errors(text: str, message: str) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse_expression(text)
    assert str(caught.value) == message


# --- rendering and round trips ------------------------------------------------------

_names = st.one_of(
    st.sampled_from(["metadata", "scores", "tags", "is_root", "count", "includes", "select", "true", "a b"]),
    st.text(min_size=1, max_size=8),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["it's", "\\", "'; DROP --", '"q"', "a\\'b", "é∑🙂", "line\nbreak"]),
)
_leaves = st.one_of(
    _scalars.map(literal),
    st.lists(_names, min_size=1, max_size=4).map(lambda parts: ident(*parts)),
)
_BINARY = ["eq", "ne", "lt", "le", "gt", "ge", "like", "ilike", "includes", "add", "sub", "mul", "div", "mod"]


def _function(draw_args: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    def build(name: str) -> st.SearchStrategy[Expr]:
        low, high = FUNCTION_ARITY[name]
        args = st.lists(draw_args, min_size=low, max_size=high if high is not None else low + 2)
        if name == "count":
            args = st.one_of(args, st.just([{"op": "star"}]))
        return args.map(lambda a: function(name, *a))

    return st.sampled_from(sorted(FUNCTION_ARITY)).flatmap(build)


def _compound(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(binary, st.sampled_from(_BINARY), children, children),
        st.builds(
            lambda left, values: binary("in", left, literal(values)), children, st.lists(_scalars, max_size=3)
        ),
        st.builds(
            lambda op, kids: {"op": op, "children": kids},
            st.sampled_from(["and", "or"]),
            st.lists(children, min_size=2, max_size=3),
        ),
        st.builds(unary, st.sampled_from(["not", "isnull", "isnotnull", "neg"]), children),
        _function(children),
        st.builds(
            lambda conds, otherwise: {"op": "if", "conds": conds, "else": otherwise},
            st.lists(st.fixed_dictionaries({"cond": children, "then": children}), min_size=1, max_size=2),
            children,
        ),
    )


expressions = st.recursive(_leaves, _compound, max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(expressions)
def test_to_text_round_trips(expr: Expr) -> None:
    assert parse_expression(to_text(expr)) == expr


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_quoted_values_never_change_the_filter(value: str) -> None:
    text = f"metadata.user_id = {to_text(literal(value))} AND is_root"
    assert parse_expression(text) == and_(
        binary("eq", ident("metadata", "user_id"), literal(value)), ident("is_root")
    )


def test_to_text_reads_well() -> None:
    expr = parse_expression(
        "metadata.orgName = 'qa''wolf' and (scores.\"response quality\" IS NOT NULL or tags includes 'x')"
    )
    assert to_text(expr) == (
        "metadata.orgName = 'qa''wolf' AND (scores.\"response quality\" IS NOT NULL OR tags INCLUDES 'x')"
    )


@pytest.mark.parametrize(
    "expr",
    [
        literal([1, 2]),
        literal(float("nan")),
        {"op": "and", "children": [ident("a")]},
        binary("in", ident("a"), ident("b")),
        {"op": "bogus"},
    ],
)
def test_to_text_refuses_what_text_cannot_hold(expr: Expr) -> None:
    with pytest.raises(ValueError):
        to_text(expr)


def test_keywords_and_function_names_as_field_names_round_trip() -> None:
    words = {w for w in [*Tokenizer.KEYWORDS, *Parser.FUNCTIONS] if w.replace("_", "").isalnum()}
    for word in sorted(words | {w.lower() for w in words}):
        for expr in (
            binary("eq", ident(word), literal(1)),
            binary("includes", ident("a", word), ident(word, "b")),
            unary("isnull", ident(word)),
            unary("not", ident(word)),
            function("count", ident(word)),
        ):
            assert parse_expression(to_text(expr)) == expr, word
