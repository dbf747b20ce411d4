"""Conformance with the Stainless-generated REST client ``braintrust-api``, run against the emulator
with strict response validation: any answer whose shape differs from the client's models (built
from the public spec) fails, and every list is auto-paged past several pages with exact ids.

Resources covered: the API root, projects (and their logs), datasets, experiments, roles, ACLs,
users and organizations. Not covered, because the spec the emulator ships has no such route:
``organizations.delete``; and ``organizations.members.update`` (``PATCH /v1/organization/members``),
which the emulator does not serve (see ``test_spec_responses.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from braintrust_api import Braintrust, NotFoundError, PermissionDeniedError

from pipeline.emulator.auth import KeySpec
from pipeline.emulator.roles import SYSTEM_ROLES
from pipeline.emulator.server import RunningServer, ServerConfig

KEYS = (
    KeySpec("owner-key", "owner@conf.test", "conf", "owner"),
    *(KeySpec(f"member-key-{n}", f"member{n}@conf.test", "conf", "member") for n in range(5)),
    KeySpec("outsider-key", "outsider@elsewhere.test", "elsewhere", "owner"),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("client") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), keys=KEYS)) as running:
        yield running


def client(server: RunningServer, key: str = "owner-key") -> Braintrust:
    """The generated client on loopback, strict, without retries and without proxies from the
    environment (the emulator is the only server it may reach)."""
    assert server.url.startswith("http://127.0.0.1:")
    return Braintrust(
        api_key=key,
        base_url=server.url,
        max_retries=0,
        http_client=httpx.Client(trust_env=False),
        _strict_response_validation=True,
    )


@pytest.fixture
def bt(server: RunningServer) -> Iterator[Braintrust]:
    with client(server) as found:
        yield found


def ids(items: Any) -> list[str]:
    """Every id an auto-paging list yields, in order, each checked to come once."""
    found = [item.id for item in items]
    assert len(found) == len(set(found)), found
    return found


def newest(events: Any) -> dict[str, Any]:
    """The newest version of each row a fetch returned, by id."""
    found: dict[str, Any] = {}
    for event in sorted(events, key=lambda e: int(e.xact_id)):
        found[event.id] = event
    return found


def test_api_root(bt: Braintrust) -> None:
    assert bt.top_level.hello_world() == "Hello, World!"


def test_projects(bt: Braintrust) -> None:
    made = [bt.projects.create(name=f"project-{n}") for n in range(7)]
    assert bt.projects.create(name="project-3").id == made[3].id  # get-or-create by name
    assert bt.projects.retrieve(made[0].id) == made[0]
    renamed = bt.projects.update(made[0].id, name="project-0-renamed")
    assert renamed.name == "project-0-renamed" and renamed.id == made[0].id
    newest_first = [p.id for p in reversed(made)]
    assert ids(bt.projects.list(limit=2)) == newest_first
    assert ids(bt.projects.list(limit=3, starting_after=newest_first[1])) == newest_first[2:]
    backward = ids(bt.projects.list(limit=2, ending_before=newest_first[-1]))
    assert sorted(backward) == sorted(newest_first[:-1])
    assert ids(bt.projects.list(project_name="project-5")) == [made[5].id]
    assert ids(bt.projects.list(ids=[made[1].id, made[2].id])) == [made[2].id, made[1].id]
    gone = bt.projects.delete(made[6].id)
    assert gone.deleted_at is not None
    with pytest.raises(NotFoundError):
        bt.projects.retrieve(made[6].id)
    assert ids(bt.projects.list(limit=2)) == newest_first[1:]


def test_datasets_and_their_rows(bt: Braintrust) -> None:
    project = bt.projects.create(name="datasets")
    made = [
        bt.datasets.create(project_id=project.id, name=f"dataset-{n}", metadata={"n": n}) for n in range(6)
    ]
    assert bt.datasets.retrieve(made[2].id) == made[2]
    updated = bt.datasets.update(made[2].id, description="two", metadata={"n": 22})
    assert (updated.description, updated.metadata) == ("two", {"n": 22})
    assert ids(bt.datasets.list(project_id=project.id, limit=2)) == [d.id for d in reversed(made)]
    assert ids(bt.datasets.list(project_name="datasets", dataset_name="dataset-4")) == [made[4].id]
    dataset = made[0]
    inserted = bt.datasets.insert(
        dataset.id, events=[{"id": f"r{n}", "input": n, "expected": n} for n in range(3)]
    )
    assert inserted.row_ids == ["r0", "r1", "r2"]
    assert (
        bt.datasets.feedback(dataset.id, feedback=[{"id": "r1", "comment": "check", "tags": ["x"]}]).status
        == "success"
    )
    fetched = newest(bt.datasets.fetch(dataset.id).events)
    assert sorted(fetched) == ["r0", "r1", "r2"] and fetched["r1"].tags == ["x"]
    assert sorted(newest(bt.datasets.fetch_post(dataset.id, limit=10).events)) == ["r0", "r1", "r2"]
    assert bt.datasets.delete(made[5].id).deleted_at is not None
    assert ids(bt.datasets.list(project_id=project.id, limit=4)) == [d.id for d in reversed(made[:5])]


def test_experiments_and_their_rows(bt: Braintrust) -> None:
    project = bt.projects.create(name="experiments")
    made = [bt.experiments.create(project_id=project.id, name=f"experiment-{n}") for n in range(5)]
    fresh = bt.experiments.create(project_id=project.id, name="experiment-0", ensure_new=True)
    assert fresh.id != made[0].id
    assert bt.experiments.retrieve(made[1].id) == made[1]
    updated = bt.experiments.update(made[1].id, metadata={"k": "v"}, public=True)
    assert updated.metadata == {"k": "v"} and updated.public is True
    assert ids(bt.experiments.list(project_id=project.id, limit=2)) == [
        fresh.id,
        *(e.id for e in reversed(made)),
    ]
    experiment = made[0]
    bt.experiments.insert(experiment.id, events=[{"id": "e0", "input": 1, "scores": {"a": 0.5}}])
    bt.experiments.feedback(experiment.id, feedback=[{"id": "e0", "scores": {"b": 1}, "expected": 2}])
    events = newest(bt.experiments.fetch(experiment.id).events)
    assert list(events) == ["e0"] and events["e0"].scores == {"a": 0.5, "b": 1} and events["e0"].expected == 2
    assert list(newest(bt.experiments.fetch_post(experiment.id).events)) == ["e0"]
    assert bt.experiments.delete(fresh.id).deleted_at is not None


def test_project_logs(bt: Braintrust) -> None:
    project = bt.projects.create(name="logs")
    bt.projects.logs.insert(project.id, events=[{"id": "l0", "input": "q", "output": "a"}])
    bt.projects.logs.feedback(
        project.id, feedback=[{"id": "l0", "scores": {"good": 1}, "comment": "fine", "source": "api"}]
    )
    events = newest(bt.projects.logs.fetch(project.id).events)
    event = events["l0"]
    assert list(events) == ["l0"] and event.scores == {"good": 1} and event.output == "a"
    assert event.comments is not None and event.comments[0]["comment"] == {"text": "fine"}
    assert list(newest(bt.projects.logs.fetch_post(project.id, limit=5).events)) == ["l0"]


def test_merges_keep_span_ids_and_parent_ids_nest_spans(bt: Braintrust) -> None:
    """The spec: a merge into an existing row ignores ``span_id``, ``root_span_id`` and
    ``span_parents``; the deprecated ``_parent_id`` makes a new row a sub-span of the row it
    names (the spec's own example)."""
    project = bt.projects.create(name="merge-ids")
    bt.projects.logs.insert(
        project.id, events=[{"id": "r", "span_id": "s0", "root_span_id": "t0", "input": "q"}]
    )
    bt.projects.logs.insert(
        project.id,
        events=[
            {
                "id": "r",
                "_is_merge": True,
                "span_id": "s9",
                "root_span_id": "t9",
                "span_parents": ["s0"],
                "output": "a",
            }
        ],
    )
    bt.projects.logs.insert(project.id, events=[{"id": "abc", "input": "foo", "output": "bar"}])
    bt.projects.logs.insert(
        project.id, events=[{"_parent_id": "abc", "id": "llm_call", "input": {"prompt": "p"}}]
    )
    events = newest(bt.projects.logs.fetch(project.id).events)
    merged, parent, child = events["r"], events["abc"], events["llm_call"]
    assert (merged.span_id, merged.root_span_id, merged.span_parents, merged.is_root) == (
        "s0",
        "t0",
        None,
        True,
    )
    assert (merged.input, merged.output) == ("q", "a")
    assert (child.span_parents, child.root_span_id, child.is_root) == (
        [parent.span_id],
        parent.root_span_id,
        False,
    )


def test_patches_deep_merge_object_fields_and_replace_project_settings(bt: Braintrust) -> None:
    """The spec's PATCH: "Any object-type fields will be deep-merged with existing content";
    project settings are the exception it names ("Patch operations replace all settings")."""
    project = bt.projects.create(name="deep-merge")
    prompt = bt.prompts.create(project_id=project.id, name="pr", slug="pr", prompt_data={
        "prompt": {"type": "chat", "messages": [{"role": "system", "content": "terse"}]},
        "options": {"model": "gpt-4o", "params": {"temperature": 0.2}},
    })  # fmt: skip
    patched = bt.prompts.update(prompt.id, prompt_data={"options": {"params": {"max_tokens": 50}}})
    assert patched.prompt_data is not None
    assert patched.prompt_data.model_dump(exclude_none=True) == {
        "prompt": {"type": "chat", "messages": [{"role": "system", "content": "terse"}]},
        "options": {"model": "gpt-4o", "params": {"temperature": 0.2, "max_tokens": 50}},
    }
    experiment = bt.experiments.create(project_id=project.id, name="e", metadata={"run": {"seed": 1, "gpu": "a100"}})  # fmt: skip
    assert bt.experiments.update(experiment.id, metadata={"run": {"seed": 2}}).metadata == {"run": {"seed": 2, "gpu": "a100"}}  # fmt: skip
    view = bt.views.create(object_type="project", object_id=project.id, view_type="experiments", name="v",
                           options={"columnOrder": ["a", "b"]})  # fmt: skip
    options = bt.views.update(view.id, object_type="project", object_id=project.id, options={"columnSizing": {"a": 100}}).options  # fmt: skip
    assert options is not None
    assert options.model_dump(exclude_none=True, by_alias=True) == {
        "columnOrder": ["a", "b"],
        "columnSizing": {"a": 100},
    }
    bt.projects.update(project.id, settings={"comparison_key": "input"})
    settings = bt.projects.update(project.id, settings={"baseline_experiment_id": experiment.id}).settings
    assert settings is not None
    assert (settings.comparison_key, settings.baseline_experiment_id) == (None, experiment.id)


def test_a_list_pages_on_after_the_last_item_of_a_page_was_deleted(bt: Braintrust) -> None:
    """A generated client pages with ``starting_after`` = the last id of the page before; that
    object deleted in between still marks where the list goes on."""
    project = bt.projects.create(name="anchor-gone")
    older = bt.datasets.create(project_id=project.id, name="d1")
    newer = bt.datasets.create(project_id=project.id, name="d2")
    (first,) = bt.datasets.list(project_id=project.id, limit=1).objects
    assert first.id == newer.id
    bt.datasets.delete(newer.id)
    page = bt.datasets.list(project_id=project.id, limit=1, starting_after=newer.id).objects
    assert [d.id for d in page] == [older.id]


def test_roles(bt: Braintrust) -> None:
    made = [bt.roles.create(name=f"role-{n}", member_permissions=[{"permission": "read"}]) for n in range(5)]
    system = [r["id"] for r in SYSTEM_ROLES]
    assert ids(bt.roles.list(limit=2)) == [*(r.id for r in reversed(made)), *system]
    assert ids(bt.roles.list(role_name="role-2")) == [made[2].id]
    assert bt.roles.retrieve(made[0].id) == made[0]
    updated = bt.roles.update(
        made[0].id, add_member_permissions=[{"permission": "update"}], add_member_roles=[system[2]]
    )
    assert [p.permission for p in updated.member_permissions or []] == ["read", "update"]
    assert updated.member_roles == [system[2]]
    replaced = bt.roles.replace(name="role-0", description="replaced")
    assert (
        replaced.id == made[0].id
        and replaced.description == "replaced"
        and replaced.member_permissions is None
    )
    assert bt.roles.delete(made[4].id).deleted_at is not None
    assert ids(bt.roles.list(limit=3)) == [*(r.id for r in reversed(made[:4])), *system]
    with pytest.raises(PermissionDeniedError):
        bt.roles.update(system[0], description="no")


def test_acls(bt: Braintrust) -> None:
    project = bt.projects.create(name="acls")
    users = {u.email: u.id for u in bt.users.list()}
    grants = [
        bt.acls.create(
            object_type="project",
            object_id=project.id,
            user_id=users[f"member{n}@conf.test"],
            permission="read",
        )
        for n in range(5)
    ]
    assert bt.acls.retrieve(grants[0].id) == grants[0]
    listed = bt.acls.list(object_type="project", object_id=project.id, limit=2)
    assert ids(listed) == [a.id for a in reversed(grants)]
    change = bt.acls.batch_update(
        add_acls=[{"object_type": "project", "object_id": project.id, "user_id": users["member0@conf.test"], "permission": "update"}],
        remove_acls=[{"object_type": "project", "object_id": project.id, "user_id": users["member1@conf.test"], "permission": "read"}],
    )  # fmt: skip
    assert [a.id for a in change.removed_acls] == [grants[1].id] and change.added_acls[
        0
    ].permission == "update"
    found = bt.acls.find_and_delete(object_type="project", object_id=project.id, user_id=users["member2@conf.test"], permission="read")  # fmt: skip
    assert found.id == grants[2].id
    assert bt.acls.delete(grants[3].id).id == grants[3].id
    remaining = ids(bt.acls.list(object_type="project", object_id=project.id, limit=1))
    assert remaining == [change.added_acls[0].id, grants[4].id, grants[0].id]


def test_users(bt: Braintrust) -> None:
    everyone = ids(bt.users.list(limit=2))
    emails = [u.email for u in bt.users.list()]
    assert emails == [*(f"member{n}@conf.test" for n in reversed(range(5))), "owner@conf.test"]
    assert len(everyone) == 6
    owner = bt.users.retrieve(everyone[-1])
    assert (owner.email, owner.given_name, owner.family_name) == ("owner@conf.test", "Owner", None)
    picked = bt.users.list(email=["member1@conf.test", "member3@conf.test"])
    assert [u.email for u in picked] == ["member3@conf.test", "member1@conf.test"]
    with client_for(bt, "outsider-key") as outsider:
        assert [u.email for u in outsider.users.list()] == ["outsider@elsewhere.test"]
        with pytest.raises(NotFoundError):
            outsider.users.retrieve(owner.id)


def test_organizations(bt: Braintrust) -> None:
    (org,) = list(bt.organizations.list(limit=1))
    assert org.name == "conf"
    assert bt.organizations.retrieve(org.id) == org
    updated = bt.organizations.update(org.id, api_url="http://127.0.0.1:1", is_universal_api=True)
    assert (updated.api_url, updated.is_universal_api, updated.name) == ("http://127.0.0.1:1", True, "conf")
    assert ids(bt.organizations.list(org_name="conf")) == [org.id]
    with client_for(bt, "member-key-0") as member, pytest.raises(PermissionDeniedError):
        member.organizations.update(org.id, name="taken")


def client_for(bt: Braintrust, key: str) -> Braintrust:
    """Another key's client on the same server."""
    return bt.with_options(api_key=key)
