"""REST objects: projects, datasets, experiments; auth and org isolation."""

from __future__ import annotations

import uuid

from tests.conftest import TEST_MAX_REQUEST_BYTES, unique_name
from tests.emulator.conftest import Api


async def test_version_needs_no_key(api: Api) -> None:
    reply = await api.call("GET", "/version", key=None)
    assert reply.status == 200
    assert reply.json["logs3_payload_max_bytes"] == TEST_MAX_REQUEST_BYTES


async def test_missing_and_unknown_keys_are_401(api: Api) -> None:
    assert (await api.call("GET", "/v1/project", key=None)).status == 401
    assert (await api.call("GET", "/v1/project", key="nope")).status == 401


async def test_project_create_is_get_or_create(api: Api) -> None:
    name = unique_name("proj")
    first = await api.ok("POST", "/v1/project", {"name": name, "description": "d"})
    again = await api.ok("POST", "/v1/project", {"name": name})
    assert again == first
    assert set(first) >= {"id", "org_id", "name", "created", "description", "user_id", "deleted_at"}
    assert first["created"].endswith("Z")
    assert await api.ok("GET", f"/v1/project/{first['id']}") == first
    listed = await api.ok("GET", "/v1/project", params={"project_name": name})
    assert listed["objects"] == [first]


async def test_double_slash_paths(api: Api) -> None:
    project = await api.project()
    assert (await api.ok("GET", f"//v1/project/{project['id']}"))["id"] == project["id"]


async def test_list_is_newest_first_and_pages_by_id(api: Api) -> None:
    project = await api.project()
    made = [await api.dataset(project["id"]) for _ in range(4)]
    ids = [d["id"] for d in reversed(made)]
    listed = await api.ok("GET", "/v1/dataset", params={"project_id": project["id"]})
    assert [d["id"] for d in listed["objects"]] == ids
    after = await api.ok("GET", "/v1/dataset", params={"project_id": project["id"], "starting_after": ids[0], "limit": "2"})  # fmt: skip
    assert [d["id"] for d in after["objects"]] == ids[1:3]
    before = await api.ok("GET", "/v1/dataset", params={"project_id": project["id"], "ending_before": ids[3], "limit": "2"})  # fmt: skip
    assert [d["id"] for d in before["objects"]] == ids[1:3]
    by_name = await api.ok("GET", "/v1/dataset", params={"project_name": project["name"], "dataset_name": made[0]["name"]})  # fmt: skip
    assert by_name["objects"] == [made[0]]
    by_ids = await api.ok("GET", "/v1/dataset", params={"ids": made[1]["id"]})
    assert by_ids["objects"] == [made[1]]


async def test_experiment_fields_and_ensure_new(api: Api) -> None:
    project = await api.project()
    dataset = await api.dataset(project["id"])
    body = {"project_id": project["id"], "name": "exp", "dataset_id": dataset["id"], "dataset_version": "5"}
    first = await api.ok("POST", "/v1/experiment", body)
    assert first["dataset_id"] == dataset["id"] and first["public"] is False and first["base_exp_id"] is None
    assert (await api.ok("POST", "/v1/experiment", body))["id"] == first["id"]
    fresh = await api.ok("POST", "/v1/experiment", {**body, "ensure_new": True})
    assert fresh["name"] == "exp-1" and fresh["id"] != first["id"]


async def test_patch_and_delete(api: Api) -> None:
    project = await api.project()
    dataset = await api.dataset(project["id"])
    patched = await api.ok(
        "PATCH", f"/v1/dataset/{dataset['id']}", {"description": "new", "metadata": {"a": 1}}
    )
    assert patched["description"] == "new" and patched["metadata"] == {"a": 1}
    deleted = await api.ok("DELETE", f"/v1/dataset/{dataset['id']}")
    assert deleted["deleted_at"] is not None
    assert (await api.call("GET", f"/v1/dataset/{dataset['id']}")).status == 404


async def test_other_org_gets_404_for_everything(api: Api) -> None:
    project = await api.project()
    dataset = await api.dataset(project["id"])
    other = api.emulator.other_org_key
    assert (await api.call("GET", f"/v1/project/{project['id']}", key=other)).status == 404
    assert (await api.call("GET", f"/v1/dataset/{dataset['id']}", key=other)).status == 404
    assert (await api.call("DELETE", f"/v1/dataset/{dataset['id']}", key=other)).status == 404
    assert (await api.call("POST", "/v1/dataset", {"project_id": project["id"], "name": "x"}, key=other)).status == 404  # fmt: skip
    insert = await api.call(
        "POST", f"/v1/dataset/{dataset['id']}/insert", {"events": [{"input": 1}]}, key=other
    )
    assert insert.status == 404
    listed = await api.ok("GET", "/v1/project", params={"project_name": project["name"]}, key=other)
    assert listed["objects"] == []
    fetch = await api.call("POST", f"/v1/dataset/{dataset['id']}/fetch", {}, key=other)
    assert fetch.status == 404


async def test_member_key_sees_org_objects(api: Api) -> None:
    project = await api.project()
    got = await api.ok("GET", f"/v1/project/{project['id']}", key=api.emulator.member_key)
    assert got["id"] == project["id"]


async def test_malformed_object_requests_are_400(api: Api) -> None:
    cases = [
        ("POST", "/v1/project", b"{not json", "invalid JSON"),
        ("POST", "/v1/project", b"{}", "body.name: is required"),
        ("POST", "/v1/project", b'{"name": 5}', "body.name: expected string"),
        ("POST", "/v1/project", b'{"name": "a", "description": 1}', "body.description: expected string"),
        ("POST", "/v1/dataset", b'{"project_id": "nope", "name": "a"}', "body.project_id: expected a uuid"),
        ("GET", "/v1/project/not-a-uuid", None, "expected a uuid"),
    ]
    for method, path, raw, message in cases:
        reply = await api.call(method, path, raw=raw)
        assert reply.status == 400, (path, reply.text)
        assert message in reply.text
    missing = await api.call("GET", f"/v1/project/{uuid.uuid4()}")
    assert missing.status == 404


async def test_create_says_whether_it_found_the_object(api: Api) -> None:
    """``x-bt-found-existing`` on every get-or-create, as on the configuration objects."""
    project = await api.project()
    bodies = {
        "/v1/project": {"name": unique_name("found")},
        "/v1/dataset": {"project_id": project["id"], "name": "found"},
        "/v1/experiment": {"project_id": project["id"], "name": "found"},
        "/v1/role": {"name": unique_name("found")},
    }
    for path, body in bodies.items():
        first = await api.call("POST", path, body)
        again = await api.call("POST", path, body)
        assert (first.status, again.status) == (200, 200), (path, first.text, again.text)
        assert first.headers.get("x-bt-found-existing") == "false", path
        assert again.headers.get("x-bt-found-existing") == "true", path


async def test_rename_onto_a_taken_name_is_409(api: Api) -> None:
    """Names are unique in their parent (create finds an object by it), so a rename onto a
    taken one is refused and the object keeps its name."""
    project = await api.project()
    other = await api.project()
    a, b = await api.dataset(project["id"]), await api.dataset(project["id"])
    e1 = await api.ok("POST", "/v1/experiment", {"project_id": project["id"], "name": "e1"})
    e2 = await api.ok("POST", "/v1/experiment", {"project_id": project["id"], "name": "e2"})
    for kind, moved, taken in (
        ("project", other, project["name"]),
        ("dataset", b, a["name"]),
        ("experiment", e2, "e1"),
    ):
        reply = await api.call("PATCH", f"/v1/{kind}/{moved['id']}", {"name": taken})
        assert reply.status == 409 and taken in reply.text, (kind, reply.text)
        assert (await api.ok("GET", f"/v1/{kind}/{moved['id']}"))["name"] == moved["name"]
    # its own name, or a name free in the parent, is fine; the name of a deleted object too
    assert (await api.ok("PATCH", f"/v1/experiment/{e1['id']}", {"name": "e1"}))["name"] == "e1"
    await api.ok("DELETE", f"/v1/dataset/{a['id']}")
    assert (await api.ok("PATCH", f"/v1/dataset/{b['id']}", {"name": a["name"]}))["name"] == a["name"]


async def test_experiment_links_name_objects_of_its_org(api: Api) -> None:
    """``dataset_id`` and ``base_exp_id`` must name a dataset and an experiment of the
    experiment's organization: another org's (which the caller cannot see) or none is a 400."""
    project = await api.project()
    dataset = await api.dataset(project["id"])
    base = await api.ok("POST", "/v1/experiment", {"project_id": project["id"], "name": "base"})
    other_key = api.emulator.other_org_key
    theirs = await api.ok("POST", "/v1/project", {"name": unique_name("theirs")}, key=other_key)
    their_dataset = await api.ok("POST", "/v1/dataset", {"project_id": theirs["id"], "name": "d"}, key=other_key)  # fmt: skip
    body = {"project_id": project["id"], "name": "linked"}
    for field, value in (
        ("dataset_id", their_dataset["id"]),
        ("dataset_id", str(uuid.uuid4())),
        ("base_exp_id", str(uuid.uuid4())),
        ("base_exp_id", dataset["id"]),  # a dataset is not an experiment
    ):
        reply = await api.call("POST", "/v1/experiment", {**body, field: value})
        assert reply.status == 400 and field in reply.text, (field, reply.text)
    made = await api.ok("POST", "/v1/experiment", {**body, "dataset_id": dataset["id"], "base_exp_id": base["id"]})  # fmt: skip
    assert (made["dataset_id"], made["base_exp_id"]) == (dataset["id"], base["id"])
    patch = await api.call("PATCH", f"/v1/experiment/{made['id']}", {"dataset_id": their_dataset["id"]})
    assert patch.status == 400 and "dataset_id" in patch.text, patch.text
    unlinked = await api.ok("PATCH", f"/v1/experiment/{made['id']}", {"dataset_id": None})
    assert unlinked["dataset_id"] is None
    assert (await api.call("GET", f"/v1/experiment/{made['id']}")).status == 200


async def test_deleting_a_project_deletes_what_it_holds(api: Api) -> None:
    """A deleted project's datasets, experiments and configuration go with it, on every route
    alike: not listed, not read, not written, not queried, not summarized."""
    project = await api.project()
    dataset = await api.dataset(project["id"])
    experiment = await api.ok("POST", "/v1/experiment", {"project_id": project["id"], "name": "e"})
    prompt = await api.ok("POST", "/v1/prompt", {"project_id": project["id"], "name": "p", "slug": "p"})
    kept = await api.project()
    other = await api.dataset(kept["id"])
    await api.ok("DELETE", f"/v1/project/{project['id']}")
    for kind, obj in (("dataset", dataset), ("experiment", experiment), ("prompt", prompt)):
        assert (await api.call("GET", f"/v1/{kind}/{obj['id']}")).status == 404, kind
        listed = await api.ok("GET", f"/v1/{kind}")
        assert obj["id"] not in {o["id"] for o in listed["objects"]}, kind
    for kind, obj in (("dataset", dataset), ("experiment", experiment)):
        insert = await api.call("POST", f"/v1/{kind}/{obj['id']}/insert", {"events": [{"input": 1}]})
        assert insert.status == 404, kind
        assert (await api.call("GET", f"/v1/{kind}/{obj['id']}/summarize")).status == 404, kind
        query = {"from": {"op": "function", "name": {"op": "ident", "name": [kind]},
                          "args": [{"op": "literal", "value": obj["id"]}]}}  # fmt: skip
        assert (await api.btql(query)).status == 400, kind  # as for any id the server does not know
    assert (await api.ok("GET", f"/v1/dataset/{other['id']}"))["id"] == other["id"]
