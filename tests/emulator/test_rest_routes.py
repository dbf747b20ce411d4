"""The REST routes real clients call beside the object lists: the API root, feedback, custom
roles, ACL batch updates, organizations, and create bodies with fields the spec does not list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from pipeline.emulator.roles import OWNER_ROLE_ID, SYSTEM_ROLES
from pipeline.emulator.server import RunningServer, ServerConfig
from pipeline.querylang.ast import from_object
from tests.conftest import Emulator
from tests.emulator.conftest import Api


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of this module's own: roles and org renames would show in the shared one."""
    with RunningServer(ServerConfig(port=0, db=str(tmp_path_factory.mktemp("routes") / "e.db"))) as server:
        yield server


@pytest.fixture
async def own(own_server: RunningServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, Emulator(url=own_server.url))


async def test_api_root_answers_without_a_key(api: Api) -> None:
    for path in ("/v1", "/v1/", "//v1"):
        reply = await api.call("GET", path, key=None)
        assert (reply.status, reply.text) == (200, "Hello, World!")
        assert reply.headers["Content-Type"].startswith("text/plain")


async def test_feedback_merges_into_the_rows(api: Api) -> None:
    project = await api.project()
    pid = project["id"]
    await api.insert(
        "project_logs", pid, [{"id": "a", "input": 1, "scores": {"old": 0.5}, "metadata": {"m": 1}}]
    )
    body = {
        "feedback": [
            {"id": "a", "scores": {"new": 1}, "expected": "yes", "comment": "good", "metadata": {"by": "qa"}, "source": "app"},
            {"id": "a", "comment": "twice", "tags": ["t"], "unlisted": "ignored"},
        ]
    }  # fmt: skip
    assert await api.ok("POST", f"/v1/project_logs/{pid}/feedback", body) == {"status": "success"}
    (row,) = await api.all_rows({"from": from_object("project_logs", pid)})
    assert row["scores"] == {"old": 0.5, "new": 1} and row["expected"] == "yes" and row["tags"] == ["t"]
    assert row["input"] == 1 and row["metadata"] == {"m": 1}  # feedback metadata is not the event's
    first, second = row["comments"]
    assert first == {"id": first["id"], "created": first["created"], "origin": {"id": "a"}, "comment": {"text": "good"},
                     "user_id": first["user_id"], "source": "app", "metadata": {"by": "qa"}}  # fmt: skip
    assert second["comment"] == {"text": "twice"} and second["source"] == "external"
    assert [a["update"] for a in row["audit_data"]] == [
        {"scores": {"new": 1}, "expected": "yes"},
        {"tags": ["t"]},
    ]
    # a later insert merging into the row keeps what feedback attached
    await api.insert("project_logs", pid, [{"id": "a", "output": 2, "_is_merge": True}])
    (merged,) = await api.all_rows({"from": from_object("project_logs", pid)})
    assert (
        merged["output"] == 2 and merged["comments"] == row["comments"] and merged["scores"] == row["scores"]
    )


async def test_feedback_on_datasets_and_experiments(api: Api) -> None:
    project = await api.project()
    dataset = await api.dataset(project["id"])
    experiment = await api.ok("POST", "/v1/experiment", {"project_id": project["id"], "name": "fb"})
    await api.insert("dataset", dataset["id"], [{"id": "d", "input": 1}])
    await api.insert("experiment", experiment["id"], [{"id": "e", "input": 1}])
    await api.ok("POST", f"/v1/dataset/{dataset['id']}/feedback", {"feedback": [{"id": "d", "tags": ["x"], "comment": "c"}]})  # fmt: skip
    await api.ok("POST", f"/v1/experiment/{experiment['id']}/feedback", {"feedback": [{"id": "e", "scores": {"s": 0}}]})  # fmt: skip
    (d,) = await api.all_rows({"from": from_object("dataset", dataset["id"])})
    assert d["tags"] == ["x"] and [c["comment"] for c in d["comments"]] == [{"text": "c"}]
    (e,) = await api.all_rows({"from": from_object("experiment", experiment["id"])})
    assert e["scores"] == {"s": 0} and "comments" not in e
    fetched = await api.ok("POST", f"/v1/dataset/{dataset['id']}/fetch", {})
    assert fetched["events"][0]["tags"] == ["x"]


async def test_feedback_refusals(api: Api) -> None:
    project = await api.project()
    pid = project["id"]
    await api.insert("project_logs", pid, [{"id": "a", "input": 1}])
    cases = [
        ({"feedback": [{"id": "missing", "scores": {"s": 1}}]}, 404, "missing not found"),
        (
            {"feedback": [{"id": "a", "scores": {"s": 2}}]},
            400,
            "body.feedback[0].scores.s: must be at most 1",
        ),
        ({"feedback": [{"scores": {"s": 1}}]}, 400, "body.feedback[0].id: is required"),
        ({"feedback": [{"id": "a", "source": "robot"}]}, 400, "body.feedback[0].source: expected one of"),
        ({}, 400, "body.feedback: is required"),
    ]
    for body, status, message in cases:
        reply = await api.call("POST", f"/v1/project_logs/{pid}/feedback", body)
        assert reply.status == status and message in reply.text, (body, reply.text)
    (row,) = await api.all_rows({"from": from_object("project_logs", pid)})
    assert "scores" not in row or row["scores"] is None  # nothing was written


async def test_custom_roles(own: Api) -> None:
    role = await own.ok("POST", "/v1/role", {"name": "auditor", "description": "reads", "member_permissions": [{"permission": "read"}], "extra": 1})  # fmt: skip
    assert role == {
        "id": role["id"], "org_id": role["org_id"], "user_id": role["user_id"], "created": role["created"],
        "name": "auditor", "description": "reads", "member_permissions": [{"permission": "read", "restrict_object_type": None}],
        "member_roles": None, "deleted_at": None,
    }  # fmt: skip
    assert await own.ok("POST", "/v1/role", {"name": "auditor", "description": "other"}) == role
    replaced = await own.ok("PUT", "/v1/role", {"name": "auditor", "description": "other"})
    assert replaced == {**role, "description": "other", "member_permissions": None}
    patched = await own.ok("PATCH", f"/v1/role/{role['id']}", {
        "add_member_permissions": [{"permission": "update", "restrict_object_type": "dataset"}, {"permission": "read"}],
        "add_member_roles": [OWNER_ROLE_ID],
    })  # fmt: skip
    assert patched["member_permissions"] == [
        {"permission": "update", "restrict_object_type": "dataset"}, {"permission": "read", "restrict_object_type": None},
    ]  # fmt: skip
    assert patched["member_roles"] == [OWNER_ROLE_ID]
    removed = await own.ok("PATCH", f"/v1/role/{role['id']}", {"remove_member_permissions": [{"permission": "read"}], "remove_member_roles": [OWNER_ROLE_ID], "name": "reader"})  # fmt: skip
    assert removed["member_permissions"] == [{"permission": "update", "restrict_object_type": "dataset"}]
    assert removed["member_roles"] == [] and removed["name"] == "reader"
    assert await own.ok("GET", f"/v1/role/{role['id']}") == removed
    me = await own.ok("POST", "/api/self/me", key=own.emulator.member_key)
    project = await own.ok("POST", "/v1/project", {"name": "roles"})
    acl = await own.ok("POST", "/v1/acl", {"object_type": "project", "object_id": project["id"], "user_id": me["id"], "role_id": role["id"]})  # fmt: skip
    assert acl["role_id"] == role["id"]
    member = own.emulator.member_key
    assert (await own.call("POST", "/v1/role", {"name": "mine"}, key=member)).status == 403
    assert (await own.call("PATCH", f"/v1/role/{role['id']}", {"name": "x"}, key=member)).status == 403
    assert (await own.call("DELETE", f"/v1/role/{role['id']}", key=member)).status == 403
    assert (await own.ok("GET", f"/v1/role/{role['id']}", key=member))["name"] == "reader"
    system = SYSTEM_ROLES[0]["id"]
    refused = await own.call("PATCH", f"/v1/role/{system}", {"name": "Boss"})
    assert refused.status == 403 and "system role" in refused.text
    assert (await own.call("DELETE", f"/v1/role/{system}")).status == 403
    bad = [
        ({"name": ""}, "body.name: must not be empty"),
        ({"name": "x", "member_permissions": [{"permission": "fly"}]}, "body.member_permissions[0].permission: expected one of"),
        ({"name": "x", "member_roles": ["00000000-0000-4000-8000-000000000000"]}, "unknown role"),
    ]  # fmt: skip
    for body, message in bad:
        reply = await own.call("POST", "/v1/role", body)
        assert reply.status == 400 and message in reply.text, (body, reply.text)
    deleted = await own.ok("DELETE", f"/v1/role/{role['id']}")
    assert deleted["deleted_at"] is not None
    assert (await own.call("GET", f"/v1/role/{role['id']}")).status == 404
    assert [r["id"] for r in (await own.ok("GET", "/v1/role"))["objects"]] == [r["id"] for r in SYSTEM_ROLES]


async def test_acl_batch_update(own: Api) -> None:
    me = await own.ok("POST", "/api/self/me", key=own.emulator.member_key)
    project = await own.ok("POST", "/v1/project", {"name": "batch"})
    read = {"object_type": "project", "object_id": project["id"], "user_id": me["id"], "permission": "read"}
    update = {**read, "permission": "update"}
    first = await own.ok("POST", "/v1/acl/batch_update", {"add_acls": [read, update]})
    assert [a["permission"] for a in first["added_acls"]] == ["read", "update"] and first[
        "removed_acls"
    ] == []
    again = await own.ok("POST", "/v1/acl/batch-update", {"add_acls": [read], "remove_acls": [update, {**update, "permission": "delete"}]})  # fmt: skip
    assert again == {"added_acls": [first["added_acls"][0]], "removed_acls": [first["added_acls"][1]]}
    listed = await own.ok("GET", "/v1/acl", params={"object_type": "project", "object_id": project["id"]})
    assert listed["objects"] == [first["added_acls"][0]]
    refused = await own.call(
        "POST", "/v1/acl/batch_update", {"add_acls": [update]}, key=own.emulator.member_key
    )
    assert refused.status == 403
    invalid = await own.call(
        "POST", "/v1/acl/batch_update", {"add_acls": [update, {**read, "permission": None}]}
    )
    assert (
        invalid.status == 400
        and "body.add_acls[1]: give exactly one of permission and role_id" in invalid.text
    )
    assert (await own.ok("GET", "/v1/acl", params={"object_type": "project", "object_id": project["id"]}))["objects"] == listed["objects"]  # fmt: skip
    assert await own.ok("POST", "/v1/acl/batch_update", {}) == {"added_acls": [], "removed_acls": []}


async def test_organization_patch_and_rename(own: Api) -> None:
    (org,) = (await own.ok("GET", "/v1/organization"))["objects"]
    assert org == {"id": org["id"], "name": "local", "api_url": None, "is_universal_api": None,
                   "is_dataplane_private": None, "proxy_url": None, "realtime_url": None,
                   "image_rendering_mode": None, "created": None}  # fmt: skip
    member = own.emulator.member_key
    assert (
        await own.call("PATCH", f"/v1/organization/{org['id']}", {"api_url": "x"}, key=member)
    ).status == 403
    bad = await own.call("PATCH", f"/v1/organization/{org['id']}", {"image_rendering_mode": "sometimes"})
    assert bad.status == 400 and "image_rendering_mode" in bad.text
    patched = await own.ok("PATCH", f"/v1/organization/{org['id']}", {"name": "renamed", "image_rendering_mode": "blocked"})  # fmt: skip
    assert patched == {**org, "name": "renamed", "image_rendering_mode": "blocked"}
    assert await own.ok("GET", f"/v1/organization/{org['id']}") == patched
    assert (await own.ok("POST", "/api/self/me", key=member))["organizations"][0]["name"] == "renamed"
    named = await own.ok("GET", "/v1/project", headers={"x-bt-org-name": "renamed"})
    assert named["objects"] and {p["org_id"] for p in named["objects"]} == {org["id"]}
    assert (await own.call("GET", "/v1/project", headers={"x-bt-org-name": "local"})).status == 401
    created = await own.ok("POST", "/v1/project", {"name": "in-renamed", "org_name": "renamed"})
    assert created["org_id"] == org["id"]
    back = await own.ok("PATCH", f"/v1/organization/{org['id']}", {"name": "local"})
    assert back["image_rendering_mode"] == "blocked"


async def test_create_accepts_fields_the_spec_does_not_list(api: Api) -> None:
    settings = {"comparison_key": "input", "baseline_experiment_id": None}
    project = await api.ok("POST", "/v1/project", {"name": f"extra-{id(settings)}", "future_field": 1, "settings": settings, "id": "ignored", "created": "2020-01-01T00:00:00Z"})  # fmt: skip
    assert (
        project["settings"] == settings
        and project["id"] != "ignored"
        and project["created"] != "2020-01-01T00:00:00Z"
    )
    assert "future_field" not in project and "future_field" not in await api.ok(
        "GET", f"/v1/project/{project['id']}"
    )
    dataset = await api.ok("POST", "/v1/dataset", {"project_id": project["id"], "name": "d", "unknown": [1]})
    assert "unknown" not in dataset
    patched = await api.ok("PATCH", f"/v1/dataset/{dataset['id']}", {"description": "x", "unknown": 2})
    assert patched == {**dataset, "description": "x"}
    experiment = await api.ok("POST", "/v1/experiment", {"project_id": project["id"], "name": "e", "repo_info": {"commit": "abc", "new": 1}})  # fmt: skip
    assert experiment["commit"] == "abc"
    wrong = [
        ("/v1/project", {"name": "a", "settings": {"comparison_key": 5}}, "body.settings.comparison_key: expected string"),
        ("/v1/dataset", {"project_id": project["id"], "name": "d", "tags": "t"}, "body.tags: expected array"),
        ("/v1/experiment", {"project_id": project["id"], "public": "yes"}, "body.public: expected boolean"),
        ("/v1/experiment", {"project_id": project["id"], "base_exp_id": "nope"}, "body.base_exp_id: expected a uuid"),
    ]  # fmt: skip
    for path, body, message in wrong:
        reply = await api.call("POST", path, body)
        assert reply.status == 400 and message in reply.text, (path, reply.text)
