"""Prompt and function version history: every create, replace and patch is a version with its own
``_xact_id``; ``GET /v1/prompt/{id}?version=`` and ``GET /v1/prompt?version=`` read a prompt as of
a version (named in decimal or in the SDKs' hex form); ``/btql`` over ``project_prompts`` with
``audit_log`` lists the versions. The official Python SDK's ``load_prompt`` (latest, by version,
by id) and ``get_prompt_versions`` read them back (the JavaScript SDK's ``loadPrompt``:
``test_js_sdk.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import braintrust
import httpx
import pytest
from braintrust.xact_ids import prettify_xact

from pipeline.emulator import versions
from tests.conftest import Emulator, unique_name
from tests.emulator.test_sdk import point_sdk_at


def _chat(text: str) -> dict[str, Any]:
    return {
        "prompt": {"type": "chat", "messages": [{"role": "system", "content": text}]},
        "options": {"model": "gpt-4o-mini", "params": {"temperature": 0}},
    }


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, trust_env=False, headers={"Authorization": f"Bearer {emulator.key}"}) as client:  # fmt: skip
        yield client


def _ok(reply: httpx.Response) -> Any:
    assert reply.status_code == 200, reply.text
    return reply.json()


def three_versions(http: httpx.Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A project with a prompt written three times: created, patched, replaced."""
    project = _ok(http.post("/v1/project", json={"name": unique_name("versions")}))
    body = {"project_id": project["id"], "name": "Greeter", "slug": "greeter", "prompt_data": _chat("one")}
    first = _ok(http.post("/v1/prompt", json=body))
    second = _ok(http.patch(f"/v1/prompt/{first['id']}", json={"prompt_data": _chat("two")}))
    third = _ok(http.put("/v1/prompt", json={**body, "prompt_data": _chat("three"), "description": "3"}))
    return project, [first, second, third]


def test_every_write_is_a_version_read_back_as_of_it(http: httpx.Client) -> None:
    project, made = three_versions(http)
    prompt_id = made[0]["id"]
    assert {m["id"] for m in made} == {prompt_id}
    xacts = [int(m["_xact_id"]) for m in made]
    assert xacts == sorted(set(xacts))
    assert _ok(http.get(f"/v1/prompt/{prompt_id}")) == made[2]
    for version in made:
        for name in (version["_xact_id"], prettify_xact(version["_xact_id"])):
            assert _ok(http.get(f"/v1/prompt/{prompt_id}", params={"version": name})) == version
            listed = _ok(http.get("/v1/prompt", params={"project_id": project["id"], "slug": "greeter", "version": name}))  # fmt: skip
            assert listed["objects"] == [version]
    between = str(xacts[1] + (xacts[2] - xacts[1]) // 2) if xacts[2] - xacts[1] > 1 else str(xacts[1])
    assert _ok(http.get(f"/v1/prompt/{prompt_id}", params={"version": between})) == made[1]
    before = str(xacts[0] - 1)
    assert http.get(f"/v1/prompt/{prompt_id}", params={"version": before}).status_code == 404
    assert (
        _ok(http.get("/v1/prompt", params={"project_id": project["id"], "version": before}))["objects"] == []
    )
    assert http.get(f"/v1/prompt/{prompt_id}", params={"version": "yesterday"}).status_code == 400
    assert http.get(f"/v1/prompt/{prompt_id}", params={"environment": "prod"}).status_code == 400


def test_functions_keep_versions_too(http: httpx.Client) -> None:
    project = _ok(http.post("/v1/project", json={"name": unique_name("fn-versions")}))
    body = {"project_id": project["id"], "name": "Judge", "slug": "judge", "function_type": "scorer",
            "function_data": {"type": "prompt"}, "prompt_data": _chat("judge v1")}  # fmt: skip
    first = _ok(http.post("/v1/function", json=body))
    second = _ok(http.patch(f"/v1/function/{first['id']}", json={"prompt_data": _chat("judge v2")}))
    assert _ok(http.get(f"/v1/function/{first['id']}", params={"version": first["_xact_id"]})) == first
    assert _ok(http.get(f"/v1/function/{first['id']}")) == second


def test_btql_audit_log_lists_the_versions(http: httpx.Client, emulator: Emulator) -> None:
    project, made = three_versions(http)
    source = {"op": "function", "name": {"op": "ident", "name": ["project_prompts"]}, "args": [{"op": "literal", "value": project["id"]}]}  # fmt: skip
    by_id = {"op": "eq", "left": {"op": "ident", "name": ["id"]}, "right": {"op": "literal", "value": made[0]["id"]}}  # fmt: skip
    query = {"from": source, "select": [{"op": "star"}], "filter": by_id}
    audit = _ok(http.post("/btql", json={"query": query, "audit_log": True, "use_columnstore": False}))[
        "data"
    ]
    assert [(r["_xact_id"], r["audit_data"]["action"]) for r in audit] == [
        (made[0]["_xact_id"], "upsert"), (made[1]["_xact_id"], "merge"), (made[2]["_xact_id"], "upsert"),
    ]  # fmt: skip
    assert [{k: v for k, v in r.items() if k != "audit_data"} for r in audit] == made
    assert _ok(http.post("/btql", json={"query": query}))["data"] == [made[2]]
    foreign = httpx.post(f"{emulator.url}/btql", json={"query": query, "audit_log": True}, headers={"Authorization": f"Bearer {emulator.other_org_key}"})  # fmt: skip
    assert foreign.status_code == 404
    bad = http.post("/btql", json={"query": {**query, "filter": {"op": "gt", "left": {"op": "ident", "name": ["created"]}}}})  # fmt: skip
    assert bad.status_code == 400 and "query.filter" in bad.text


def test_pretty_versions_invert_exactly() -> None:
    for xact in (1, 10**18, 1000192656880881099, 2**64 - 1):
        assert versions.parse(prettify_xact(xact)) == xact == versions.parse(str(xact))
        assert versions.prettify(xact) == prettify_xact(xact)


def test_python_sdk_loads_prompts_by_slug_version_and_id(http: httpx.Client, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    project, made = three_versions(http)
    point_sdk_at(monkeypatch, emulator.url, emulator.key)
    latest = braintrust.load_prompt(project=project["name"], slug="greeter")
    assert latest.version == made[2]["_xact_id"] and latest.id == made[0]["id"]
    assert latest.build()["messages"] == [{"role": "system", "content": "three"}]
    braintrust.login(force_login=True)  # get_prompt_versions posts through the logged-in connection
    listed = braintrust.logger.get_prompt_versions(project["id"], made[0]["id"])
    assert listed == [prettify_xact(m["_xact_id"]) for m in made]
    for version, text in zip(listed, ("one", "two", "three"), strict=True):
        old = braintrust.load_prompt(project_id=project["id"], slug="greeter", version=version)
        assert old.build()["messages"] == [{"role": "system", "content": text}]
    by_id = braintrust.load_prompt(id=made[0]["id"], version=made[0]["_xact_id"])
    assert by_id.build()["messages"] == [{"role": "system", "content": "one"}]
