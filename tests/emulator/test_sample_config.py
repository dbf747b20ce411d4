"""The sample project's configuration objects (``sample_config.py``): every kind is there, each
reads back through the generated client with strict validation, the cross references hold (the
agent prompt calls the tool function by id, the view filters on a tag and sorts by a score), the
summarize prompt has two versions, and loading the sample again changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from braintrust_api import Braintrust

from pipeline.emulator.auth import DEFAULT_KEYS
from pipeline.emulator.sample import load_sample
from pipeline.emulator.server import RunningServer, ServerConfig


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("sample-config") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), sample_traces=5, seed=3)) as running:
        yield running


def _everything(bt: Braintrust, project_id: str) -> dict[str, list[dict[str, object]]]:
    """Every configuration object of the project by kind, as JSON, auto-paged one at a time."""
    found = {
        kind: [
            o.model_dump(mode="json", by_alias=True, exclude_unset=True)
            for o in getattr(bt, kind).list(project_id=project_id, limit=1)
        ]
        for kind in ("prompts", "functions", "project_scores", "project_tags")
    }
    found["span_iframes"] = [
        o.model_dump(mode="json", exclude_unset=True) for o in bt.span_iframes.list(limit=1)
    ]
    found["views"] = [
        o.model_dump(mode="json", by_alias=True, exclude_unset=True)
        for o in bt.views.list(object_type="project", object_id=project_id, limit=1)
    ]
    return found


def test_sample_project_has_every_kind_with_its_references(server: RunningServer) -> None:
    key = DEFAULT_KEYS[0].key
    with Braintrust(api_key=key, base_url=server.url, max_retries=0, http_client=httpx.Client(trust_env=False), _strict_response_validation=True) as bt:  # fmt: skip
        project = next(iter(bt.projects.list(project_name="sample-project")))
        found = _everything(bt, project.id)
        by_slug = {o["slug"]: o for o in found["prompts"] + found["functions"]}
        assert sorted(by_slug) == ["factuality-judge", "helpfulness-judge", "lookup-order", "score-latency", "summarize", "support-agent"]  # fmt: skip
        assert by_slug["support-agent"]["prompt_data"]["tool_functions"] == [{"type": "function", "id": by_slug["lookup-order"]["id"]}]  # fmt: skip
        assert by_slug["score-latency"]["function_data"]["data"]["type"] == "bundle"
        judges = [o for o in found["functions"] if o["function_type"] == "scorer" and o["function_data"]["type"] == "prompt"]  # fmt: skip
        assert len(judges) == 2
        assert {o["name"] for o in found["project_scores"]} == {"accuracy", "tone"}
        assert {o["name"] for o in found["project_tags"]} == {"prod", "regression"}
        (view,) = found["views"]
        assert view["view_data"]["search"]["tag"] == ["regression"]
        assert view["view_data"]["search"]["sort"][0]["field"] == ["scores", "accuracy"]
        assert [o["name"] for o in found["span_iframes"]] == ["Trace viewer"]
    with httpx.Client(
        base_url=server.url, trust_env=False, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        automations = http.get("/v1/project_automation", params={"project_id": project.id}).json()["objects"]
        assert [a["name"] for a in automations] == ["Low accuracy alert"]
        source = {"op": "function", "name": {"op": "ident", "name": ["project_prompts"]}, "args": [{"op": "literal", "value": project.id}]}  # fmt: skip
        audit = http.post("/btql", json={"query": {"from": source, "select": [{"op": "star"}]}, "audit_log": True}).json()["data"]  # fmt: skip
        models = [r["prompt_data"]["options"]["model"] for r in audit if r["slug"] == "summarize"]
        assert models == ["gpt-4o-mini", "gpt-4o"]

        before = http.get("/v1/prompt", params={"project_id": project.id}).json()
        load_sample(server.store, DEFAULT_KEYS[0].org, DEFAULT_KEYS[0].email, 5, seed=3)
        assert http.get("/v1/prompt", params={"project_id": project.id}).json() == before
        again = http.post("/btql", json={"query": {"from": source, "select": [{"op": "star"}]}, "audit_log": True}).json()["data"]  # fmt: skip
        assert again == audit
