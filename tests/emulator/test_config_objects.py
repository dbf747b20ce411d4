"""Project configuration objects (prompts, functions, project scores and tags, span iframes, views,
groups, automations) through the generated client ``braintrust-api`` with strict response
validation, and over plain HTTP where the client has no resource (automations) or to read
headers: get-or-create by key, ``PUT`` replace, ``PATCH``, delete, every list auto-paged with
exact ids and its filters, org isolation, the Owner rule for groups, the slug namespace prompts
and functions share, and project settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from braintrust_api import Braintrust, ConflictError, NotFoundError, PermissionDeniedError

from pipeline.emulator.auth import KeySpec
from pipeline.emulator.server import RunningServer, ServerConfig
from pipeline.emulator.store import Store
from tests.emulator.test_rest_client import ids

KEYS = (
    KeySpec("owner-key", "owner@cfg.test", "cfg", "owner"),
    KeySpec("member-key", "member@cfg.test", "cfg", "member"),
    KeySpec("outsider-key", "outsider@elsewhere.test", "elsewhere", "owner"),
)
_CHAT = {"prompt": {"type": "chat", "messages": [{"role": "user", "content": "Hello {{name}}"}]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("config") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), keys=KEYS)) as running:
        yield running


def client(server: RunningServer, key: str = "owner-key") -> Braintrust:
    assert server.url.startswith("http://127.0.0.1:")
    return Braintrust(
        api_key=key, base_url=server.url, max_retries=0,
        http_client=httpx.Client(trust_env=False), _strict_response_validation=True,
    )  # fmt: skip


@pytest.fixture
def bt(server: RunningServer) -> Iterator[Braintrust]:
    with client(server) as found:
        yield found


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, trust_env=False, headers={"Authorization": "Bearer owner-key"}) as found:  # fmt: skip
        yield found


@pytest.fixture
def project(bt: Braintrust, request: pytest.FixtureRequest) -> Any:
    return bt.projects.create(name=f"cfg-{request.node.name}"[:60])


#: Per resource: create kwargs for the n-th object, a patch, the list's name filter.
Make = Callable[[Any, int], dict[str, Any]]
RESOURCES: dict[str, tuple[Make, dict[str, Any], str]] = {
    "prompts": (
        lambda p, n: {"project_id": p.id, "name": f"Prompt {n}", "slug": f"prompt-{n}", "prompt_data": _CHAT},
        {"description": "patched", "tags": ["a"]}, "prompt_name",
    ),
    "functions": (
        lambda p, n: {"project_id": p.id, "name": f"Tool {n}", "slug": f"tool-{n}", "function_type": "tool",
                      "function_data": {"type": "code", "data": {"type": "inline", "code": "def handler(): return 1",
                                        "runtime_context": {"runtime": "python", "version": "3.11"}}}},
        {"description": "patched"}, "function_name",
    ),
    "project_scores": (
        lambda p, n: {"project_id": p.id, "name": f"score-{n}", "score_type": "categorical",
                      "categories": [{"name": "good", "value": 1}, {"name": "bad", "value": 0}]},
        {"description": "patched"}, "project_score_name",
    ),
    "project_tags": (
        lambda p, n: {"project_id": p.id, "name": f"tag-{n}", "color": "#ff0000"},
        {"color": "#00ff00"}, "project_tag_name",
    ),
    "span_iframes": (
        lambda p, n: {"project_id": p.id, "name": f"iframe-{n}", "url": f"https://example.test/{n}"},
        {"post_message": True}, "span_iframe_name",
    ),
    "views": (
        lambda p, n: {"object_type": "project", "object_id": p.id, "view_type": "logs", "name": f"view-{n}",
                      "view_data": {"search": {"filter": ["tags includes 'tag-1'"]}}},
        {"options": {"columnVisibility": {"input": False}}}, "view_name",
    ),
}  # fmt: skip


def _scope(resource: str, project: Any) -> dict[str, Any]:
    """What every call on ``resource`` names besides the id (a view's object)."""
    return {"object_type": "project", "object_id": project.id} if resource == "views" else {}


def _list_scope(resource: str, project: Any) -> dict[str, Any]:
    if resource == "views":
        return _scope(resource, project)
    return {} if resource == "span_iframes" else {"project_id": project.id}


@pytest.mark.parametrize("resource", sorted(RESOURCES))
def test_crud_and_paging_with_the_generated_client(resource: str, bt: Braintrust, project: Any) -> None:
    make, change, name_filter = RESOURCES[resource]
    api = getattr(bt, resource)
    scope = _scope(resource, project)
    made = [api.create(**make(project, n)) for n in range(7)]
    again = api.create(**{**make(project, 3), **({"description": "ignored"} if resource != "views" else {})})
    assert again == made[3]  # get-or-create by name / slug within the project
    assert api.retrieve(made[0].id, **scope) == made[0]
    patched = api.update(made[0].id, **scope, **change)
    for key, value in change.items():
        assert patched.model_dump(mode="json", by_alias=True, exclude_unset=True)[key] == value
    assert api.retrieve(made[0].id, **scope) == patched
    newest_first = [m.id for m in reversed(made)]
    listed = ids(api.list(**_list_scope(resource, project), limit=2))  # auto-paged
    if resource == "span_iframes":
        listed = [i for i in listed if i in newest_first]
    assert listed == newest_first
    name = made[2].name
    assert ids(api.list(**_list_scope(resource, project), **{name_filter: name})) == [made[2].id]
    assert ids(api.list(**_list_scope(resource, project), ids=[made[1].id, made[4].id])) == [made[4].id, made[1].id]  # fmt: skip
    replaced = api.replace(**make(project, 1))  # PUT: same object, the body's fields, the rest null
    assert replaced.id == made[1].id and replaced.created == made[1].created
    deleted = api.delete(made[5].id, **scope)
    assert deleted.id == made[5].id
    with pytest.raises(NotFoundError):
        api.retrieve(made[5].id, **scope)
    assert made[5].id not in ids(api.list(**_list_scope(resource, project)))
    fresh = api.create(**make(project, 5))  # the name is free again after a delete
    assert fresh.id != made[5].id


def test_create_answers_whether_it_found_an_existing_object(http: httpx.Client, project: Any) -> None:
    body = {"project_id": project.id, "name": "found", "score_type": "slider"}
    first = http.post("/v1/project_score", json=body)
    second = http.post("/v1/project_score", json={**body, "description": "other"})
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-bt-found-existing"] == "false"
    assert second.headers["x-bt-found-existing"] == "true"
    assert second.json() == first.json()
    replaced = http.put("/v1/project_score", json={**body, "description": "other"})
    assert replaced.headers["x-bt-found-existing"] == "true"
    assert replaced.json() == {**first.json(), "description": "other"}


def test_unknown_create_fields_the_read_schema_has_are_kept(http: httpx.Client, project: Any) -> None:
    body = {
        "project_id": project.id,
        "name": "with metadata",
        "slug": "with-metadata",
        "metadata": {"team": "a"},
    }
    made = http.post("/v1/prompt", json={**body, "no_such_field": 1}).json()
    assert made["metadata"] == {"team": "a"} and "no_such_field" not in made
    bad = http.post("/v1/prompt", json={**body, "slug": "other", "metadata": "not an object"})
    assert bad.status_code == 400 and "body.metadata" in bad.text


def test_project_automations(http: httpx.Client, project: Any) -> None:
    config = {"event_type": "logs", "btql_filter": "scores.accuracy < 0.5", "interval_seconds": 3600,
              "action": {"type": "webhook", "url": "https://example.test/hook"}}  # fmt: skip
    made = [
        http.post(
            "/v1/project_automation", json={"project_id": project.id, "name": f"alert-{n}", "config": config}
        ).json()
        for n in range(3)
    ]
    listed = http.get("/v1/project_automation", params={"project_id": project.id, "limit": "2"}).json()[
        "objects"
    ]
    assert [a["id"] for a in listed] == [made[2]["id"], made[1]["id"]]
    patched = http.patch(f"/v1/project_automation/{made[0]['id']}", json={"description": "on call"}).json()
    assert patched == {**made[0], "description": "on call"}
    named = http.get("/v1/project_automation", params={"project_automation_name": "alert-1"}).json()[
        "objects"
    ]
    assert [a["id"] for a in named] == [made[1]["id"]]
    assert http.delete(f"/v1/project_automation/{made[0]['id']}").status_code == 200
    assert http.get(f"/v1/project_automation/{made[0]['id']}").status_code == 404


def test_groups_need_an_owner_to_change(server: RunningServer, bt: Braintrust) -> None:
    me = bt.users.list(email=["member@cfg.test"])
    member_id = next(iter(me)).id
    team = bt.groups.create(name="team", member_users=[member_id])
    assert team.member_users == [member_id]
    assert bt.groups.create(name="team") == team
    leads = bt.groups.create(name="leads")
    nested = bt.groups.update(team.id, add_member_groups=[leads.id], remove_member_users=[member_id])
    assert (nested.member_groups, nested.member_users) == ([leads.id], [])
    assert ids(bt.groups.list(group_name="team")) == [team.id]
    with client(server, "member-key") as member:
        assert member.groups.retrieve(team.id) == nested  # members read
        with pytest.raises(PermissionDeniedError):
            member.groups.create(name="mine")
        with pytest.raises(PermissionDeniedError):
            member.groups.update(team.id, description="x")
        with pytest.raises(PermissionDeniedError):
            member.groups.delete(team.id)
    outsider_user = "00000000-0000-4000-8000-000000000000"
    reply = bt.groups.with_raw_response.create
    with pytest.raises(Exception, match="not a member"):
        reply(name="ghosts", member_users=[outsider_user])


def test_objects_of_another_org_answer_like_missing_ones(server: RunningServer, bt: Braintrust, project: Any) -> None:  # fmt: skip
    prompt = bt.prompts.create(project_id=project.id, name="secret", slug="secret", prompt_data=_CHAT)
    tag = bt.project_tags.create(project_id=project.id, name="secret")
    view = bt.views.create(object_type="project", object_id=project.id, view_type="logs", name="secret")
    with client(server, "outsider-key") as outsider:
        for call in (
            lambda: outsider.prompts.retrieve(prompt.id),
            lambda: outsider.prompts.update(prompt.id, description="x"),
            lambda: outsider.prompts.delete(prompt.id),
            lambda: outsider.project_tags.retrieve(tag.id),
            lambda: outsider.views.retrieve(view.id, object_type="project", object_id=project.id),
            lambda: outsider.prompts.create(project_id=project.id, name="x", slug="x"),
            lambda: list(outsider.views.list(object_type="project", object_id=project.id)),
        ):
            with pytest.raises(NotFoundError):
                call()
        assert ids(outsider.prompts.list()) == []
        assert ids(outsider.project_tags.list(project_name=project.name)) == []
    assert bt.prompts.retrieve(prompt.id) == prompt


def test_prompts_and_functions_share_one_slug_namespace(bt: Braintrust, project: Any) -> None:
    bt.prompts.create(project_id=project.id, name="Greeter", slug="greeter", prompt_data=_CHAT)
    with pytest.raises(ConflictError, match="taken by prompt 'Greeter'"):
        bt.functions.create(project_id=project.id, name="Greeter fn", slug="greeter", function_data={"type": "prompt"})  # fmt: skip
    other = bt.prompts.create(project_id=project.id, name="Other", slug="other", prompt_data=_CHAT)
    with pytest.raises(ConflictError, match="already exists"):
        bt.prompts.update(other.id, slug="greeter")


def test_views_are_scoped_to_their_object(bt: Braintrust, project: Any) -> None:
    experiment = bt.experiments.create(project_id=project.id, name="exp")
    on_project = bt.views.create(object_type="project", object_id=project.id, view_type="logs", name="mine")
    on_experiment = bt.views.create(object_type="experiment", object_id=experiment.id, view_type="experiment", name="mine")  # fmt: skip
    assert on_project.id != on_experiment.id
    assert ids(bt.views.list(object_type="experiment", object_id=experiment.id)) == [on_experiment.id]
    with pytest.raises(NotFoundError):
        bt.views.update(on_project.id, object_type="experiment", object_id=experiment.id, name="moved")
    assert ids(bt.views.list(object_type="project", object_id=project.id, view_type="logs")) == [
        on_project.id
    ]


def test_project_settings_are_stored_and_returned(bt: Braintrust, http: httpx.Client, project: Any) -> None:
    settings = {"comparison_key": "input.question", "spanFieldOrder": [{"object_type": "project_logs", "column_id": "input", "position": "a"}]}  # fmt: skip
    patched = http.patch(f"/v1/project/{project.id}", json={"settings": settings}).json()
    assert patched["settings"] == settings
    assert bt.projects.retrieve(project.id).settings.comparison_key == "input.question"
    assert http.get(f"/v1/project/{project.id}").json()["settings"] == settings
    replaced = http.patch(f"/v1/project/{project.id}", json={"settings": {"comparison_key": "input"}}).json()
    assert replaced["settings"] == {"comparison_key": "input"}  # a patch replaces all settings


def test_objects_and_versions_survive_a_restart_and_an_older_database(tmp_path: Path) -> None:
    """The store is persistent, and a database file written before versions were kept gains
    their table when opened."""
    db = tmp_path / "emulator.db"
    old = Store(str(db))
    old.write_sync(lambda c: c.execute("DROP TABLE object_versions"))  # as an older version left it
    old.close()
    with RunningServer(ServerConfig(port=0, db=str(db), keys=KEYS)) as first, client(first) as bt:
        project = bt.projects.create(name="persisted")
        made = bt.prompts.create(project_id=project.id, name="P", slug="p", prompt_data=_CHAT)
        bt.prompts.update(made.id, description="second")
        tag = bt.project_tags.create(project_id=project.id, name="kept")
    with RunningServer(ServerConfig(port=0, db=str(db), keys=KEYS)) as second, client(second) as bt:
        assert bt.prompts.retrieve(made.id, extra_query={"version": made.xact_id}) == made
        assert bt.prompts.retrieve(made.id).description == "second"
        assert bt.project_tags.retrieve(tag.id) == tag


def test_acls_may_name_prompts_and_groups(bt: Braintrust, project: Any) -> None:
    member_id = next(iter(bt.users.list(email=["member@cfg.test"]))).id
    prompt = bt.prompts.create(project_id=project.id, name="guarded", slug="guarded")
    group = bt.groups.create(name="acl-group")
    on_prompt = bt.acls.create(
        object_type="prompt", object_id=prompt.id, user_id=member_id, permission="read"
    )
    on_group = bt.acls.create(object_type="group", object_id=group.id, user_id=member_id, permission="read")
    assert ids(bt.acls.list(object_type="prompt", object_id=prompt.id)) == [on_prompt.id]
    assert ids(bt.acls.list(object_type="group", object_id=group.id)) == [on_group.id]


def test_replace_resets_what_the_body_leaves_out(bt: Braintrust, project: Any) -> None:
    made = bt.prompts.create(project_id=project.id, name="Full", slug="full", description="d", prompt_data=_CHAT, tags=["x"])  # fmt: skip
    replaced = bt.prompts.replace(project_id=project.id, name="Full", slug="full")
    assert (replaced.id, replaced.description, replaced.prompt_data, replaced.tags) == (
        made.id,
        None,
        None,
        None,
    )
    assert int(replaced.xact_id) > int(made.xact_id)


def test_ai_secrets_are_written_never_read_back(server: RunningServer, bt: Braintrust) -> None:
    """AI secrets (the first thing an org migration copies): get-or-create by name, the value
    never in any answer (a preview instead), kept by a replace or patch that sends none,
    listed by name and type, deleted by id or by name; Owner only to change, other orgs see
    none."""
    value = "sk-live-abcdefghijklmnop-WXYZ"
    made = bt.ai_secrets.create(name="openai", type="openai", secret=value, metadata={"team": "a"})
    raw = httpx.get(f"{server.url}/v1/ai_secret/{made.id}", headers={"Authorization": "Bearer owner-key"})
    assert value not in raw.text and "WXYZ" in raw.text and "secret" not in raw.json()
    assert made.preview_secret == "********WXYZ"
    assert made.secret_updated_at is not None and made.secret_updated_by_user_id is not None
    assert bt.ai_secrets.create(name="openai", secret="sk-other-value-0000") == made  # found, unchanged
    short = bt.ai_secrets.create(name="short", type="anthropic", secret="abc")
    assert short.preview_secret == "********"
    put = httpx.put(f"{server.url}/v1/ai_secret", json={"name": "short", "type": "anthropic"},
                    headers={"Authorization": "Bearer owner-key"})  # fmt: skip
    assert set(put.json()) == set(short.model_dump())  # only the read schema's fields, none added
    replaced = bt.ai_secrets.replace(name="openai", type="azure")  # no secret: the value stays
    assert (replaced.id, replaced.type, replaced.preview_secret) == (made.id, "azure", "********WXYZ")
    assert replaced.metadata is None  # a replace takes the body's fields, the absent ones null
    patched = bt.ai_secrets.update(made.id, secret="sk-new-value-000000-QRST")
    assert patched.preview_secret == "********QRST" and patched.type == "azure"
    assert ids(bt.ai_secrets.list(ai_secret_name="openai")) == [made.id]
    assert ids(bt.ai_secrets.list(ai_secret_type=["anthropic"])) == [short.id]
    assert ids(bt.ai_secrets.list(limit=1)) == [short.id, made.id]  # newest first, auto-paged
    with client(server, "member-key") as member:
        assert member.ai_secrets.retrieve(made.id) == patched
        with pytest.raises(PermissionDeniedError):
            member.ai_secrets.create(name="mine", secret="x")
    with client(server, "outsider-key") as outsider:
        assert ids(outsider.ai_secrets.list()) == []
        with pytest.raises(NotFoundError):
            outsider.ai_secrets.retrieve(made.id)
        with pytest.raises(NotFoundError):
            outsider.ai_secrets.find_and_delete(name="openai")
    assert bt.ai_secrets.find_and_delete(name="openai").id == made.id
    assert bt.ai_secrets.delete(short.id).id == short.id
    assert ids(bt.ai_secrets.list()) == []
    with pytest.raises(NotFoundError):
        bt.ai_secrets.find_and_delete(name="openai")
