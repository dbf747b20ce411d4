"""Experiment and dataset summaries: ``GET /v1/{experiment|dataset}/{id}/summarize``, and the
JavaScript SDK's ``POST /api/base_experiment/get_id`` and ``GET /experiment-comparison2``.

Every number is computed from the rows as stored now (latest version of each row):

- an experiment is read as its traces, each summarized as ``summary.py`` describes (per
  trace: scores averaged over its spans, ``start``/``end`` the trace's span, token metrics
  summed, other metrics the root's);
- a score's ``score`` is the average over the traces that have it; a metric's ``metric``
  likewise, with ``duration`` (``end - start``, seconds) added and ``start``/``end`` left out;
  units are ``tok`` (names ending in ``tokens``), ``s`` (names ending in ``duration``, and
  ``time_to_first_token``), ``$`` (names ending in ``cost``), else empty;
- against a comparison experiment, traces are matched on ``input`` (Braintrust's default
  comparison key): a trace improves a score when its value is above the average of the
  comparison's traces with the same input, and regresses when below; for metrics lower is
  better. A score's ``diff`` is the difference of the two averages; a metric's ``diff`` is
  relative to the comparison's average (the SDKs print it as a percentage), left out when
  that average is 0. Without a comparison, ``improvements`` and ``regressions`` are 0 and
  there is no ``diff``;
- the comparison experiment, when not given, is the experiment's ``base_exp_id``, else the
  newest experiment of the same project created before it;
- a dataset's ``total_records`` counts its rows.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import orjson
from aiohttp import web

from pipeline.emulator import objects
from pipeline.emulator.objects import NotFound
from pipeline.emulator.rest import json_body, json_response, principal, store, uuid_param
from pipeline.emulator.summary import summary_cte
from pipeline.emulator.validate import BadRequest, fail, uuid_string

#: Which way is better: larger scores, smaller metrics (durations, tokens, cost).
_HIGHER_IS_BETTER: Final = {"scores": True, "metrics": False}


@dataclass(frozen=True)
class Trace:
    """One trace of an experiment, as the comparison reads it."""

    key: str  # the serialized input: traces with equal keys are the same test case
    scores: dict[str, float]
    metrics: dict[str, float]


def _numbers(text: str | None) -> dict[str, float]:
    found = orjson.loads(text) if text else {}
    return {k: v for k, v in found.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _trace_metrics(metrics: dict[str, float]) -> dict[str, float]:
    out = {k: v for k, v in metrics.items() if k not in ("start", "end")}
    if "start" in metrics and "end" in metrics:
        out["duration"] = metrics["end"] - metrics["start"]
    return out


def traces(conn: sqlite3.Connection, object_type: str, object_id: str) -> list[Trace]:
    """The traces of an object in write order, through the same summary as ``/btql``'s."""
    params: list[Any] = []

    def visible(alias: str) -> str:
        params.extend([object_type, object_id])
        return (
            f"{alias}.object_type = ? AND {alias}.object_id = ? AND {alias}.deleted = 0"
            f" AND {alias}.superseded IS NULL"
        )

    sql = summary_cte(visible, None) + (
        "SELECT data -> '$.input', data -> '$.scores', data -> '$.metrics' FROM summary ORDER BY seq"
    )
    return [
        Trace(key or "null", _numbers(scores), _trace_metrics(_numbers(metrics)))
        for key, scores, metrics in conn.execute(sql, params)
    ]


def _unit(name: str) -> str:
    if name.endswith("tokens"):
        return "tok"
    if name.endswith("duration") or name == "time_to_first_token":
        return "s"
    return "$" if name.endswith("cost") else ""


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _by_name(found: Iterable[Trace], field: str) -> dict[str, list[float]]:
    values: dict[str, list[float]] = defaultdict(list)
    for trace in found:
        for name, value in getattr(trace, field).items():
            values[name].append(value)
    return values


def _by_case(found: Iterable[Trace], field: str) -> dict[tuple[str, str], float]:
    """The average value of each ``(name, input)`` pair."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for trace in found:
        for name, value in getattr(trace, field).items():
            values[name, trace.key].append(value)
    return {k: _mean(v) for k, v in values.items()}


def _summaries(current: list[Trace], baseline: list[Trace] | None, field: str) -> dict[str, dict[str, Any]]:
    """The ``ScoreSummary`` (``field`` = scores) or ``MetricSummary`` (metrics) of each name."""
    higher_is_better = _HIGHER_IS_BETTER[field]
    ours = _by_name(current, field)
    theirs = _by_name(baseline or [], field)
    cases = _by_case(baseline or [], field)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(ours):
        mean = _mean(ours[name])
        better = worse = 0
        for trace in current:
            value, other = getattr(trace, field).get(name), cases.get((name, trace.key))
            if value is None or other is None or value == other:
                continue
            if (value > other) == higher_is_better:
                better += 1
            else:
                worse += 1
        item: dict[str, Any] = {"name": name}
        item.update({"score": mean} if field == "scores" else {"metric": mean, "unit": _unit(name)})
        item.update(improvements=better, regressions=worse)
        if name in theirs:
            base = _mean(theirs[name])
            if field == "scores":
                item["diff"] = mean - base
            elif base != 0:
                item["diff"] = (mean - base) / base
        out[name] = item
    return out


def comparison(conn: sqlite3.Connection, experiment_id: str, baseline_id: str | None) -> dict[str, Any]:
    """``{"scores": {...}, "metrics": {...}}`` of an experiment, against ``baseline_id`` if given."""
    current = traces(conn, "experiment", experiment_id)
    baseline = None if baseline_id is None else traces(conn, "experiment", baseline_id)
    return {"scores": _summaries(current, baseline, "scores"), "metrics": _summaries(current, baseline, "metrics")}  # fmt: skip


def base_experiment(conn: sqlite3.Connection, experiment: dict[str, Any], org_ids: Sequence[str]) -> dict[str, Any] | None:  # fmt: skip
    """The experiment ``experiment`` is compared with by default (see the module docstring)."""
    if experiment.get("base_exp_id"):
        try:
            return objects.get_object(conn, "experiment", experiment["base_exp_id"], org_ids)
        except NotFound:
            pass
    row = conn.execute(
        "SELECT data FROM objects WHERE kind = 'experiment' AND project_id = ? AND deleted = 0"
        " AND seq < (SELECT seq FROM objects WHERE id = ?) ORDER BY seq DESC LIMIT 1",
        (experiment["project_id"], experiment["id"]),
    ).fetchone()
    return None if row is None else orjson.loads(row[0])


def _project_url(conn: sqlite3.Connection, app_url: str, project: dict[str, Any]) -> str:
    org = conn.execute("SELECT name FROM orgs WHERE id = ?", (project["org_id"],)).fetchone()
    return f"{app_url}/app/{quote(org[0], safe='')}/p/{quote(project['name'], safe='')}"


def experiment_summary(conn: sqlite3.Connection, experiment_id: str, org_ids: Sequence[str], app_url: str, scores: bool, comparison_id: str | None) -> dict[str, Any]:  # fmt: skip
    experiment = objects.get_object(conn, "experiment", experiment_id, org_ids)
    project = objects.get_object(conn, "project", experiment["project_id"], org_ids)
    project_url = _project_url(conn, app_url, project)
    out: dict[str, Any] = {
        "project_name": project["name"], "experiment_name": experiment["name"], "project_url": project_url,
        "experiment_url": f"{project_url}/experiments/{quote(experiment['name'], safe='')}",
        "comparison_experiment_name": None, "scores": None, "metrics": None,
    }  # fmt: skip
    if scores:
        if comparison_id is not None:
            baseline: dict[str, Any] | None = objects.get_object(conn, "experiment", comparison_id, org_ids)
        else:
            baseline = base_experiment(conn, experiment, org_ids)
        out.update(comparison(conn, experiment_id, None if baseline is None else baseline["id"]))
        out["comparison_experiment_name"] = None if baseline is None else baseline["name"]
    return out


def dataset_summary(conn: sqlite3.Connection, dataset_id: str, org_ids: Sequence[str], app_url: str, data: bool) -> dict[str, Any]:  # fmt: skip
    dataset = objects.get_object(conn, "dataset", dataset_id, org_ids)
    project = objects.get_object(conn, "project", dataset["project_id"], org_ids)
    project_url = _project_url(conn, app_url, project)
    out: dict[str, Any] = {
        "project_name": project["name"], "dataset_name": dataset["name"], "project_url": project_url,
        "dataset_url": f"{project_url}/datasets/{quote(dataset['name'], safe='')}", "data_summary": None,
    }  # fmt: skip
    if data:
        (count,) = conn.execute(
            "SELECT count(*) FROM rows WHERE object_type = 'dataset' AND object_id = ? AND deleted = 0"
            " AND superseded IS NULL",
            (dataset_id,),
        ).fetchone()
        out["data_summary"] = {"total_records": count}
    return out


# -- routes --------------------------------------------------------------------------------


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false"):
        raise fail(name, "expected true or false")
    return value == "true"


def _optional_uuid(request: web.Request, name: str) -> str | None:
    value = request.query.get(name) or None
    return None if value is None else uuid_param(value, name)


def _app_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def summarize_experiment(request: web.Request, params: dict[str, str]) -> web.Response:
    experiment_id = uuid_param(params["id"], "experiment id")
    scores = _flag(request, "summarize_scores")
    comparison_id = _optional_uuid(request, "comparison_experiment_id")
    org_ids, url = principal(request).org_ids, _app_url(request)
    found = await store(request).read(
        lambda c: experiment_summary(c, experiment_id, org_ids, url, scores, comparison_id)
    )
    return json_response(found)


async def dataset_records(request: web.Request, params: dict[str, str]) -> web.Response:
    """``GET /dataset-summary?dataset_id=`` -> ``{total_records}``: the JavaScript SDK's
    ``dataset.summarize()``."""
    dataset_id = uuid_param(request.query.get("dataset_id", ""), "dataset_id")
    org_ids, url = principal(request).org_ids, _app_url(request)
    found = await store(request).read(lambda c: dataset_summary(c, dataset_id, org_ids, url, True))
    return json_response(found["data_summary"])


async def summarize_dataset(request: web.Request, params: dict[str, str]) -> web.Response:
    dataset_id = uuid_param(params["id"], "dataset id")
    data = _flag(request, "summarize_data")
    org_ids, url = principal(request).org_ids, _app_url(request)
    return json_response(
        await store(request).read(lambda c: dataset_summary(c, dataset_id, org_ids, url, data))
    )


def _base_of(conn: sqlite3.Connection, experiment_id: str, org_ids: Sequence[str]) -> dict[str, Any]:
    found = base_experiment(conn, objects.get_object(conn, "experiment", experiment_id, org_ids), org_ids)
    if found is None:
        raise BadRequest(f"experiment {experiment_id} has no base experiment")
    return {"base_exp_id": found["id"], "base_exp_name": found["name"]}


async def base_experiment_id(request: web.Request, params: dict[str, str]) -> web.Response:
    """``POST /api/base_experiment/get_id {id}``: a 400 when there is none (the SDKs read
    that status as "no base experiment")."""
    body = await json_body(request)
    experiment_id = body.get("id") if isinstance(body, dict) else None
    uuid_string(experiment_id, "id")
    org_ids = principal(request).org_ids
    return json_response(await store(request).read(lambda c: _base_of(c, str(experiment_id), org_ids)))


def _checked_comparison(conn: sqlite3.Connection, experiment_id: str, baseline_id: str | None, org_ids: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    for visible in (experiment_id, baseline_id):
        if visible is not None:
            objects.get_object(conn, "experiment", visible, org_ids)
    return comparison(conn, experiment_id, baseline_id)


async def experiment_comparison(request: web.Request, params: dict[str, str]) -> web.Response:
    """``GET /experiment-comparison2?experiment_id&base_experiment_id``."""
    experiment_id = _optional_uuid(request, "experiment_id")
    if experiment_id is None:
        raise fail("experiment_id", "is required")
    baseline_id = _optional_uuid(request, "base_experiment_id")
    org_ids = principal(request).org_ids
    found = await store(request).read(lambda c: _checked_comparison(c, experiment_id, baseline_id, org_ids))
    return json_response(found)
