"""The ``summary`` shape: one row per trace, as a SQL common table expression.

A summary row is the trace's root span (``is_root``) as stored, with two fields replaced:

- ``scores``: for each score name, the average of its numeric values over every span of
  the trace (null and non-numeric values are left out; a name with no numeric value at
  all does not appear);
- ``metrics``: ``start`` is the smallest start and ``end`` the largest end over the
  trace's spans; every metric whose name ends in ``tokens`` (``prompt_tokens``,
  ``completion_tokens``, ``tokens``, ...) is the sum over the spans; any other metric is
  the root span's own value.

A trace whose root span is not visible (deleted, or never written) has no summary row.
With a filter, a trace is summarized when at least one of its spans matches (as for
``traces``). The expression yields a table ``summary`` with the columns of ``rows`` the
compiler reads (``seq`` of the root, ``id``, ``xact_id``, ``root_span_id``, ``data``), so
projections, sorts, cursors and aggregates run over it unchanged. It aggregates the whole
object on every page: fine for an emulator, not meant for bulk reads.
"""

from __future__ import annotations

from collections.abc import Callable

#: ``visible(alias)`` returns the visibility condition for ``alias`` and binds its parameters.
Visible = Callable[[str], str]


def summary_cte(visible: Visible, trace_filter: Callable[[], str] | None) -> str:
    """``WITH ... summary AS (...)``, parameters bound in text order through the callbacks;
    ``trace_filter()`` compiles the filter over alias ``m``."""
    spans = (
        "spans AS (SELECT t.seq AS seq, t.id AS id, t.xact_id AS xact_id, t.root_span_id AS root_span_id,"
        f" t.data AS data FROM rows t WHERE {visible('t')})"
    )
    score_avg = (
        "score_avg AS (SELECT s.root_span_id AS trace, j.key AS k, avg(j.value) AS v"
        " FROM spans s, json_each(s.data, '$.scores') j WHERE j.type IN ('integer', 'real') GROUP BY 1, 2)"
    )
    metric_agg = (
        "metric_agg AS (SELECT s.root_span_id AS trace, j.key AS k, CASE"
        " WHEN j.key = 'start' THEN min(j.value) WHEN j.key = 'end' THEN max(j.value)"
        " WHEN j.key LIKE '%tokens' THEN sum(j.value)"
        " ELSE max(CASE WHEN json_extract(s.data, '$.is_root') THEN j.value END) END AS v"
        " FROM spans s, json_each(s.data, '$.metrics') j WHERE j.type IN ('integer', 'real') GROUP BY 1, 2)"
    )
    objects = (
        "score_obj AS (SELECT trace, json_group_object(k, v) AS obj FROM score_avg GROUP BY trace),"
        " metric_obj AS (SELECT trace, json_group_object(k, v) AS obj FROM metric_agg"
        " WHERE v IS NOT NULL GROUP BY trace)"
    )
    where = "json_extract(s.data, '$.is_root')"
    if trace_filter is not None:
        where += f" AND s.root_span_id IN (SELECT m.root_span_id FROM rows m WHERE {visible('m')} AND {trace_filter()})"  # fmt: skip
    summary = (
        "summary AS (SELECT s.seq AS seq, s.id AS id, s.xact_id AS xact_id, s.root_span_id AS root_span_id,"
        " json_set(s.data, '$.scores', json(coalesce(sc.obj, '{}')), '$.metrics', json(coalesce(me.obj, '{}')))"
        " AS data FROM spans s LEFT JOIN score_obj sc ON sc.trace = s.root_span_id"
        f" LEFT JOIN metric_obj me ON me.trace = s.root_span_id WHERE {where})"
    )
    return f"WITH {spans}, {score_avg}, {metric_agg}, {objects}, {summary} "
