"""Every example of the public API walkthrough, run against the emulator.

``examples/*.txt`` hold the published code as printed (the ``*_btql`` files switch on the
commented BTQL alternative; ``paginate_dataset.py.txt`` ports the TypeScript example).
Each runs as its own Python process with only its URL and key changed (plus the ids its
text says to replace), and each test checks the exact answer. Fixes for bugs in the
published text are applied by :func:`example` as explicit replacements, named in the
test that needs them.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Emulator, unique_name

EXAMPLES = Path(__file__).parent / "examples"
PUBLISHED_URL = "https://api.braintrust.dev"


def example(name: str, emulator: Emulator, tmp_path: Path, fixes: dict[str, str] | None = None) -> Path:
    """The example's text with the emulator's URL (and ``fixes``) in place, as a script."""
    text = (EXAMPLES / name).read_text()
    assert PUBLISHED_URL in text
    text = text.replace(PUBLISHED_URL, emulator.url)
    for wrong, right in (fixes or {}).items():
        assert text.count(wrong) == 1, f"{name}: expected {wrong!r} once"
        text = text.replace(wrong, right)
    script = tmp_path / name.removesuffix(".txt")
    script.write_text(text)
    return script


def run(script: Path, emulator: Emulator, *args: str, code: str | None = None, **env: str) -> str:
    """Run ``script`` (or ``code`` beside it) with the key in the environment; its stdout."""
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    clean.update({"BRAINTRUST_API_KEY": emulator.key, "NO_PROXY": "*", **env})
    command = [sys.executable, "-c", code] if code else [sys.executable, str(script), *args]
    done = subprocess.run(command, cwd=script.parent, env=clean, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Rest:
    """Setting up data with plain requests (what a user of the walkthrough has at hand)."""

    def __init__(self, emulator: Emulator) -> None:
        self.url = emulator.url
        self.headers = {"Authorization": f"Bearer {emulator.key}"}

    def post(self, path: str, body: Any) -> Any:
        resp = requests.post(self.url + path, json=body, headers=self.headers, timeout=30)
        assert resp.ok, resp.text
        return resp.json()

    def get(self, path: str, **params: str) -> Any:
        resp = requests.get(self.url + path, params=params, headers=self.headers, timeout=30)
        assert resp.ok, resp.text
        return resp.json()

    def project(self) -> dict[str, Any]:
        found: dict[str, Any] = self.post("/v1/project", {"name": unique_name("walk")})
        return found

    def rows(self, object_type: str, object_id: str) -> list[dict[str, Any]]:
        query = f"select: * | from: {object_type}('{object_id}')"
        data: list[dict[str, Any]] = self.post("/btql", {"query": query})["data"]
        return data


@pytest.fixture
def rest(emulator: Emulator) -> Rest:
    return Rest(emulator)


def test_run_an_experiment(emulator: Emulator, rest: Rest, tmp_path: Path) -> None:
    out = run(example("run_experiment.py.txt", emulator, tmp_path), emulator)
    project, experiment = (ast.literal_eval(line) for line in out.splitlines())
    assert project["name"] == "rest_test" and experiment["name"] == "rest_test"
    assert experiment["project_id"] == project["id"]
    rows = rest.rows("experiment", experiment["id"])
    assert len(rows) == 10 and len({r["id"] for r in rows}) == 10
    assert all(len(r["id"]) == 32 and int(r["id"], 16) >= 0 for r in rows)
    assert {(r["input"], r["output"], json.dumps(r["scores"])) for r in rows} == {(1, 2, '{"accuracy": 0.5}')}


def _review_experiment(rest: Rest) -> str:
    """Three traces: two reviewed at the root, one not; children carry no review score."""
    experiment = rest.post("/v1/experiment", {"project_id": rest.project()["id"], "name": "review"})
    events = []
    for n, reviewed in enumerate((True, False, True)):
        root: dict[str, Any] = {"id": f"root{n}", "span_id": f"root{n}", "root_span_id": f"t{n}", "scores": {"accuracy": 1}}  # fmt: skip
        if reviewed:
            root["scores"]["response quality"] = 0.5 * n
        child = {"id": f"child{n}", "span_id": f"child{n}", "root_span_id": f"t{n}", "span_parents": [f"root{n}"], "scores": {"accuracy": 0}}  # fmt: skip
        events += [root, child]
    rest.post(f"/v1/experiment/{experiment['id']}/insert", {"events": events})
    experiment_id: str = experiment["id"]
    return experiment_id


@pytest.mark.parametrize("variant", ["review_status.py.txt", "review_status_btql.py.txt"])
def test_review_status_counts(variant: str, emulator: Emulator, rest: Rest, tmp_path: Path) -> None:
    """The BTQL variant as published queries ``experiment('<experiment_id>')``: the
    placeholder sits inside an f-string where ``{experiment_id}`` was meant; fixed here."""
    experiment_id = _review_experiment(rest)
    fixes = {'"bdec1c5e-8c00-4033-84f0-4e3aa522ecaf"': repr(experiment_id)}
    if "btql" in variant:
        fixes["'<experiment_id>'"] = "'{experiment_id}'"
    out = run(example(variant, emulator, tmp_path, fixes), emulator)
    answer = ast.literal_eval(out.strip())
    assert answer["data"] == [{"reviewed": 2, "total": 3}] and answer["cursor"] is None


@pytest.mark.parametrize("variant", ["child_span_durations.py.txt", "child_span_durations_btql.py.txt"])
def test_child_span_durations_by_trace_metadata(variant: str, emulator: Emulator, rest: Rest, tmp_path: Path) -> None:  # fmt: skip
    project_id = rest.project()["id"]
    spans = []
    # the example skips a span whose start is 0 (falsy), so real-looking times are used
    for n, (org, start) in enumerate((("qawolf", 1000), ("acme", 1100), ("qawolf", 1200))):
        spans.append({"id": f"r{n}", "span_id": f"r{n}", "root_span_id": f"t{n}", "metadata": {"orgName": org},
                      "span_attributes": {"name": "root"}, "metrics": {"start": start, "end": start + 10 + n}})  # fmt: skip
        spans.append({"id": f"c{n}", "span_id": f"c{n}", "root_span_id": f"t{n}", "span_parents": [f"r{n}"],
                      "span_attributes": {"name": "llm"}, "metrics": {"start": start + 1, "end": start + 2 + n}})  # fmt: skip
    rest.post(f"/v1/project_logs/{project_id}/insert", {"events": spans})
    script = example(variant, emulator, tmp_path)
    out = run(script, emulator, "--project-id", project_id)
    assert [line for line in out.splitlines() if line.startswith(("Duration", "Average"))] == [
        "Duration: 10ms", "Duration: 12ms", "Average duration: 11.0ms",
    ]  # fmt: skip
    out = run(script, emulator, "--project-id", project_id, "--span-name", "llm")
    assert [line for line in out.splitlines() if line.startswith(("Duration", "Average"))] == [
        "Duration: 1ms", "Duration: 3ms", "Average duration: 2.0ms",
    ]  # fmt: skip


def test_paginate_a_large_dataset(emulator: Emulator, rest: Rest, tmp_path: Path) -> None:
    """The TypeScript example ported: 250 rows come back in pages of 100 through
    ``x-bt-cursor``, each once; with ``version`` the rows written later stay out."""
    project = rest.project()
    dataset = rest.post("/v1/dataset", {"project_id": project["id"], "name": "big dataset"})
    events = [{"id": f"row{n:03d}", "input": {"n": n}, "expected": "é" * (n % 3)} for n in range(250)]
    for start in range(0, 250, 125):
        rest.post(f"/v1/dataset/{dataset['id']}/insert", {"events": events[start : start + 125]})
    version = rest.rows("dataset", dataset["id"])[-1]["_xact_id"]
    rest.post(f"/v1/dataset/{dataset['id']}/insert", {"events": [{"id": "late", "input": {}}]})
    script = example("paginate_dataset.py.txt", emulator, tmp_path)
    rows = [json.loads(line) for line in run(script, emulator, project["name"], "big dataset").splitlines()]
    assert [(r["id"], r["input"], r["expected"]) for r in rows[:250]] == [
        (e["id"], e["input"], e["expected"]) for e in events
    ]
    assert [r["id"] for r in rows[250:]] == ["late"]
    pinned = run(script, emulator, project["name"], "big dataset", version).splitlines()
    assert [json.loads(line)["id"] for line in pinned] == [e["id"] for e in events]


@pytest.mark.parametrize("variant", ["delete_logs.py.txt", "delete_logs_btql.py.txt"])
def test_delete_logs(variant: str, emulator: Emulator, rest: Rest, tmp_path: Path) -> None:
    project_id = rest.project()["id"]
    events = []
    for n, user in enumerate(("doomed", "kept", "doomed")):
        events.append(
            {"id": f"r{n}", "span_id": f"r{n}", "root_span_id": f"t{n}", "metadata": {"user_id": user}}
        )
        events.append({"id": f"c{n}", "span_id": f"c{n}", "root_span_id": f"t{n}", "span_parents": [f"r{n}"]})
    rest.post(f"/v1/project_logs/{project_id}/insert", {"events": events})
    out = run(
        example(variant, emulator, tmp_path), emulator, "--project-id", project_id, "--user-id", "doomed"
    )
    assert out.splitlines() == ["Deleting 4 rows", "Deleted 4 rows"]
    assert sorted(r["id"] for r in rest.rows("project_logs", project_id)) == ["c1", "r1"]


def test_impersonate_a_user(emulator: Emulator, rest: Rest, tmp_path: Path) -> None:
    """The published Python example has three bugs, fixed here to test what it means:
    ``requests.post(..., body=...)`` is not a requests argument (``json=`` is meant);
    ``org_info["id"]`` indexes a list with a string (``org_info[0]["id"]`` is meant); and
    ``main()`` is defined but never called (called here)."""
    fixes = {"body=dict(": "json=dict(", 'org_id=org_info["id"]': 'org_id=org_info[0]["id"]'}
    script = example("impersonate.py.txt", emulator, tmp_path, fixes)
    name = unique_name("impersonated")
    (tmp_path / "named.py").write_text(script.read_text().replace('"my-project"', repr(name)))
    code = "import runpy; runpy.run_path('named.py')['main']()"
    member = requests.post(f"{emulator.url}/api/self/me", headers={"Authorization": f"Bearer {emulator.member_key}"}, timeout=30).json()  # fmt: skip
    out = run(script, emulator, code=code, ORG_NAME="local", USER_EMAIL=member["email"])
    project = ast.literal_eval(out.strip())
    assert project["name"] == name and project["user_id"] == member["id"]
    assert project["org_id"] == member["organizations"][0]["id"]
    owner_role = rest.get("/v1/role", role_name="Owner")["objects"][0]["id"]
    me = rest.post("/api/self/me", {})
    grants = rest.get("/v1/acl", object_type="organization", object_id=project["org_id"])["objects"]
    assert any(g["user_id"] == me["id"] and g["role_id"] == owner_role for g in grants)
    # the grant does not let a caller impersonate users of orgs it does not own
    other = requests.post(f"{emulator.url}/api/self/me", headers={"Authorization": f"Bearer {emulator.other_org_key}"}, timeout=30).json()  # fmt: skip
    refused = requests.get(f"{emulator.url}/v1/project", headers={**rest.headers, "x-bt-impersonate-user": other["id"]}, timeout=30)  # fmt: skip
    assert refused.status_code == 403
    assert str(uuid.UUID(project["id"])) == project["id"]
