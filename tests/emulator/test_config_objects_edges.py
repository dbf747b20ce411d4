"""Configuration objects at their edges, the way real clients reach them: lists paged both ways
and with odd limits, names and slugs that need URL escaping, ``PATCH`` with null against an
absent field, a prompt deleted and made again under its slug (its versions, ``load_prompt``
asking for one that does not exist), version names past any transaction, and another org's
key on every route (always told "not found", never "forbidden").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import braintrust
import httpx
import pytest
from braintrust.api.errors import BraintrustHTTPError
from braintrust.xact_ids import prettify_xact
from braintrust_api import Braintrust

from tests.conftest import Emulator, unique_name
from tests.emulator.test_rest_client import ids
from tests.emulator.test_sdk import point_sdk_at


def _completion(text: str) -> dict[str, Any]:
    return {"prompt": {"type": "completion", "content": text}, "options": {"model": "gpt-4o-mini"}}


@pytest.fixture
def bt(emulator: Emulator) -> Iterator[Braintrust]:
    with Braintrust(
        api_key=emulator.key, base_url=emulator.url, max_retries=0,
        http_client=httpx.Client(trust_env=False), _strict_response_validation=True,
    ) as client:  # fmt: skip
        yield client


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, trust_env=False, headers={"Authorization": f"Bearer {emulator.key}"}) as client:  # fmt: skip
        yield client


@pytest.fixture
def project(bt: Braintrust) -> Any:
    return bt.projects.create(name=unique_name("cfg-edges"))


def _page(http: httpx.Client, **params: Any) -> list[str]:
    reply = http.get("/v1/prompt", params=params)
    assert reply.status_code == 200, reply.text
    return [o["id"] for o in reply.json()["objects"]]


def test_lists_page_both_ways_and_take_any_limit(bt: Braintrust, http: httpx.Client, project: Any) -> None:
    made = [bt.prompts.create(project_id=project.id, name=f"P{n}", slug=f"p{n}").id for n in range(7)]
    newest_first = made[::-1]
    assert ids(bt.prompts.list(project_id=project.id, limit=2)) == newest_first  # starting_after
    backwards: list[str] = []  # ending_before from the oldest, two at a time, until a page is empty
    anchor = made[0]
    while page := _page(http, project_id=project.id, ending_before=anchor, limit=2):
        assert len(page) <= 2
        backwards = page + backwards
        anchor = page[0]
    assert backwards == newest_first[:-1]
    assert _page(http, project_id=project.id, limit=0) == []
    assert _page(http, project_id=project.id, limit=10**30) == newest_first  # was a 500
    assert _page(http, project_id=project.id, ending_before=made[0], limit=10**30) == newest_first[:-1]
    for bad in ("-1", "1.5", "²", "", "0x10"):  # "²" passes str.isdigit and was a 500
        reply = http.get("/v1/prompt", params={"project_id": project.id, "limit": bad})
        assert reply.status_code == 400 and "limit" in reply.text, (bad, reply.status_code)
    both = http.get("/v1/prompt", params={"starting_after": made[1], "ending_before": made[3]})
    assert both.status_code == 400


NAMES = (
    "a&b=c/d%20?#frag",
    "日本語 プロンプト",
    "emoji 🎉",
    'quote\'s "x"',
    "back\\slash",
    "  spaced  ",
    "+plus+",
)


def test_names_and_slugs_needing_escapes_filter_exactly(
    bt: Braintrust, project: Any, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = {
        name: bt.prompts.create(project_id=project.id, name=name, slug=name, prompt_data=_completion(name))
        for name in NAMES
    }
    tags = {name: bt.project_tags.create(project_id=project.id, name=name) for name in NAMES}
    for name, prompt in made.items():
        assert ids(bt.prompts.list(project_id=project.id, prompt_name=name)) == [prompt.id]
        assert ids(bt.prompts.list(project_name=project.name, slug=name)) == [prompt.id]
        assert ids(bt.project_tags.list(project_id=project.id, project_tag_name=name)) == [tags[name].id]
    point_sdk_at(monkeypatch, emulator.url, emulator.key)
    for name, prompt in made.items():
        loaded = braintrust.load_prompt(project=project.name, slug=name)
        assert (loaded.id, loaded.build()["prompt"]) == (prompt.id, name)


def test_patch_null_clears_a_nullable_field_and_absent_keeps_it(http: httpx.Client, project: Any) -> None:
    body = {"project_id": project.id, "name": "N", "slug": "n",
            "description": "d", "tags": ["t"], "prompt_data": _completion("x")}  # fmt: skip
    made = http.post("/v1/prompt", json=body).json()
    cleared = http.patch(f"/v1/prompt/{made['id']}", json={"description": None}).json()
    assert (cleared["description"], cleared["tags"], cleared["prompt_data"]) == (
        None,
        ["t"],
        _completion("x"),
    )
    kept = http.patch(f"/v1/prompt/{made['id']}", json={"name": None, "slug": None}).json()
    assert (kept["name"], kept["slug"]) == ("N", "n")  # required fields are never nulled
    same = http.patch(f"/v1/prompt/{made['id']}", json={}).json()
    assert {k: v for k, v in same.items() if k != "_xact_id"} == {
        k: v for k, v in kept.items() if k != "_xact_id"
    }


def test_a_prompt_deleted_and_made_again_under_its_slug(
    bt: Braintrust, http: httpx.Client, project: Any, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = bt.prompts.create(project_id=project.id, name="D", slug="d", prompt_data=_completion("old"))
    bt.prompts.delete(old.id)
    new = bt.prompts.create(project_id=project.id, name="D", slug="d", prompt_data=_completion("new"))
    assert new.id != old.id
    assert http.get(f"/v1/prompt/{old.id}", params={"version": old.xact_id}).status_code == 404
    assert _page(http, project_id=project.id, slug="d") == [new.id]
    assert _page(http, project_id=project.id, slug="d", version=old.xact_id) == []  # new did not exist
    point_sdk_at(monkeypatch, emulator.url, emulator.key)
    assert braintrust.load_prompt(project=project.name, slug="d").build()["prompt"] == "new"
    assert braintrust.load_prompt(project=project.name, slug="d", version=new.xact_id).id == new.id
    with pytest.raises(ValueError, match="not found"):  # what the SDK raises for a missing version
        braintrust.load_prompt(project=project.name, slug="d", version=prettify_xact(old.xact_id)).build()
    with pytest.raises(BraintrustHTTPError, match="HTTP 404"):  # by id the SDK passes the 404 on
        braintrust.load_prompt(id=new.id, version=str(int(new.xact_id) - 1)).build()  # read lazily
    for past_the_last in ("9" * 30, "ffffffffffffffff", str(2**63)):  # were 500s
        assert _page(http, project_id=project.id, slug="d", version=past_the_last) == [new.id]
        got = http.get(f"/v1/prompt/{new.id}", params={"version": past_the_last})
        assert got.status_code == 200 and got.json()["id"] == new.id
    assert http.get("/v1/prompt", params={"project_id": project.id, "version": "١٢"}).status_code == 400


def test_another_orgs_key_is_told_not_found_everywhere(
    bt: Braintrust, project: Any, emulator: Emulator
) -> None:
    prompt = bt.prompts.create(project_id=project.id, name="secret", slug="secret")
    group = bt.groups.create(name=unique_name("secret-group"))
    view = bt.views.create(object_type="project", object_id=project.id, view_type="logs", name="secret")
    iframe = bt.span_iframes.create(project_id=project.id, name="secret", url="https://example.test/")
    user = "00000000-0000-4000-8000-000000000001"
    on_view = {"object_type": "project", "object_id": project.id}
    grant = {"object_type": "prompt", "user_id": user, "permission": "read"}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/v1/prompt/{prompt.id}", {}),
        ("GET", f"/v1/prompt/{prompt.id}", {"params": {"version": prompt.xact_id}}),
        ("PATCH", f"/v1/prompt/{prompt.id}", {"json": {"description": "x"}}),
        ("DELETE", f"/v1/prompt/{prompt.id}", {}),
        ("PUT", "/v1/prompt", {"json": {"project_id": project.id, "name": "x", "slug": "secret"}}),
        ("GET", "/v1/prompt", {"params": {"starting_after": prompt.id}}),
        ("GET", f"/v1/group/{group.id}", {}),
        ("PATCH", f"/v1/group/{group.id}", {"json": {"description": "x"}}),  # not the Owner rule's 403
        ("DELETE", f"/v1/group/{group.id}", {}),
        ("PATCH", f"/v1/view/{view.id}", {"json": {**on_view, "name": "x"}}),
        ("GET", "/v1/view", {"params": on_view}),
        ("POST", "/v1/view", {"json": {**on_view, "view_type": "logs", "name": "x"}}),
        ("DELETE", f"/v1/span_iframe/{iframe.id}", {}),
        ("POST", "/v1/acl", {"json": {**grant, "object_id": prompt.id}}),
        ("GET", "/v1/acl", {"params": {"object_type": "group", "object_id": group.id}}),
    ]
    with httpx.Client(base_url=emulator.url, trust_env=False, headers={"Authorization": f"Bearer {emulator.other_org_key}"}) as outsider:  # fmt: skip
        for method, path, kwargs in calls:
            reply = outsider.request(method, path, **kwargs)
            assert reply.status_code == 404, (method, path, reply.status_code, reply.text)
        lists = (("/v1/prompt", {"project_id": project.id}), ("/v1/span_iframe", {"project_name": project.name}),
                 ("/v1/group", {"group_name": group.name}), ("/v1/prompt", {"ids": prompt.id}))  # fmt: skip
        for path, params in lists:
            reply = outsider.get(path, params=params)
            assert (reply.status_code, reply.json()) == (200, {"objects": []}), (path, reply.text)
    assert bt.prompts.retrieve(prompt.id) == prompt and bt.groups.retrieve(group.id) == group
