"""Keys of one org can neither read nor write another org's data, through any route.

One table of requests made with the other org's key against org A's objects covers every
route of the app (checked against ``ROUTES``); afterwards org A's objects, rows and ACLs
are exactly as before.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from pipeline.emulator.access import OWNER_ROLE_ID
from pipeline.emulator.app import ROUTES
from pipeline.querylang.ast import from_object
from tests.conftest import unique_name
from tests.emulator.conftest import Api

#: Routes that hold no org data (checked separately below or not at all).
_NO_ORG_DATA = {("GET", "/version"), ("GET", "/v1")}


async def snapshot(api: Api, ids: dict[str, str]) -> Any:
    objects = {
        kind: await api.ok("GET", f"/v1/{kind}/{ids[kind]}") for kind in ("project", "dataset", "experiment")
    }
    rows = {
        t: sorted(
            await api.all_rows({"from": from_object(t, ids[t if t != "project_logs" else "project"])}),
            key=lambda r: r["id"],
        )
        for t in ("project_logs", "dataset", "experiment")
    }
    acls = await api.ok("GET", "/v1/acl", params={"object_type": "project", "object_id": ids["project"]})
    return objects, rows, acls


async def test_other_org_cannot_read_or_write(api: Api) -> None:
    owner = await api.ok("POST", "/api/self/me")
    member = await api.ok("POST", "/api/self/me", key=api.emulator.member_key)
    project = await api.project()
    pid = project["id"]
    dataset = await api.dataset(pid)
    experiment = await api.ok("POST", "/v1/experiment", {"project_id": pid, "name": "iso"})
    ids = {"project": pid, "dataset": dataset["id"], "experiment": experiment["id"]}
    await api.insert("project_logs", pid, [{"id": "log1", "input": "secret"}])
    await api.insert("dataset", dataset["id"], [{"id": "ds1", "input": "secret"}])
    await api.insert("experiment", experiment["id"], [{"id": "ex1", "input": "secret"}])
    acl = await api.ok("POST", "/v1/acl", {"object_type": "project", "object_id": pid, "user_id": member["id"], "role_id": OWNER_ROLE_ID})  # fmt: skip
    role = await api.ok("POST", "/v1/role", {"name": unique_name("role"), "member_roles": [OWNER_ROLE_ID]})
    org_a = owner["organizations"][0]
    prompt = await api.ok("POST", "/v1/prompt", {"project_id": pid, "name": "secret", "slug": "secret"})
    ai_secret = await api.ok(
        "POST", "/v1/ai_secret", {"name": unique_name("key"), "secret": "sk-org-a-0123456789"}
    )
    view = {"object_type": "project", "object_id": pid}
    await api.ok("POST", "/v1/view", {**view, "view_type": "logs", "name": "secret"})
    before = await snapshot(api, ids), await api.ok("GET", "/v1/prompt", params={"project_id": pid})

    grant = {"object_type": "project", "object_id": pid, "user_id": member["id"], "role_id": OWNER_ROLE_ID}
    overflow_row = {
        "object_ids": {"project_id": pid, "log_id": "g"},
        "is_delete": False,
        "input_row": {"byte_size": 5},
    }
    overflow = {"content_type": "application/json", "size_bytes": 10, "rows": [overflow_row]}
    attachment = {"key": str(uuid.uuid4()), "filename": "secret.png", "content_type": "image/png", "org_id": org_a["id"]}  # fmt: skip
    await api.ok("POST", "/attachment", attachment)
    cases: list[tuple[str, str, Any, dict[str, str] | None, int]] = [
        ("POST", "/btql", {"query": {"from": from_object("project_logs", pid)}}, None, 400),
        ("POST", "/btql", {"query": f"SELECT * FROM dataset('{dataset['id']}')"}, None, 400),
        (
            "POST",
            "/logs3",
            {"rows": [{"id": "log1", "project_id": pid, "log_id": "g", "input": "x"}], "api_version": 2},
            None,
            404,
        ),
        (
            "POST",
            "/v1/insert",
            {"project_logs": {pid: {"events": [{"id": "log1", "input": "x"}]}}},
            None,
            404,
        ),
        (
            "POST",
            f"/v1/project_logs/{pid}/insert",
            {"events": [{"id": "log1", "_object_delete": True}]},
            None,
            404,
        ),
        ("POST", f"/v1/dataset/{dataset['id']}/insert", {"events": [{"id": "ds1", "input": "x"}]}, None, 404),
        ("GET", f"/v1/experiment/{experiment['id']}/fetch", None, None, 404),
        ("POST", f"/v1/dataset/{dataset['id']}/fetch", {"limit": 10}, None, 404),
        ("POST", "/v1/dataset", {"project_id": pid, "name": "intruder"}, None, 404),
        ("POST", "/v1/experiment", {"project_id": pid, "name": "intruder"}, None, 404),
        ("GET", f"/v1/project/{pid}", None, None, 404),
        ("PATCH", f"/v1/dataset/{dataset['id']}", {"description": "owned"}, None, 404),
        ("DELETE", f"/v1/experiment/{experiment['id']}", None, None, 404),
        ("GET", "/v1/acl", None, {"object_type": "project", "object_id": pid}, 404),
        ("POST", "/v1/acl", {**grant, "permission": "read", "role_id": None}, None, 404),
        ("DELETE", "/v1/acl", grant, None, 404),
        ("GET", f"/v1/acl/{acl['id']}", None, None, 404),
        ("DELETE", f"/v1/acl/{acl['id']}", None, None, 404),
        ("GET", "/v1/acl/list_org", None, {"org_name": org_a["name"]}, 404),
        (
            "POST",
            "/v1/acl/batch_update",
            {"add_acls": [{**grant, "permission": "read", "role_id": None}]},
            None,
            404,
        ),
        ("POST", "/v1/acl/batch-update", {"remove_acls": [grant]}, None, 404),
        ("POST", "/v1/role", {"name": "intruder", "org_name": org_a["name"]}, None, 404),
        ("PUT", "/v1/role", {"name": role["name"], "org_name": org_a["name"]}, None, 404),
        ("GET", f"/v1/role/{role['id']}", None, None, 404),
        ("PATCH", f"/v1/role/{role['id']}", {"description": "owned"}, None, 404),
        ("DELETE", f"/v1/role/{role['id']}", None, None, 404),
        ("POST", "/v1/prompt", {"project_id": pid, "name": "secret", "slug": "secret"}, None, 404),
        ("PUT", "/v1/prompt", {"project_id": pid, "name": "secret", "slug": "secret"}, None, 404),
        ("GET", f"/v1/prompt/{prompt['id']}", None, None, 404),
        ("PATCH", f"/v1/prompt/{prompt['id']}", {"description": "owned"}, None, 404),
        ("DELETE", f"/v1/prompt/{prompt['id']}", None, None, 404),
        ("GET", "/v1/view", None, view, 404),
        ("POST", "/v1/group", {"name": "intruder", "org_name": org_a["name"]}, None, 404),
        ("GET", f"/v1/ai_secret/{ai_secret['id']}", None, None, 404),
        ("PATCH", f"/v1/ai_secret/{ai_secret['id']}", {"secret": "sk-intruder"}, None, 404),
        ("DELETE", "/v1/ai_secret", {"name": ai_secret["name"], "org_name": org_a["name"]}, None, 404),
        ("DELETE", f"/v1/ai_secret/{ai_secret['id']}", None, None, 404),
        ("GET", f"/v1/user/{owner['id']}", None, None, 404),
        ("GET", f"/v1/organization/{org_a['id']}", None, None, 404),
        ("PATCH", f"/v1/organization/{org_a['id']}", {"name": "owned"}, None, 404),
        (
            "POST",
            f"/v1/project_logs/{pid}/feedback",
            {"feedback": [{"id": "log1", "scores": {"s": 1}}]},
            None,
            404,
        ),
        (
            "POST",
            f"/v1/dataset/{dataset['id']}/feedback",
            {"feedback": [{"id": "ds1", "comment": "x"}]},
            None,
            404,
        ),
        # The SDKs' overflow path, app routes and summaries.
        ("POST", "/logs3/overflow", overflow, None, 404),
        ("PUT", "/_emulator/overflow/forged-token", {"rows": []}, None, 403),
        # Attachments: metadata, uploads and status of org A's keys; forged signed URLs.
        ("GET", "/attachment", None, {k: str(v) for k, v in attachment.items()}, 404),
        ("POST", "/attachment", attachment, None, 404),
        ("POST", "/attachment/status", {**attachment, "status": {"upload_status": "done"}}, None, 404),
        ("PUT", "/_emulator/attachment/forged-token", {"rows": []}, None, 403),
        ("GET", "/_emulator/attachment/forged-token", None, None, 403),
        (
            "POST",
            "/api/project/register",
            {"project_name": project["name"], "org_id": org_a["id"]},
            None,
            404,
        ),
        ("POST", "/api/dataset/register", {"project_id": pid, "dataset_name": "intruder"}, None, 404),
        ("POST", "/api/experiment/register", {"project_id": pid, "experiment_name": "intruder"}, None, 404),
        ("POST", "/api/experiment/get", {"project_id": pid, "experiment_name": "iso"}, None, 404),
        (
            "POST",
            "/api/experiment/get",
            {"project_name": project["name"], "org_name": org_a["name"]},
            None,
            404,
        ),
        (
            "POST",
            "/api/self/get_object_info",
            {"object_type": "dataset", "object_ids": [dataset["id"]]},
            None,
            200,
        ),
        ("GET", "/api/project", None, {"id": pid}, 404),
        ("GET", "/dataset-summary", None, {"dataset_id": dataset["id"]}, 404),
        ("POST", "/api/base_experiment/get_id", {"id": experiment["id"]}, None, 404),
        ("GET", "/experiment-comparison2", None, {"experiment_id": experiment["id"]}, 404),
        ("GET", f"/v1/experiment/{experiment['id']}/summarize", None, {"summarize_scores": "true"}, 404),
        ("GET", f"/v1/dataset/{dataset['id']}/summarize", None, {"summarize_data": "true"}, 404),
    ]
    for method, path, body, params, status in cases:
        reply = await api.call(method, path, body, key=api.emulator.other_org_key, params=params)
        assert reply.status == status, (method, path, reply.status, reply.text)
        assert "secret" not in reply.text.replace("ai_secret", "")  # org A's content, never a kind's name

    hidden = {"object_type": "dataset", "object_ids": [dataset["id"]]}
    assert (
        await api.call("POST", "/api/self/get_object_info", hidden, key=api.emulator.other_org_key)
    ).json == []
    assert len(await api.ok("POST", "/api/self/get_object_info", hidden)) == 1

    # Lists and identity answer 200 but show nothing of org A.
    listed: list[tuple[str, str, dict[str, str] | None]] = [
        ("GET", "/v1/project", None),
        ("GET", "/v1/dataset", {"project_id": pid}),
        ("GET", "/v1/experiment", {"ids": experiment["id"]}),
        ("POST", "/api/apikey/login", None),
        ("POST", "/api/self/me", None),
        ("GET", "/api/self/me", None),
        ("GET", "/ping", None),
        ("GET", "/v1/role", None),
        ("GET", "/v1/acl/list_org", None),
        ("GET", "/v1/user", None),
        ("GET", "/v1/organization", None),
        ("GET", "/v1/prompt", None),
    ]
    for method, path, params in listed:
        reply = await api.call(method, path, key=api.emulator.other_org_key, params=params)
        assert reply.status == 200, (path, reply.text)
        for secret in (
            pid,
            dataset["id"],
            experiment["id"],
            org_a["id"],
            owner["id"],
            role["id"],
            acl["id"],
            prompt["id"],
        ):
            assert secret not in reply.text, (path, reply.text)
        cases.append((method, path, None, params, 200))

    # Impersonating a user of org A is refused too.
    reply = await api.call("GET", "/v1/project", key=api.emulator.other_org_key, headers={"x-bt-impersonate-user": owner["id"]})  # fmt: skip
    assert reply.status == 403

    assert (await snapshot(api, ids), await api.ok("GET", "/v1/prompt", params={"project_id": pid})) == before
    assert await api.ok("GET", f"/v1/role/{role['id']}") == role
    assert await api.ok("GET", f"/v1/ai_secret/{ai_secret['id']}") == ai_secret
    assert (await api.ok("GET", f"/v1/organization/{org_a['id']}"))["name"] == org_a["name"]
    await api.ok("DELETE", f"/v1/role/{role['id']}")
    covered = {(m, re.sub("/{2,}", "/", p)) for m, p, *_ in cases}
    for method, pattern, _ in ROUTES:
        if (method, pattern) in _NO_ORG_DATA:
            continue
        regex = re.compile(pattern + "/?$")
        assert any(m == method and regex.match(p) for m, p in covered), (
            f"no isolation case for {method} {pattern}"
        )
