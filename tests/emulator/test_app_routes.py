"""The app routes of the JavaScript SDK (``/api/*/register``, ``/api/base_experiment/get_id``,
``/experiment-comparison2``) and the REST summaries, by hand: the rules the SDK suites do
not reach (reuse, naming, refusals, the summaries' switches)."""

from __future__ import annotations

from typing import Any

from tests.conftest import unique_name
from tests.emulator.conftest import Api


async def _org_id(api: Api) -> str:
    found: str = (await api.ok("POST", "/api/apikey/login"))["org_info"][0]["id"]
    return found


async def test_register_gets_or_creates_projects_and_datasets(api: Api) -> None:
    org_id, name = await _org_id(api), unique_name("reg")
    project = (await api.ok("POST", "/api/project/register", {"project_name": name, "org_id": org_id}))[
        "project"
    ]
    assert (project["name"], project["org_id"]) == (name, org_id)
    again = await api.ok("POST", "/api/project/register", {"project_name": name, "org_id": org_id})
    assert again == {"project": project}

    body = {
        "project_name": name,
        "org_id": org_id,
        "dataset_name": "golden",
        "description": "d",
        "metadata": {"a": 1},
    }
    made = await api.ok("POST", "/api/dataset/register", body)
    assert made["project"] == project
    assert (made["dataset"]["name"], made["dataset"]["description"], made["dataset"]["metadata"]) == ("golden", "d", {"a": 1})  # fmt: skip
    by_id = await api.ok(
        "POST", "/api/dataset/register", {"project_id": project["id"], "dataset_name": "golden"}
    )
    assert by_id["dataset"] == made["dataset"]
    assert await api.ok("GET", f"/v1/dataset/{made['dataset']['id']}") == made["dataset"]


async def test_register_experiment_names_reuse_and_base(api: Api) -> None:
    name = unique_name("reg-exp")
    first = await api.ok("POST", "/api/experiment/register", {"project_name": name, "experiment_name": "run", "ancestor_commits": ["abc"]})  # fmt: skip
    second = await api.ok("POST", "/api/experiment/register", {"project_name": name, "experiment_name": "run", "base_experiment": "run"})  # fmt: skip
    assert (first["experiment"]["name"], second["experiment"]["name"]) == ("run", "run-1")
    assert second["experiment"]["base_exp_id"] == first["experiment"]["id"]
    reused = await api.ok("POST", "/api/experiment/register", {"project_name": name, "experiment_name": "run", "update": True})  # fmt: skip
    assert reused["experiment"] == first["experiment"]

    missing = await api.call(
        "POST", "/api/experiment/register", {"project_name": name, "base_experiment": "nope"}
    )
    assert missing.status == 400 and "base experiment 'nope' not found" in missing.text


async def test_register_refuses_other_orgs(api: Api) -> None:
    project = await api.project()
    foreign = await api.call("POST", "/api/dataset/register", {"project_id": project["id"], "dataset_name": "x"}, key=api.emulator.other_org_key)  # fmt: skip
    assert foreign.status == 404
    wrong_org = await api.call("POST", "/api/project/register", {"project_name": "x", "org_id": "not-mine"})
    assert (wrong_org.status, wrong_org.text) == (404, "org not-mine not found")
    assert (await api.call("POST", "/api/dataset/register", {"project_name": "x"})).status == 400


async def _experiment(api: Api, project_id: str, name: str, rows: list[dict[str, Any]], **extra: Any) -> str:
    experiment_id: str = (await api.ok("POST", "/v1/experiment", {"project_id": project_id, "name": name, **extra}))["id"]  # fmt: skip
    await api.insert("experiment", experiment_id, rows)
    return experiment_id


async def test_summaries_and_their_switches(api: Api) -> None:
    project = await api.project()
    pid = project["id"]
    rows = [{"input": n, "scores": {"s": n / 4}, "metrics": {"start": 10, "end": 10 + n, "prompt_tokens": n}} for n in range(3)]  # fmt: skip
    older = await _experiment(api, pid, "older", [{**r, "scores": {"s": 0.5}} for r in rows])
    base = await _experiment(api, pid, "base", [{**r, "scores": {"s": 0.0}} for r in rows])
    current = await _experiment(api, pid, "current", rows, base_exp_id=older)

    plain = await api.ok("GET", f"/v1/experiment/{current}/summarize")
    assert plain == {
        "project_name": project["name"], "experiment_name": "current",
        "project_url": f"{api.emulator.url}/app/local/p/{project['name']}",
        "experiment_url": f"{api.emulator.url}/app/local/p/{project['name']}/experiments/current",
        "comparison_experiment_name": None, "scores": None, "metrics": None,
    }  # fmt: skip
    stored_base = await api.ok(
        "GET", f"/v1/experiment/{current}/summarize", params={"summarize_scores": "true"}
    )
    assert stored_base["comparison_experiment_name"] == "older"  # base_exp_id wins over the newest
    assert stored_base["scores"] == {"s": {"name": "s", "score": 0.25, "diff": -0.25, "improvements": 0, "regressions": 2}}  # fmt: skip
    assert stored_base["metrics"]["duration"] == {"name": "duration", "metric": 1.0, "unit": "s", "diff": 0.0, "improvements": 0, "regressions": 0}  # fmt: skip
    assert stored_base["metrics"]["prompt_tokens"]["metric"] == 1.0
    chosen = await api.ok("GET", f"/v1/experiment/{current}/summarize", params={"summarize_scores": "true", "comparison_experiment_id": base})  # fmt: skip
    assert (chosen["comparison_experiment_name"], chosen["scores"]["s"]["improvements"]) == ("base", 2)

    assert await api.ok("POST", "/api/base_experiment/get_id", {"id": base}) == {"base_exp_id": older, "base_exp_name": "older"}  # fmt: skip
    none = await api.call("POST", "/api/base_experiment/get_id", {"id": older})
    assert (none.status, none.text) == (400, f"experiment {older} has no base experiment")
    alone = await api.ok("GET", "/experiment-comparison2", params={"experiment_id": current})
    assert alone["scores"] == {"s": {"name": "s", "score": 0.25, "improvements": 0, "regressions": 0}}
    against = await api.ok("GET", "/experiment-comparison2", params={"experiment_id": current, "base_experiment_id": base})  # fmt: skip
    assert against["scores"] == chosen["scores"] and against["metrics"] == chosen["metrics"]
    hidden = await api.call("GET", f"/v1/experiment/{current}/summarize", key=api.emulator.other_org_key)
    assert hidden.status == 404


async def test_dataset_summary_counts_live_rows(api: Api) -> None:
    project = await api.project()
    dataset = await api.dataset(project["id"])
    await api.insert("dataset", dataset["id"], [{"id": str(n), "input": n} for n in range(4)])
    await api.insert(
        "dataset", dataset["id"], [{"id": "0", "_object_delete": True}, {"id": "1", "input": "again"}]
    )
    summary = await api.ok("GET", f"/v1/dataset/{dataset['id']}/summarize", params={"summarize_data": "true"})
    assert (summary["dataset_name"], summary["data_summary"]) == (dataset["name"], {"total_records": 3})
    assert summary["dataset_url"] == f"{summary['project_url']}/datasets/{dataset['name']}"
    bare = await api.ok("GET", f"/v1/dataset/{dataset['id']}/summarize")
    assert bare["data_summary"] is None
    bad = await api.call("GET", f"/v1/dataset/{dataset['id']}/summarize", params={"summarize_data": "maybe"})
    assert (bad.status, bad.text) == (400, "summarize_data: expected true or false")
