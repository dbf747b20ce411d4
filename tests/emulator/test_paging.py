"""Every list route pages by id: ``limit``, ``starting_after``, ``ending_before``, ``ids``, and
its name filters, newest first, on a server of its own with many users, orgs, roles and ACLs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from pipeline.emulator.auth import KeySpec
from pipeline.emulator.roles import SYSTEM_ROLES
from pipeline.emulator.server import RunningServer, ServerConfig
from tests.conftest import Emulator
from tests.emulator.conftest import Api

#: An owner of three orgs and six members of the first one.
KEYS = (
    KeySpec("owner-key", "owner@first.test", "first", "owner"),
    KeySpec("owner-key-2", "owner@first.test", "second", "owner"),
    KeySpec("owner-key-3", "owner@first.test", "third", "owner"),
    *(KeySpec(f"member-key-{n}", f"jane.doe{n}@first.test", "first", "member") for n in range(6)),
    KeySpec("outsider-key", "outsider@elsewhere.test", "elsewhere", "owner"),
)


@pytest.fixture(scope="module")
def people_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("paging") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), keys=KEYS)) as server:
        yield server


@pytest.fixture
async def people(people_server: RunningServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        api = Api(session, Emulator(url=people_server.url, key="owner-key"))
        yield api


async def walk(api: Api, path: str, params: dict[str, str], limit: int, backward: bool = False) -> list[str]:
    """Every id of a list, page by page the way a generated client pages (forward: the last id
    of a page as ``starting_after``; backward: the first id as ``ending_before``)."""
    anchor_param = "ending_before" if backward else "starting_after"
    pages: list[list[str]] = []
    extra: dict[str, str] = {}
    while True:
        reply = await api.ok("GET", path, params={**params, **extra, "limit": str(limit)})
        page = [o["id"] for o in (reply if isinstance(reply, list) else reply["objects"])]
        if not page:
            break
        assert len(page) <= limit
        pages.append(page)
        extra = {anchor_param: page[0] if backward else page[-1]}
    if backward:
        pages.reverse()
    return [i for page in pages for i in page]


def ids_of(listed: Any) -> list[str]:
    """The ids of a list answer: ``{"objects": [...]}``, or a bare array (``/v1/acl/list_org``)."""
    return [o["id"] for o in (listed if isinstance(listed, list) else listed["objects"])]


async def check_paging(
    api: Api, path: str, expected: list[str], params: dict[str, str] | None = None
) -> None:
    """The list at ``path`` is exactly ``expected`` (newest first) however it is paged, and
    refuses malformed paging."""
    params = params or {}
    assert len(expected) >= 4
    assert ids_of(await api.ok("GET", path, params=params)) == expected
    for limit in (1, 2, 3):
        assert await walk(api, path, params, limit) == expected, (path, limit)
    # backward from the oldest: everything newer than it, pages nearest the anchor first
    assert await walk(api, path, {**params, "ending_before": expected[-1]}, 2, backward=True) == expected[:-1]
    after = await api.ok("GET", path, params={**params, "starting_after": expected[0], "limit": "2"})
    assert ids_of(after) == expected[1:3]
    before = await api.ok("GET", path, params={**params, "ending_before": expected[3], "limit": "2"})
    assert ids_of(before) == expected[1:3]
    assert ids_of(await api.ok("GET", path, params={**params, "limit": "0"})) == []
    by_ids = await api.ok("GET", path, params={**params, "ids": f"{expected[-1]},{expected[0]}"})
    assert ids_of(by_ids) == [expected[0], expected[-1]]
    repeated = await api.call("GET", f"{path}?ids={expected[1]}&ids={expected[2]}", params=params)
    assert ids_of(repeated.json) == expected[1:3]
    both = await api.call("GET", path, params={**params, "starting_after": expected[0], "ending_before": expected[0]})  # fmt: skip
    assert both.status == 400 and "cannot be combined" in both.text
    for bad in ({"limit": "-1"}, {"limit": "x"}, {"starting_after": "nope"}, {"ids": "nope"}):
        assert (await api.call("GET", path, params={**params, **bad})).status == 400, bad
    unknown = await api.call("GET", path, params={**params, "starting_after": "00000000-0000-4000-8000-000000000000"})  # fmt: skip
    assert unknown.status == 404


async def names(api: Api, path: str, params: dict[str, str]) -> list[str]:
    return [o["name"] for o in (await api.ok("GET", path, params=params))["objects"]]


async def test_projects_datasets_experiments(people: Api) -> None:
    projects = [await people.ok("POST", "/v1/project", {"name": f"p{n}"}) for n in range(5)]
    await check_paging(people, "/v1/project", [p["id"] for p in reversed(projects)])
    assert await names(people, "/v1/project", {"project_name": "p3"}) == ["p3"]
    pid = projects[0]["id"]
    for kind in ("dataset", "experiment"):
        made = [
            await people.ok("POST", f"/v1/{kind}", {"project_id": pid, "name": f"{kind}{n}"})
            for n in range(5)
        ]
        await check_paging(people, f"/v1/{kind}", [o["id"] for o in reversed(made)], {"project_id": pid})
        assert await names(people, f"/v1/{kind}", {"project_name": "p0", f"{kind}_name": f"{kind}2"}) == [
            f"{kind}2"
        ]
    outsider = await people.ok("GET", "/v1/project", key="outsider-key")
    assert outsider == {"objects": []}


async def test_roles(people: Api) -> None:
    made = [await people.ok("POST", "/v1/role", {"name": f"role{n}"}) for n in range(3)]
    second = await people.ok("POST", "/v1/role", {"name": "role-of-second", "org_name": "second"})
    system = [r["id"] for r in SYSTEM_ROLES]
    await check_paging(people, "/v1/role", [second["id"], *(r["id"] for r in reversed(made)), *system])
    assert await names(people, "/v1/role", {"role_name": "role1"}) == ["role1"]
    in_second = await people.ok("GET", "/v1/role", params={"org_name": "second"})
    assert ids_of(in_second) == [second["id"], *system]
    member = await people.ok("GET", "/v1/role", key="member-key-0")
    assert ids_of(member) == [*(r["id"] for r in reversed(made)), *system]
    assert ids_of(await people.ok("GET", "/v1/role", key="outsider-key")) == system


async def test_acls_of_an_object_and_of_the_org(people: Api) -> None:
    users = {u["email"]: u["id"] for u in (await people.ok("GET", "/v1/user"))["objects"]}
    project = await people.ok("POST", "/v1/project", {"name": "acl-project"})
    other = await people.ok("POST", "/v1/project", {"name": "acl-project-2"})

    def grant(project_id: str, email: str, permission: str) -> dict[str, str]:
        return {
            "object_type": "project",
            "object_id": project_id,
            "user_id": users[email],
            "permission": permission,
        }

    grants = [
        await people.ok("POST", "/v1/acl", grant(project["id"], f"jane.doe{n}@first.test", "read"))
        for n in range(5)
    ]
    elsewhere = await people.ok("POST", "/v1/acl", grant(other["id"], "jane.doe0@first.test", "update"))
    on_project = {"object_type": "project", "object_id": project["id"]}
    await check_paging(people, "/v1/acl", [a["id"] for a in reversed(grants)], on_project)
    one_user = await people.ok(
        "GET", "/v1/acl", params={**on_project, "user_id": users["jane.doe3@first.test"]}
    )
    assert ids_of(one_user) == [grants[3]["id"]]
    org_wide = [elsewhere["id"], *(a["id"] for a in reversed(grants))]
    await check_paging(people, "/v1/acl/list_org", org_wide, {"org_name": "first"})
    updates = await people.ok("GET", "/v1/acl/list_org", params={"org_name": "first", "permission": "update"})
    assert ids_of(updates) == [elsewhere["id"]]
    assert ids_of(await people.ok("GET", "/v1/acl/list_org", params={"org_name": "second"})) == []
    refused = await people.call("GET", "/v1/acl/list_org", key="member-key-0")
    assert refused.status == 403 and "Owner role" in refused.text


async def test_users(people: Api) -> None:
    listed = (await people.ok("GET", "/v1/user"))["objects"]
    members = [f"jane.doe{n}@first.test" for n in reversed(range(6))]
    assert [u["email"] for u in listed] == [*members, "owner@first.test"]
    first = listed[-1]
    assert first == {"id": first["id"], "given_name": "Owner", "family_name": None, "email": "owner@first.test",
                     "avatar_url": None, "created": None}  # fmt: skip
    assert listed[0]["given_name"] == "Jane" and listed[0]["family_name"] == "Doe5"
    await check_paging(people, "/v1/user", [u["id"] for u in listed])
    emails = await people.ok("GET", "/v1/user", params={"email": "jane.doe1@first.test,owner@first.test"})
    assert [u["email"] for u in emails["objects"]] == ["jane.doe1@first.test", "owner@first.test"]
    janes = await people.ok("GET", "/v1/user", params={"given_name": "Jane", "family_name": ["Doe2", "Doe4"]})
    assert [u["email"] for u in janes["objects"]] == ["jane.doe4@first.test", "jane.doe2@first.test"]
    assert ids_of(await people.ok("GET", "/v1/user", params={"org_name": "second"})) == [first["id"]]
    assert await people.ok("GET", f"/v1/user/{first['id']}") == first
    outsider = await people.ok("GET", "/v1/user", key="outsider-key")
    assert [u["email"] for u in outsider["objects"]] == ["outsider@elsewhere.test"]
    assert (await people.call("GET", f"/v1/user/{first['id']}", key="outsider-key")).status == 404


async def test_organizations(people: Api) -> None:
    listed = (await people.ok("GET", "/v1/organization"))["objects"]
    assert [o["name"] for o in listed] == ["third", "second", "first"]
    assert await names(people, "/v1/organization", {"org_name": "second"}) == ["second"]
    ids = [o["id"] for o in listed]
    assert await walk(people, "/v1/organization", {}, 1) == ids
    assert await walk(people, "/v1/organization", {"ending_before": ids[-1]}, 1, backward=True) == ids[:-1]
    assert ids_of(await people.ok("GET", "/v1/organization", key="member-key-0")) == [ids[-1]]
