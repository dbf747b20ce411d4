"""Roles, ACLs, /api/self/me and x-bt-impersonate-user over loopback."""

from __future__ import annotations

from typing import Any

from pipeline.emulator.access import IMPERSONATION_DENIED, OWNER_ROLE_ID
from tests.conftest import unique_name
from tests.emulator.conftest import Api


async def me(api: Api, key: str, **kw: Any) -> dict[str, Any]:
    found: dict[str, Any] = await api.ok("POST", "/api/self/me", key=key, **kw)
    return found


async def test_roles_are_the_built_in_three(api: Api) -> None:
    roles = (await api.ok("GET", "/v1/role"))["objects"]
    system = [r for r in roles if r["org_id"] is None]  # custom roles, if any, come first
    assert [r["name"] for r in system] == ["Owner", "Engineer", "Viewer"] and roles[-3:] == system
    assert all(r["deleted_at"] is None for r in roles)
    owner = (await api.ok("GET", "/v1/role", params={"role_name": "Owner"}))["objects"]
    assert [r["id"] for r in owner] == [OWNER_ROLE_ID]
    assert {p["permission"] for p in owner[0]["member_permissions"]} >= {"create_acls", "read", "delete"}
    assert (await api.ok("GET", "/v1/role", params={"role_name": "Nobody"}))["objects"] == []


async def test_self_me(api: Api) -> None:
    found = await me(api, api.key)
    assert found["email"] == "owner@local.test"
    assert [o["name"] for o in found["organizations"]] == ["local"]
    other = await me(api, api.emulator.other_org_key)
    assert other["id"] != found["id"] and [o["name"] for o in other["organizations"]] == ["other"]


async def test_acl_create_list_delete_and_who_may(api: Api) -> None:
    owner, member = await me(api, api.key), await me(api, api.emulator.member_key)
    org_id = owner["organizations"][0]["id"]
    project = await api.project()
    grant = {
        "object_type": "project",
        "object_id": project["id"],
        "user_id": member["id"],
        "role_id": OWNER_ROLE_ID,
    }
    denied = await api.call("POST", "/v1/acl", grant, key=api.emulator.member_key)
    assert denied.status == 403 and "needs the Owner role" in denied.text
    acl = await api.ok("POST", "/v1/acl", grant)
    assert acl == {**grant, "id": acl["id"], "group_id": None, "permission": None,
                   "restrict_object_type": None, "_object_org_id": org_id, "created": acl["created"]}  # fmt: skip
    assert await api.ok("POST", "/v1/acl", grant) == acl  # idempotent
    listed = await api.ok("GET", "/v1/acl", params={"object_type": "project", "object_id": project["id"]})
    assert listed["objects"] == [acl]
    assert await api.ok("GET", f"/v1/acl/{acl['id']}") == acl
    for key in (api.emulator.other_org_key,):
        assert (await api.call("GET", f"/v1/acl/{acl['id']}", key=key)).status == 404
        assert (await api.call("DELETE", f"/v1/acl/{acl['id']}", key=key)).status == 404
        foreign_list = await api.call("GET", "/v1/acl", key=key, params={"object_type": "project", "object_id": project["id"]})  # fmt: skip
        assert foreign_list.status == 404
    assert (await api.call("DELETE", f"/v1/acl/{acl['id']}", key=api.emulator.member_key)).status == 403
    assert await api.ok("DELETE", f"/v1/acl/{acl['id']}") == acl
    assert (await api.ok("GET", "/v1/acl", params={"object_type": "project", "object_id": project["id"]}))["objects"] == []  # fmt: skip
    again = await api.ok("POST", "/v1/acl", {**grant, "role_id": None, "permission": "read"})
    assert await api.ok("DELETE", "/v1/acl", {**grant, "role_id": None, "permission": "read"}) == again
    bad = [
        ({**grant, "user_id": None}, 400, "exactly one of user_id and group_id"),
        ({**grant, "permission": "read"}, 400, "exactly one of permission and role_id"),
        ({**grant, "role_id": "00000000-0000-4000-8000-000000000000"}, 400, "unknown role"),
        ({**grant, "object_type": "org_member"}, 400, "not supported"),
        ({**grant, "object_type": "bogus"}, 400, "expected one of"),
        ({**grant, "user_id": (await me(api, api.emulator.other_org_key))["id"]}, 400, "not a member"),
    ]
    for body, status, message in bad:
        reply = await api.call("POST", "/v1/acl", body)
        assert reply.status == status and message in reply.text, (body, reply.text)


async def test_impersonation_runs_as_the_user(api: Api) -> None:
    member = await me(api, api.emulator.member_key)
    for who in (member["email"], member["id"]):
        seen = await me(api, api.key, headers={"x-bt-impersonate-user": who})
        assert seen == member
    name = unique_name("imp")
    project = await api.ok(
        "POST", "/v1/project", {"name": name, "org_name": "local"},
        headers={"x-bt-impersonate-user": member["email"]},
    )  # fmt: skip
    assert project["user_id"] == member["id"]
    # the impersonated user's view: an org it does not belong to is refused
    narrowed = await api.call("GET", "/v1/project", headers={"x-bt-impersonate-user": member["email"], "x-bt-org-name": "other"})  # fmt: skip
    assert narrowed.status == 401


async def test_impersonation_refused_without_owner_role_everywhere(api: Api) -> None:
    owner, member = await me(api, api.key), await me(api, api.emulator.member_key)
    other_owner = await me(api, api.emulator.other_org_key)
    cases = [
        (api.emulator.member_key, owner["email"]),  # a member is not an owner of local
        (api.key, other_owner["email"]),  # owner of local, not of other
        (api.emulator.other_org_key, member["id"]),
        (api.key, "nobody@nowhere.test"),  # unknown users look exactly the same
        (api.key, "00000000-0000-4000-8000-000000000000"),
    ]
    for key, who in cases:
        reply = await api.call("GET", "/v1/project", key=key, headers={"x-bt-impersonate-user": who})
        assert (reply.status, reply.text) == (403, IMPERSONATION_DENIED), (who, reply.text)


async def test_owner_acl_on_the_org_allows_impersonation(api: Api) -> None:
    owner, member = await me(api, api.key), await me(api, api.emulator.member_key)
    org_id = owner["organizations"][0]["id"]
    as_owner = {"x-bt-impersonate-user": owner["email"]}
    refused = await api.call("POST", "/api/self/me", key=api.emulator.member_key, headers=as_owner)
    assert refused.status == 403
    acl = await api.ok("POST", "/v1/acl", {"object_type": "organization", "object_id": org_id, "user_id": member["id"], "role_id": OWNER_ROLE_ID})  # fmt: skip
    try:
        assert await me(api, api.emulator.member_key, headers=as_owner) == owner
    finally:
        await api.ok("DELETE", f"/v1/acl/{acl['id']}")
    assert (
        await api.call("POST", "/api/self/me", key=api.emulator.member_key, headers=as_owner)
    ).status == 403
