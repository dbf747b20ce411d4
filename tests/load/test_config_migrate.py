"""Project configuration objects through export, import, migrate and verify, against the
emulator: a project with every kind (prompts with tool functions, an LLM-judge scorer, an
inline code tool, a code function with a bundle, project scores with an online scorer, tags, a
view, a span iframe, an automation, settings naming the baseline experiment) is exported and
imported into a fresh project of ANOTHER org, and migrated there directly; each copy verifies
identical, every reference points at the destination's objects, and a re-run changes nothing
(same ids, no twins). A prompt naming a function the source does not have is reported by name
(exit 1, rows still copied); the code function is listed as skipped; a slug taken by an object
of another kind at the destination is one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from braintrust.xact_ids import prettify_xact
from hypothesis import given
from hypothesis import strategies as st

from pipeline.common.config_kinds import BY_NAME, ordered_levels, references, remap
from pipeline.common.errors import UsageError
from pipeline.common.selection import config_selection, parse_selection
from pipeline.emulator.server import spawn_emulator
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, send, unique

OTHER = "OTHER_ORG_KEY"
INLINE = {"type": "code", "data": {"type": "inline", "code": "def handler(x):\n    return x",
                                   "runtime_context": {"runtime": "python", "version": "3.11"}}}  # fmt: skip
BUNDLE = {"type": "code", "data": {"type": "bundle", "bundle_id": "b-1", "location": {"type": "function", "index": 0},
                                   "runtime_context": {"runtime": "node", "version": "20"}}}  # fmt: skip
CHAT = {"type": "chat", "messages": [{"role": "user", "content": "Summarize {{input}}"}]}


def _tool(function_id: str) -> dict[str, Any]:
    return {"type": "function", "id": function_id}


def make_configured_project(emulator: Emulator, prefix: str) -> dict[str, Any]:
    """A project holding rows and one or more objects of every configuration kind, with
    references between them; returns the objects by name."""
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique(prefix)})
    pid = project["id"]
    insert(
        url,
        key,
        "project_logs",
        pid,
        [{"id": f"log-{i}", "input": i, "tags": ["needs-review"]} for i in range(5)],
    )
    dataset = post(url, key, "/v1/dataset", {"project_id": pid, "name": "golden"})
    insert(url, key, "dataset", dataset["id"], [{"id": "d-1", "input": "q", "expected": "a"}])
    experiment = post(
        url, key, "/v1/experiment", {"project_id": pid, "name": "baseline", "dataset_id": dataset["id"]}
    )
    insert(
        url,
        key,
        "experiment",
        experiment["id"],
        [{"id": "e-1", "input": "q", "output": "a", "scores": {"accuracy": 1}}],
    )

    def put(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return send("PUT", url, key, f"/v1/{kind}", body)

    tool = put("function", {"project_id": pid, "name": "Lookup", "slug": "lookup", "function_data": INLINE,
                            "function_type": "tool", "description": "finds things"})  # fmt: skip
    bundled = put(
        "function", {"project_id": pid, "name": "Bundled", "slug": "bundled", "function_data": BUNDLE}
    )
    judge = put("function", {
        "project_id": pid, "name": "Judge", "slug": "judge", "function_type": "scorer",
        "function_data": {"type": "prompt"},
        "prompt_data": {"prompt": CHAT, "options": {"model": "gpt-4o"}, "tool_functions": [_tool(tool["id"])]},
    })  # fmt: skip
    prompt = put("prompt", {
        "project_id": pid, "name": "Summarize", "slug": "summarize", "tags": ["prod"],
        "prompt_data": {"prompt": CHAT, "options": {"model": "gpt-4o"}, "tool_functions": [_tool(tool["id"])]},
    })  # fmt: skip
    plain = put("prompt", {"project_id": pid, "name": "Plain", "slug": "plain", "description": "first",
                           "prompt_data": {"prompt": CHAT}})  # fmt: skip
    plain = send(
        "PATCH", url, key, f"/v1/prompt/{plain['id']}", {"description": "second"}
    )  # a second version
    tag = put("project_tag", {"project_id": pid, "name": "needs-review", "color": "red"})
    score = put("project_score", {"project_id": pid, "name": "accuracy", "score_type": "slider"})
    online = put("project_score", {
        "project_id": pid, "name": "judged", "score_type": "online",
        "config": {"online": {"sampling_rate": 0.5, "scorers": [_tool(judge["id"])]}},
    })  # fmt: skip
    view = put("view", {"object_type": "project", "object_id": pid, "view_type": "logs", "name": "triage",
                        "view_data": {"search": {"tag": ["needs-review"], "filter": ["scores.accuracy < 0.5"]}}})  # fmt: skip
    iframe = put("span_iframe", {"project_id": pid, "name": "viewer", "url": "https://example.com/{{id}}"})
    automation = put("project_automation", {
        "project_id": pid, "name": "alert",
        "config": {"event_type": "logs", "btql_filter": "scores.accuracy < 0.5", "interval_seconds": 60,
                   "action": {"type": "webhook", "url": "https://example.com/hook"}},
    })  # fmt: skip
    settings = {"comparison_key": "input", "baseline_experiment_id": experiment["id"]}
    send("PATCH", url, key, f"/v1/project/{pid}", {"settings": settings})
    return {
        "project": project, "dataset": dataset, "experiment": experiment, "tool": tool, "bundled": bundled,
        "judge": judge, "prompt": prompt, "plain": plain, "tag": tag, "score": score, "online": online,
        "view": view, "iframe": iframe, "automation": automation,
    }  # fmt: skip


def listing(emulator: Emulator, key: str, project_id: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Every configuration object of the project, per kind, by name, read straight from the server."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in ("prompt", "function", "project_score", "project_tag", "span_iframe", "project_automation"):
        objects = send(
            "GET", emulator.url, key, f"/v1/{kind}", params={"project_id": project_id, "limit": "1000"}
        )
        found[kind] = {o["name"]: o for o in objects["objects"] if o["project_id"] == project_id}
        assert len(found[kind]) == len([o for o in objects["objects"] if o["project_id"] == project_id]), kind
    views = send("GET", emulator.url, key, "/v1/view",
                 params={"object_type": "project", "object_id": project_id, "limit": "1000"})  # fmt: skip
    found["view"] = {v["name"]: v for v in views["objects"]}
    found["settings"] = {"settings": send("GET", emulator.url, key, f"/v1/project/{project_id}")["settings"]}
    return found


def destination_project(emulator: Emulator, name: str) -> dict[str, Any]:
    projects = send("GET", emulator.url, emulator.other_org_key, "/v1/project", params={"project_name": name})
    [project] = [p for p in projects["objects"] if p["name"] == name]
    return project


def check_copy(emulator: Emulator, source: dict[str, Any], project: dict[str, Any]) -> dict[str, Any]:
    """The destination holds every object but the bundled code function, each reference
    pointing at the destination's own objects; returns its listing."""
    got = listing(emulator, emulator.other_org_key, project["id"])
    assert set(got["function"]) == {"Lookup", "Judge"}  # the code bundle is not copied
    assert set(got["prompt"]) == {"Summarize", "Plain"}
    assert set(got["project_score"]) == {"accuracy", "judged"}
    assert set(got["project_tag"]) == {"needs-review"}
    assert set(got["span_iframe"]) == {"viewer"}
    assert set(got["project_automation"]) == {"alert"}
    assert set(got["view"]) == {"triage"}
    tool, judge = got["function"]["Lookup"], got["function"]["Judge"]
    assert tool["function_data"] == INLINE and tool["description"] == "finds things"
    assert got["prompt"]["Summarize"]["prompt_data"]["tool_functions"] == [_tool(tool["id"])]
    assert got["prompt"]["Summarize"]["tags"] == ["prod"]
    assert judge["prompt_data"]["tool_functions"] == [_tool(tool["id"])]
    assert got["project_score"]["judged"]["config"]["online"]["scorers"] == [_tool(judge["id"])]
    assert got["view"]["triage"]["object_id"] == project["id"]
    assert got["view"]["triage"]["view_data"] == source["view"]["view_data"]
    experiments = send(
        "GET", emulator.url, emulator.other_org_key, "/v1/experiment", params={"project_id": project["id"]}
    )
    [experiment] = experiments["objects"]
    assert got["settings"]["settings"] == {
        "comparison_key": "input",
        "baseline_experiment_id": experiment["id"],
    }
    ids = {o["id"] for objects in got.values() for o in objects.values() if "id" in o}
    source_ids = {v["id"] for v in source.values()}
    assert not ids & source_ids  # every object is the destination's own
    return got


def history(emulator: Emulator, key: str, project_id: str, prompt_id: str) -> list[str | None]:
    """The descriptions of a prompt's versions, oldest first, listed as the Python SDK lists them."""
    return [row.get("description") for row in versions_of(emulator, key, project_id, prompt_id)]


def ids_of(got: dict[str, Any]) -> dict[str, str]:
    return {
        f"{kind}:{name}": o["id"] for kind, objects in got.items() for name, o in objects.items() if "id" in o
    }


@pytest.fixture(scope="module")
def configured(emulator: Emulator) -> dict[str, Any]:
    return make_configured_project(emulator, "config-src")


def test_export_import_into_another_org_and_verify(
    emulator: Emulator, configured: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    name = configured["project"]["name"]
    out = tmp_path / "backup"
    result = btpipe(emulator, "export", "--project", name, "--out", str(out), "--format", "jsonl")
    assert result.exit_code == 0, result.output
    [manifest] = [json.loads(p.read_text()) for p in (out / "_manifests").glob("*.json")]
    counts = {entry["kind"]: entry["objects"] for entry in manifest["config"]}
    assert counts == {"project_tag": 1, "span_iframe": 1, "function": 3, "prompt": 2, "prompt_version": 1,
                      "project_score": 2, "view": 1, "project_automation": 1, "settings": 1}  # fmt: skip
    prompts = out / manifest["config"][3]["file"]["path"]
    assert prompts.name == "prompt.jsonl" and "_config/kind=prompt/run=" in str(prompts)
    exported = {p["slug"]: p for p in map(json.loads, prompts.read_text().splitlines())}
    assert exported["summarize"] == send(
        "GET", emulator.url, emulator.key, f"/v1/prompt/{configured['prompt']['id']}"
    )

    target = unique("config-import")
    args = ("import", "--in", str(out), "--to-project", target, "--create-project")
    result = btpipe(emulator, *args, key=emulator.other_org_key)
    assert result.exit_code == 0, result.output
    assert "function 'bundled': a code bundle cannot be copied; skipped" in result.output
    project = destination_project(emulator, target)
    first = check_copy(emulator, configured, project)
    assert len(all_rows(emulator.url, emulator.other_org_key, "project_logs", project["id"])) == 5
    plain = first["prompt"]["Plain"]
    assert history(emulator, emulator.other_org_key, project["id"], plain["id"]) == ["first", "second"]

    result = btpipe(emulator, "verify", "--in", str(out), "--to-project", target, key=emulator.other_org_key)
    assert result.exit_code == 0, result.output
    assert "prompts -> " in result.output and "2 vs 2 objects: identical" in result.output

    again = btpipe(emulator, *args, "--into-existing", key=emulator.other_org_key)  # a re-run changes nothing
    assert again.exit_code == 0, again.output
    assert " 0 created, 0 updated" in again.output and " created, 0 updated, 0 unchanged" not in again.output
    assert ids_of(check_copy(emulator, configured, project)) == ids_of(first)


def test_migrate_into_another_org_then_again(
    emulator: Emulator, configured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    source, target = configured["project"]["name"], unique("config-migrate")
    args = (
        "migrate",
        "--from-project",
        source,
        "--to-project",
        target,
        "--create-project",
        "--to-api-key-env",
        OTHER,
    )
    result = btpipe(emulator, *args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    created = {c["kind"]: c["created"] for c in summary["config"]}
    assert created == {"project_tag": 1, "span_iframe": 1, "function": 2, "prompt": 2, "project_score": 2,
                       "view": 1, "project_automation": 1, "settings": 1}  # fmt: skip
    assert summary["broken"] == []
    assert summary["warnings"] == ["function 'bundled': a code bundle cannot be copied; skipped"]
    project = destination_project(emulator, target)
    first = check_copy(emulator, configured, project)

    verify = btpipe(
        emulator, "verify", "--project", source, "--to-project", target, "--to-api-key-env", OTHER
    )
    assert verify.exit_code == 0, verify.output

    result = btpipe(emulator, *args, "--json", "--into-existing")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["config"]
    assert all(c["created"] == c["updated"] == 0 for c in counts), counts
    assert ids_of(check_copy(emulator, configured, project)) == ids_of(first)

    # a changed prompt is replaced in place, and verify saw the difference first
    send(
        "PATCH", emulator.url, emulator.key, f"/v1/prompt/{configured['plain']['id']}", {"description": "new"}
    )
    verify = btpipe(
        emulator, "verify", "--project", source, "--to-project", target, "--to-api-key-env", OTHER
    )
    assert verify.exit_code == 1 and "differing: 1 (e.g. plain)" in verify.output, verify.output
    result = btpipe(emulator, *args, "--json", "--objects", "prompts", "--into-existing")
    [count] = json.loads(result.stdout)["config"]
    assert (count["kind"], count["created"], count["updated"], count["unchanged"]) == ("prompt", 0, 1, 1)
    plain = listing(emulator, emulator.other_org_key, project["id"])["prompt"]["Plain"]
    assert plain["id"] == first["prompt"]["Plain"]["id"] and plain["description"] == "new"


def test_broken_reference_is_named_and_rows_still_copied(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("config-broken")})
    insert(url, key, "project_logs", project["id"], [{"id": "row-1", "input": 1}])
    missing = "00000000-0000-4000-8000-000000000000"
    send("PUT", url, key, "/v1/prompt", {"project_id": project["id"], "name": "Bad", "slug": "bad-prompt",
                                         "prompt_data": {"prompt": CHAT, "tool_functions": [_tool(missing)]}})  # fmt: skip
    target = unique("config-broken-dst")
    result = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", target,
                    "--create-project", "--to-api-key-env", OTHER)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"not copied: prompt 'bad-prompt': refers to id {missing}" in result.output
    copied = destination_project(emulator, target)
    assert set(all_rows(url, emulator.other_org_key, "project_logs", copied["id"])) == {"row-1"}


def test_slug_taken_by_another_kind_is_one_line(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("config-clash")})
    send("PUT", url, key, "/v1/prompt", {"project_id": project["id"], "name": "Summarize", "slug": "summarize",
                                         "prompt_data": {"prompt": CHAT}})  # fmt: skip
    target = post(url, emulator.other_org_key, "/v1/project", {"name": unique("config-clash-dst")})
    send("PUT", url, emulator.other_org_key, "/v1/function", {"project_id": target["id"], "name": "S",
                                                              "slug": "summarize", "function_data": INLINE})  # fmt: skip
    result = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", target["name"],
                    "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"btpipe: error: destination: prompt 'summarize' cannot be written: project {target['name']!r} "
        "has a function with that slug; rename one of them"
    ]
    assert listing(emulator, emulator.other_org_key, target["id"])["prompt"] == {}


def test_objects_names_configuration_kinds() -> None:
    assert config_selection("logs,prompts,views") == ["prompt", "view"]
    assert config_selection("config") == [kind for kind in BY_NAME]
    assert config_selection(None) == [kind for kind in BY_NAME]
    assert config_selection("logs,datasets") == []
    assert [s.object_type for s in parse_selection("logs,config,functions")] == ["project_logs"]
    with pytest.raises(UsageError, match=r"cannot understand .prompt. .*functions, prompts, project_scores"):
        parse_selection("logs,prompt")


_IDS = st.uuids().map(str)


@given(st.dictionaries(_IDS, _IDS, max_size=5), st.recursive(
    st.one_of(_IDS, st.text(max_size=5), st.integers()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
))  # fmt: skip
def test_remap_round_trips(id_map: dict[str, str], value: Any) -> None:
    """Remapping with a one-to-one map and then its inverse gives the value back, whatever
    the nesting, when no destination id is also a source id."""
    if set(id_map.values()) & set(id_map) or len(set(id_map.values())) != len(id_map):
        return
    inverse = {v: k for k, v in id_map.items()}
    forward = remap(value, id_map)
    if any(v in inverse for v in _strings(value)):
        return
    assert remap(forward, inverse) == value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)] + list(value)
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_references_order_and_cycles() -> None:
    a = {"id": "a", "prompt_data": {"tool_functions": [_tool("b")]}}
    b = {"id": "b", "function_data": {"type": "prompt"}}
    c = {"id": "c", "config": {"online": {"scorers": [_tool("a"), {"type": "global", "name": "Factuality"}]}}}
    x, y = {"id": "x", "tools": [_tool("y")]}, {"id": "y", "tools": [_tool("x")]}
    assert references(c) == ["a"]
    levels, cycle = ordered_levels([c, a, b, x, y])
    assert [[o["id"] for o in level] for level in levels] == [["b"], ["a"], ["c"]]
    assert [o["id"] for o in cycle] == ["x", "y"]
    # made from one another: an order that cannot hold is not a reason to leave them out
    p = {"id": "p", "prompt_data": {"origin": {"prompt_id": "q"}}}
    q = {"id": "q", "origin": {"object_type": "prompt", "object_id": "p"}}
    r = {"id": "r", "prompt_data": {"origin": {"prompt_id": "p"}}}
    levels, cycle = ordered_levels([r, p, q])
    assert [[o["id"] for o in level] for level in levels] == [["p", "q"], ["r"]] and cycle == []
    # made from an object in a cycle of references, which is never written: written all the same
    z = {"id": "z", "prompt_data": {"origin": {"prompt_id": "x"}}}
    levels, cycle = ordered_levels([x, y, z])
    assert [[o["id"] for o in level] for level in levels] == [["z"]] and [o["id"] for o in cycle] == [
        "x",
        "y",
    ]


def _acls(emulator: Emulator, key: str, project_id: str) -> list[dict[str, Any]]:
    found = send(
        "GET", emulator.url, key, "/v1/acl", params={"object_type": "project", "object_id": project_id}
    )
    return sorted(found["objects"], key=lambda a: a.get("permission") or "")


def test_acls_and_groups_with_users_mapped_by_email(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--acls --map-users`` in one org grants the same user on the copy and finds the same
    group; into another org it creates the group there, and the user it lacks is listed, not
    invented; without ``--map-users`` a user grant is listed."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("acl-src")})
    [member] = send("GET", url, key, "/v1/user", params={"email": "member@local.test"})["objects"]
    group = post(
        url,
        key,
        "/v1/group",
        {"name": unique("reviewers"), "member_users": [member["id"]], "org_name": "local"},
    )
    post(url, key, "/v1/acl", {"object_type": "project", "object_id": project["id"], "user_id": member["id"],
                               "permission": "update"})  # fmt: skip
    base = (
        "migrate",
        "--from-project",
        project["name"],
        "--create-project",
        "--objects",
        "config",
        "--acls",
        "--json",
    )
    missing = "user member@local.test has no account in the destination org"

    same = unique("acl-same")
    result = btpipe(emulator, *base, "--to-project", same, "--map-users")
    assert result.exit_code == 0, result.output
    acls = json.loads(result.stdout)["acls"]
    assert (acls["granted"], acls["groups_created"], acls["not_copied"]) == (1, 0, [])
    copy = send("GET", url, key, "/v1/project", params={"project_name": same})["objects"][0]
    granted = [(a.get("user_id"), a["permission"]) for a in _acls(emulator, key, copy["id"])]
    assert granted == [(member["id"], "update")]

    other = unique("acl-other")
    result = btpipe(emulator, *base, "--to-project", other, "--map-users", "--to-api-key-env", OTHER)
    assert result.exit_code == 0, result.output
    acls = json.loads(result.stdout)["acls"]
    assert acls["granted"] == 0 and acls["groups_created"] >= 1
    assert f"member of group {group['name']!r}: {missing}" in acls["not_copied"]
    assert f"update on project {other!r}: {missing}" in acls["not_copied"]
    assert _acls(emulator, emulator.other_org_key, destination_project(emulator, other)["id"]) == []
    groups = send("GET", url, emulator.other_org_key, "/v1/group", params={"group_name": group["name"]})[
        "objects"
    ]
    assert [(g["name"], g.get("member_users") or []) for g in groups] == [(group["name"], [])]

    nousers = unique("acl-nousers")
    result = btpipe(emulator, *base, "--to-project", nousers, "--to-api-key-env", OTHER)
    assert result.exit_code == 0, result.output
    acls = json.loads(result.stdout)["acls"]
    assert acls["groups_created"] == 0  # found by name this time
    assert [line for line in acls["not_copied"] if line.startswith("update on")] == [
        f"update on project {nousers!r}: a user, not mapped (pass --map-users to map users by email)"
    ]


def test_configuration_alone_then_some_kinds(
    emulator: Emulator, configured: dict[str, Any], tmp_path: Path
) -> None:
    """An export of the configuration alone holds no rows; importing only its prompts names the
    prompt whose tool function was not copied (exit 1) and creates the others."""
    out = tmp_path / "config-only"
    result = btpipe(emulator, "export", "--project", configured["project"]["name"], "--out", str(out),
                    "--objects", "config")  # fmt: skip
    assert result.exit_code == 0, result.output
    [manifest] = [json.loads(p.read_text()) for p in (out / "_manifests").glob("*.json")]
    assert manifest["objects"] == [] and len(manifest["config"]) == 9
    target = unique("config-prompts")
    result = btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--create-project",
                    "--objects", "prompts")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "not copied: prompt 'summarize': refers to function 'lookup', which was not copied" in (
        result.output
    )
    project = send("GET", emulator.url, emulator.key, "/v1/project", params={"project_name": target})[
        "objects"
    ][0]
    got = listing(emulator, emulator.key, project["id"])
    assert set(got["prompt"]) == {"Plain"} and got["function"] == {}


def test_a_changed_configuration_file_is_caught(
    emulator: Emulator, configured: dict[str, Any], tmp_path: Path
) -> None:
    """A configuration file that differs from its manifest entry stops an import before anything
    is written, and verify reports it instead of comparing."""
    out = tmp_path / "tampered"
    result = btpipe(emulator, "export", "--project", configured["project"]["name"], "--out", str(out),
                    "--objects", "prompts")  # fmt: skip
    assert result.exit_code == 0, result.output
    [path] = (out / "_config" / "kind=prompt").rglob("prompt.jsonl")
    path.write_text(path.read_text().replace("Summarize", "Summarise"))
    target = unique("config-tampered")
    result = btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--create-project")
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"btpipe: error: {path}: sha256 differs from the manifest"), line
    # nothing was written, not even the project it was to create
    assert not send("GET", emulator.url, emulator.key, "/v1/project", params={"project_name": target})[
        "objects"
    ]
    post(emulator.url, emulator.key, "/v1/project", {"name": target})
    result = btpipe(emulator, "verify", "--in", str(out), "--to-project", target)
    assert result.exit_code == 1 and "not compared, the source files are damaged" in result.output, (
        result.output
    )


def test_delete_refuses_configuration_kinds(emulator: Emulator) -> None:
    result = btpipe(
        emulator, "delete", "--project", "any", "--objects", "prompts", "--filter", "id = 'x'", "--yes"
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "btpipe: error: --objects: delete removes rows; configuration kinds (prompts, ...) are not rows"
    ]


def _prompt(project_id: str, slug: str, description: str) -> dict[str, Any]:
    return {"project_id": project_id, "slug": slug, "name": "Greeter", "description": description,
            "prompt_data": {"prompt": {"type": "chat", "messages": [{"role": "system", "content": description}]}}}  # fmt: skip


def test_a_renamed_prompt_keeps_one_history(emulator: Emulator) -> None:
    """Earlier versions under an old slug go to the same prompt: written by that slug they made
    a second prompt."""
    url, key = emulator.url, emulator.key
    source = post(url, key, "/v1/project", {"name": unique("renamed")})
    for description in ("v0", "v1"):
        made = send("PUT", url, key, "/v1/prompt", _prompt(source["id"], "greeter-old", description))
    send("PATCH", url, key, f"/v1/prompt/{made['id']}", {"slug": "greeter", "description": "v2"})
    target = unique("renamed-copy")
    moved = btpipe(emulator, "migrate", "--from-project", source["name"], "--to-project", target,
                   "--create-project", "--objects", "prompts")  # fmt: skip
    assert moved.exit_code == 0, moved.output
    (project,) = send("GET", url, key, "/v1/project", params={"project_name": target})["objects"]
    prompts = send("GET", url, key, "/v1/prompt", params={"project_id": project["id"]})["objects"]
    assert [p["slug"] for p in prompts] == ["greeter"]
    assert history(emulator, key, project["id"], prompts[0]["id"]) == ["v0", "v1", "v2"]
    assert btpipe(emulator, "verify", "--project", source["name"], "--to-project", target,
                  "--objects", "prompts").exit_code == 0  # fmt: skip


def test_a_prompt_whose_history_a_stopped_run_began_gets_the_rest(emulator: Emulator) -> None:
    """A migration stopped while it replayed a prompt's versions left the first ones at the
    destination; the next run writes the versions after them, not only the current one."""
    url, key = emulator.url, emulator.key
    source = post(url, key, "/v1/project", {"name": unique("history")})
    target = post(url, key, "/v1/project", {"name": unique("history-copy")})
    descriptions = [f"d{n}" for n in range(6)]
    for description in descriptions:
        send("PUT", url, key, "/v1/prompt", _prompt(source["id"], "greeter", description))
    for description in descriptions[:3]:  # what the stopped run wrote
        send("PUT", url, key, "/v1/prompt", _prompt(target["id"], "greeter", description))
    moved = btpipe(emulator, "migrate", "--from-project", source["name"], "--to-project", target["name"],
                   "--objects", "prompts", "--json")  # fmt: skip
    assert moved.exit_code == 0, moved.output
    (prompt,) = send("GET", url, key, "/v1/prompt", params={"project_id": target["id"]})["objects"]
    assert history(emulator, key, target["id"], prompt["id"]) == descriptions


def test_a_version_write_whose_answer_was_lost_is_not_written_twice(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destination that drops connections after taking a write: each prompt version goes in
    once (a retried PUT of a prompt makes another version), so the history is the source's."""
    url, key = emulator.url, emulator.key
    source = post(url, key, "/v1/project", {"name": unique("lossy")})
    descriptions = [f"d{n}" for n in range(8)]
    for description in descriptions:
        send("PUT", url, key, "/v1/prompt", _prompt(source["id"], "greeter", description))
    # every kind is written through the same check, a view's request naming its project apart
    send("PUT", url, key, "/v1/view", {"object_type": "project", "object_id": source["id"], "view_type": "logs", "name": "triage"})  # fmt: skip
    send("PUT", url, key, "/v1/project_score", {"project_id": source["id"], "name": "accuracy", "score_type": "slider"})  # fmt: skip
    send("PUT", url, key, "/v1/project_tag", {"project_id": source["id"], "name": "needs-review"})
    with spawn_emulator(tmp_path / "dst.db", "--faults", "rate=0.8,kinds=drop,seed=3") as lossy:
        destination = dataclasses.replace(emulator, url=lossy)
        monkeypatch.setenv("DESTINATION_KEY", key)
        target = unique("lossy-copy")
        moved = btpipe(emulator, "migrate", "--from-project", source["name"], "--to-project", target,
                       "--create-project", "--objects", "config", "--to-api-url", lossy,
                       "--to-api-key-env", "DESTINATION_KEY", "--max-retries", "30", "--max-backoff", "0.05")  # fmt: skip
        assert moved.exit_code == 0, moved.output
        send("PUT", lossy, destination.admin_key, "/_emulator/faults", {"rate": 0})
        (project,) = send("GET", lossy, key, "/v1/project", params={"project_name": target})["objects"]
        (prompt,) = send("GET", lossy, key, "/v1/prompt", params={"project_id": project["id"]})["objects"]
        assert history(destination, key, project["id"], prompt["id"]) == descriptions
        checked = btpipe(emulator, "verify", "--project", source["name"], "--to-project", target, "--objects",
                         "config", "--to-api-url", lossy, "--to-api-key-env", "DESTINATION_KEY")  # fmt: skip
        assert checked.exit_code == 0, checked.output


def test_graph_nodes_name_the_copies_of_their_functions(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graph function's nodes name functions by ``{"function_id": ...}`` (the spec's
    FunctionId): each is written after the functions it names and names their copies, in
    another org too; a node naming a function the source does not have is a broken reference."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("graph")})

    def function(slug: str, data: dict[str, Any]) -> dict[str, Any]:
        made: dict[str, Any] = send("PUT", url, key, "/v1/function",
                                    {"project_id": project["id"], "name": slug, "slug": slug, "function_data": data})  # fmt: skip
        return made

    def graph(*node_ids: str) -> dict[str, Any]:
        nodes: dict[str, Any] = {"in": {"type": "input"}, "out": {"type": "output"}}
        nodes.update(
            {f"n{i}": {"type": "function", "function": {"function_id": f}} for i, f in enumerate(node_ids)}
        )
        return {"type": "graph", "nodes": nodes, "edges": {}}

    # Listed newest first, the graph comes before the tools it names: only its references order it.
    tool_a, tool_b = function("tool-a", INLINE), function("tool-b", INLINE)
    function("graph-g", graph(tool_a["id"], tool_b["id"]))
    target = unique("graph-copy")
    for _ in range(2):
        result = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", target,
                        "--create-project", "--objects", "config", "--to-api-key-env", OTHER, "--json")  # fmt: skip
        assert result.exit_code == 0, result.output
    copied = destination_project(emulator, target)
    functions = listing(emulator, emulator.other_org_key, copied["id"])["function"]
    nodes = functions["graph-g"]["function_data"]["nodes"]
    assert [nodes[n]["function"]["function_id"] for n in ("n0", "n1")] == [
        functions["tool-a"]["id"],
        functions["tool-b"]["id"],
    ]
    assert orjson.loads(result.stdout)["config"][2] == {
        "kind": "function",
        "created": 0,
        "updated": 0,
        "unchanged": 3,
    }
    function("graph-h", graph("00000000-0000-4000-8000-00000000dead"))
    broken = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", target,
                    "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
    assert broken.exit_code == 1 and "not copied: function 'graph-h': refers to id" in broken.stderr


def test_a_graph_node_naming_its_own_project_by_name_names_the_copys_project(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A graph node may name its function by project name and slug (the spec's FunctionId):
    one naming the source project names the copy's project after migrate and import, one
    naming another project stays; verify tells a copy still naming the source project apart."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("graph-by-name")})
    send("PUT", url, key, "/v1/function", {"project_id": project["id"], "name": "tool", "slug": "tool", "function_data": INLINE})  # fmt: skip
    nodes = {
        "own": {"type": "function", "function": {"project_name": project["name"], "slug": "tool"}},
        "other": {"type": "function", "function": {"project_name": "shared-tools", "slug": "tool"}},
    }
    send("PUT", url, key, "/v1/function", {"project_id": project["id"], "name": "g", "slug": "g",
                                           "function_data": {"type": "graph", "nodes": nodes, "edges": {}}})  # fmt: skip
    migrated, imported = unique("graph-by-name-m"), unique("graph-by-name-i")
    result = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", migrated,
                    "--create-project", "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    result = btpipe(emulator, "export", "--project", project["name"], "--objects", "config", "--out", str(out), "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = btpipe(emulator, "import", "--in", str(out), "--to-project", imported, "--create-project",
                    "--state-dir", str(tmp_path / "i"), key=emulator.other_org_key)  # fmt: skip
    assert result.exit_code == 0, result.output
    for target in (migrated, imported):
        copied = destination_project(emulator, target)
        graph = listing(emulator, emulator.other_org_key, copied["id"])["function"]["g"]
        assert {n: v["function"]["project_name"] for n, v in graph["function_data"]["nodes"].items()} == {
            "own": target,
            "other": "shared-tools",
        }
    checked = btpipe(emulator, "verify", "--project", project["name"], "--to-project", migrated,
                     "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
    assert checked.exit_code == 0, checked.output
    copied = destination_project(emulator, migrated)
    send("PUT", url, emulator.other_org_key, "/v1/function", {"project_id": copied["id"], "name": "g", "slug": "g",
                                                              "function_data": {"type": "graph", "nodes": nodes, "edges": {}}})  # fmt: skip
    checked = btpipe(emulator, "verify", "--project", project["name"], "--to-project", migrated,
                     "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
    assert checked.exit_code == 1, checked.output
    # a function of its own project that no copy holds (a code bundle): not copied, as by id
    send("PUT", url, key, "/v1/function", {"project_id": project["id"], "name": "bundled", "slug": "bundled", "function_data": BUNDLE})  # fmt: skip
    bundled = {"type": "function", "function": {"project_name": project["name"], "slug": "bundled"}}
    send("PUT", url, key, "/v1/prompt", {"project_id": project["id"], "name": "p", "slug": "p",
                                         "prompt_data": {"parser": {"type": "llm_classifier", "use_cot": False,
                                                                    "choice_scores": {"a": 1}}}, "metadata": {"scorer": bundled["function"]}})  # fmt: skip
    broken = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", unique("graph-by-name-b"),
                    "--create-project", "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
    assert broken.exit_code == 1, broken.output
    assert (
        "not copied: prompt 'p': refers to 'bundled' of its project by name, which was not copied"
        in broken.stderr
    )


def test_a_custom_roles_inherited_roles_are_copied_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A custom role granted on the project is created in the destination org with its
    permissions and the roles it inherits (``member_roles``: a built-in role, another custom
    role, created first), each named as the destination's own; a user in both orgs keeps
    everything the role gave."""
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.emulator.auth import KeySpec
    from pipeline.emulator.server import RunningServer, ServerConfig

    keys = (KeySpec("a-owner", "owner@a.test", "a"), KeySpec("b-owner", "owner@b.test", "b"),
            KeySpec("a-shared", "shared@x.test", "a", "member"), KeySpec("b-shared", "shared@x.test", "b", "member"))  # fmt: skip
    with RunningServer(ServerConfig(port=0, db=str(tmp_path / "e.db"), keys=keys)) as server:
        url = server.url
        monkeypatch.setenv("B_KEY", "b-owner")
        roles = {r["name"]: r["id"] for r in send("GET", url, "a-owner", "/v1/role")["objects"]}
        base = post(
            url, "a-owner", "/v1/role", {"name": "base", "member_permissions": [{"permission": "read_acls"}]}
        )
        plus = post(url, "a-owner", "/v1/role", {"name": "eng-plus", "member_permissions": [{"permission": "create_acls"}],
                                                 "member_roles": [roles["Engineer"], base["id"]]})  # fmt: skip
        project = post(url, "a-owner", "/v1/project", {"name": "p"})
        [shared] = send("GET", url, "a-owner", "/v1/user", params={"email": "shared@x.test"})["objects"]
        post(url, "a-owner", "/v1/acl", {"object_type": "project", "object_id": project["id"], "user_id": shared["id"],
                                         "role_id": plus["id"]})  # fmt: skip
        env = {"BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": "a-owner"}
        result = CliRunner().invoke(main, ["migrate", "--from-project", "p", "--to-project", "p2", "--create-project",
                                           "--objects", "config", "--acls", "--map-users", "--to-api-key-env", "B_KEY",
                                           "--json"], env=env)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["acls"]["roles_created"] == 2
        theirs = {r["name"]: r for r in send("GET", url, "b-owner", "/v1/role")["objects"]}
        assert theirs["eng-plus"]["member_permissions"] == [
            {"permission": "create_acls", "restrict_object_type": None}
        ]
        assert sorted(theirs["eng-plus"]["member_roles"]) == sorted(
            [theirs["Engineer"]["id"], theirs["base"]["id"]]
        )
        assert theirs["base"]["org_id"] != base["org_id"]

        # Roles inheriting each other, and a role inheriting one since deleted: each role is
        # copied without what cannot be, listed, and the migration goes on.
        cyc_a = post(url, "a-owner", "/v1/role", {"name": "cyc-a"})
        cyc_b = post(url, "a-owner", "/v1/role", {"name": "cyc-b", "member_roles": [cyc_a["id"]]})
        send("PATCH", url, "a-owner", f"/v1/role/{cyc_a['id']}", {"add_member_roles": [cyc_b["id"]]})
        old = post(url, "a-owner", "/v1/role", {"name": "old"})
        uses_old = post(url, "a-owner", "/v1/role", {"name": "uses-old", "member_roles": [old["id"]]})
        send("DELETE", url, "a-owner", f"/v1/role/{old['id']}")
        second = post(url, "a-owner", "/v1/project", {"name": "q"})
        for role in (cyc_b, uses_old):
            post(url, "a-owner", "/v1/acl", {"object_type": "project", "object_id": second["id"],
                                             "user_id": shared["id"], "role_id": role["id"]})  # fmt: skip
        result = CliRunner().invoke(main, ["migrate", "--from-project", "q", "--to-project", "q2", "--create-project",
                                           "--objects", "config", "--acls", "--map-users", "--to-api-key-env", "B_KEY",
                                           "--json"], env=env)  # fmt: skip
        assert result.exit_code == 0, result.output
        acls = json.loads(result.stdout)["acls"]
        assert acls["granted"] == 2 and acls["roles_created"] == 3
        assert sorted(acls["not_copied"]) == [
            f"role 'cyc-a': inherits role {cyc_b['id']}, which inherits it back; that inheritance is left out",
            f"role 'uses-old': inherits role {old['id']}, which the source no longer has; left out",
        ]
        theirs = {r["name"]: r for r in send("GET", url, "b-owner", "/v1/role")["objects"]}
        assert (
            theirs["cyc-b"]["member_roles"] == [theirs["cyc-a"]["id"]] and not theirs["cyc-a"]["member_roles"]
        )


def test_an_experiments_parameters_and_the_projects_description_are_copied(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An experiment's ``parameters_id`` names the copy of the function it ran with (set once
    the configuration is written; its ``parameters_version`` names the copy's version where it
    named the function's current one, and an earlier one, which the copy does not have, gives
    a warning), its ``internal_metadata`` is kept, and a project the migration creates gets the
    source's description. Without the functions, the link is left out with a warning, never
    pointed at the source's function."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key, other = emulator.url, emulator.key, emulator.other_org_key
    project = post(url, key, "/v1/project", {"name": unique("params"), "description": "the project's own"})
    params = send("PUT", url, key, "/v1/function", {"project_id": project["id"], "name": "params", "slug": "params",
                                                    "function_type": "parameters", "function_data": INLINE})  # fmt: skip
    post(url, key, "/v1/experiment", {"project_id": project["id"], "name": "e0", "parameters_id": params["id"],
                                      "parameters_version": params["_xact_id"]})  # fmt: skip
    params = send("PUT", url, key, "/v1/function", {"project_id": project["id"], "name": "params", "slug": "params",
                                                    "function_type": "parameters", "function_data": INLINE,
                                                    "description": "changed since e0 ran"})  # fmt: skip
    post(url, key, "/v1/experiment", {"project_id": project["id"], "name": "e1", "parameters_id": params["id"],
                                      "parameters_version": params["_xact_id"], "internal_metadata": {"k": 1}})  # fmt: skip
    bundled = send("PUT", url, key, "/v1/function", {"project_id": project["id"], "name": "bundled", "slug": "bundled",
                                                     "function_type": "parameters", "function_data": BUNDLE})  # fmt: skip
    post(
        url,
        key,
        "/v1/experiment",
        {"project_id": project["id"], "name": "e2", "parameters_id": bundled["id"]},
    )
    target = unique("params-copy")
    result = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", target, "--create-project",
                    "--objects", "experiments,functions", "--to-api-key-env", OTHER)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "e0: its parameters_version" in result.stderr and "e1: its parameters_version" not in result.stderr
    copied = destination_project(emulator, target)
    assert copied["description"] == "the project's own"
    experiments = send("GET", url, other, "/v1/experiment", params={"project_id": copied["id"]})["objects"]
    experiment = next(e for e in experiments if e["name"] == "e1")
    [function] = send("GET", url, other, "/v1/function", params={"project_id": copied["id"]})["objects"]
    assert (experiment["parameters_id"], experiment["internal_metadata"]) == (function["id"], {"k": 1})
    assert experiment["parameters_version"] == function["_xact_id"]
    earlier = next(e for e in experiments if e["name"] == "e0")
    assert (earlier["parameters_id"], earlier["parameters_version"]) == (function["id"], None)
    check = ("verify", "--project", project["name"], "--to-project", target, "--objects", "experiments,functions",
             "--to-api-key-env", OTHER, "--json")  # fmt: skip
    assert btpipe(emulator, *check).exit_code == 0
    send(
        "PATCH", url, other, f"/v1/experiment/{experiment['id']}", {"parameters_version": params["_xact_id"]}
    )
    repinned = btpipe(emulator, *check)
    assert repinned.exit_code == 1, repinned.output
    [diff] = [d for d in json.loads(repinned.stdout)["objects"] if d["source"] == "experiments"]
    assert diff["differing_ids"] == ["e1 (parameters_version)"]
    send(
        "PATCH",
        url,
        other,
        f"/v1/experiment/{experiment['id']}",
        {"parameters_version": function["_xact_id"]},
    )
    send("PATCH", url, other, f"/v1/experiment/{experiment['id']}", {"parameters_id": None})
    unlinked = btpipe(emulator, *check)
    assert unlinked.exit_code == 1, unlinked.output
    [diff] = [d for d in json.loads(unlinked.stdout)["objects"] if d["source"] == "experiments"]
    assert diff["differing_ids"] == ["e1 (parameters_id, parameters_version)"]  # a pin of no function
    alone = unique("params-alone")
    result = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", alone, "--create-project",
                    "--objects", "experiments", "--to-api-key-env", OTHER)  # fmt: skip
    assert result.exit_code == 0 and "is not among the objects this load copied" in result.stderr, (
        result.output
    )
    alone_experiments = send("GET", url, other, "/v1/experiment",
                             params={"project_id": destination_project(emulator, alone)["id"]})["objects"]  # fmt: skip
    assert [e["parameters_id"] for e in alone_experiments] == [None, None, None]
    alone_check = btpipe(emulator, "verify", "--project", project["name"], "--to-project", alone, "--objects",
                         "experiments", "--to-api-key-env", OTHER)  # fmt: skip
    assert alone_check.exit_code == 0, alone_check.output  # the functions were not copied: no link to compare


def test_an_object_naming_the_prompt_it_came_from_names_the_copy(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt's ``prompt_data.origin.prompt_id`` and a function's ``origin`` (``object_type``
    prompt, ``object_id``) name the prompt they were made from: each is written after that
    prompt and names its copy, and a re-run of a copy that still names the source repairs it."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("origins")})
    pid = project["id"]
    source = send("PUT", url, key, "/v1/prompt", {"project_id": pid, "name": "zz-src", "slug": "zz-src",
                                                  "prompt_data": {"prompt": CHAT}})  # fmt: skip
    origin = {"prompt_id": source["id"], "project_id": pid}
    send("PUT", url, key, "/v1/prompt", {"project_id": pid, "name": "aa-derived", "slug": "aa-derived",
                                         "prompt_data": {"prompt": CHAT, "origin": origin}})  # fmt: skip
    send("PUT", url, key, "/v1/function", {
        "project_id": pid, "name": "aa-fn", "slug": "aa-fn", "function_type": "scorer",
        "function_data": {"type": "prompt"}, "prompt_data": {"prompt": CHAT},
        "origin": {"object_type": "prompt", "object_id": source["id"], "internal": True},
    })  # fmt: skip
    target = unique("origins-copy")
    for _ in range(2):
        result = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", target,
                        "--create-project", "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
        assert result.exit_code == 0, result.output
        copied = destination_project(emulator, target)
        got = listing(emulator, emulator.other_org_key, copied["id"])
        mine = got["prompt"]["zz-src"]["id"]
        assert got["prompt"]["aa-derived"]["prompt_data"]["origin"] == {
            "prompt_id": mine,
            "project_id": copied["id"],
        }
        assert got["function"]["aa-fn"]["origin"] == {
            "object_type": "prompt",
            "object_id": mine,
            "internal": True,
        }
        verified = btpipe(emulator, "verify", "--project", project["name"], "--to-project", target,
                          "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
        assert verified.exit_code == 0, verified.output
        # a copy made before objects were ordered by their origin still names the source
        for kind, slug, field in (("prompt", "aa-derived", "prompt_data"), ("function", "aa-fn", "origin")):
            stale = got[kind][slug]
            body = {field: json.loads(json.dumps(stale[field]).replace(mine, source["id"]))}
            send("PATCH", url, emulator.other_org_key, f"/v1/{kind}/{stale['id']}", body)


def test_who_may_see_a_project_score_is_named_in_the_copys_org(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project score's ``config.visibility`` names groups and users by id, which are their
    org's own: a copy within the org keeps them; into another org a group maps to that org's
    group of the same name (``--acls`` copies it first) and a score naming one the copy cannot
    map is listed, not copied with ids that mean nothing there; verify compares them by name."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    [member] = send("GET", url, key, "/v1/user", params={"email": "member@local.test"})["objects"]
    group = post(url, key, "/v1/group", {"name": unique("score-readers"), "org_name": "local"})
    by_group = post(url, key, "/v1/project", {"name": unique("seen-by-group")})
    post(url, key, "/v1/project_score", {"project_id": by_group["id"], "name": "private", "score_type": "slider",
                                         "config": {"visibility": {"groups": [group["id"]]}}})  # fmt: skip
    by_user = post(url, key, "/v1/project", {"name": unique("seen-by-user")})
    post(url, key, "/v1/project_score", {"project_id": by_user["id"], "name": "mine", "score_type": "slider",
                                         "config": {"visibility": {"users": [member["id"]]}}})  # fmt: skip

    def migrate(source: dict[str, Any], *flags: str) -> tuple[Any, str]:
        target = unique("seen-copy")
        result = btpipe(emulator, "migrate", "--from-project", source["name"], "--to-project", target,
                        "--create-project", "--objects", "config", *flags)  # fmt: skip
        return result, target

    def verify(source: dict[str, Any], target: str, *flags: str) -> Any:
        return btpipe(emulator, "verify", "--project", source["name"], "--to-project", target,
                      "--objects", "config", *flags)  # fmt: skip

    def score(key: str, target: str) -> dict[str, Any]:
        (project,) = send("GET", url, key, "/v1/project", params={"project_name": target})["objects"]
        (found,) = send("GET", url, key, "/v1/project_score", params={"project_id": project["id"]})["objects"]
        return found

    for source in (by_group, by_user):  # within the org: the same group and user
        result, target = migrate(source)
        assert result.exit_code == 0, result.output
        assert score(key, target)["config"] == source_score_config(emulator, source)
        assert verify(source, target).exit_code == 0

    result, _ = migrate(by_group, "--to-api-key-env", OTHER)
    assert result.exit_code == 1
    assert (
        f"not copied: project_score 'private': refers to group {group['name']!r} in its visibility "
        "(the destination org has no group of that name)"
    ) in result.stderr
    result, target = migrate(by_group, "--to-api-key-env", OTHER, "--acls")
    assert result.exit_code == 0, result.output
    theirs = send("GET", url, emulator.other_org_key, "/v1/group", params={"group_name": group["name"]})
    (copied_group,) = theirs["objects"]
    assert score(emulator.other_org_key, target)["config"]["visibility"] == {"groups": [copied_group["id"]]}
    assert verify(by_group, target, "--to-api-key-env", OTHER).exit_code == 0
    # a copy naming the source org's group (as copies did) names no group of its own org
    stale = score(emulator.other_org_key, target)
    send("PATCH", url, emulator.other_org_key, f"/v1/project_score/{stale['id']}",
         {"config": {"visibility": {"groups": [group["id"]]}}})  # fmt: skip
    assert verify(by_group, target, "--to-api-key-env", OTHER).exit_code == 1

    for flags, why in (
        (("--acls",), "not mapped: pass --map-users"),
        (("--acls", "--map-users"), "no account in the destination org"),
    ):
        result, _ = migrate(by_user, "--to-api-key-env", OTHER, *flags)
        assert result.exit_code == 1
        assert f"refers to user member@local.test in its visibility ({why}" in result.stderr, result.stderr


def source_score_config(emulator: Emulator, project: dict[str, Any]) -> Any:
    (found,) = send("GET", emulator.url, emulator.key, "/v1/project_score", params={"project_id": project["id"]})["objects"]  # fmt: skip
    return found["config"]


def test_a_reference_pinned_to_a_version_names_the_copys_version(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function reference pinned to a ``version`` names the copy's current version where it
    pinned the source function's current one (a saved scorer, a graph node); one pinned to an
    earlier version, which the copy does not have (its versions are new), is listed and not
    copied rather than left naming a version of the source. Verify compares a pin to the
    current version as such, and a re-run changes nothing."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("pins")})
    pid = project["id"]

    def function(slug: str, **fields: Any) -> dict[str, Any]:
        made: dict[str, Any] = send("PUT", url, key, "/v1/function",
                                    {"project_id": pid, "name": slug, "slug": slug, "function_data": INLINE, **fields})  # fmt: skip
        return made

    judge = function("judge", function_type="scorer")
    first = function("tool", description="first")
    tool = function("tool", description="second")
    post(url, key, "/v1/project_score", {"project_id": pid, "name": "judged", "score_type": "online", "config": {
        "online": {"sampling_rate": 1, "scorers": [{"type": "function", "id": judge["id"], "version": judge["_xact_id"]}]}}})  # fmt: skip
    # the same pin as the SDKs print versions (16 hex digits)
    pretty = prettify_xact(judge["_xact_id"])
    post(url, key, "/v1/project_score", {"project_id": pid, "name": "pretty", "score_type": "online", "config": {
        "online": {"sampling_rate": 1, "scorers": [{"type": "function", "id": judge["id"], "version": pretty}]}}})  # fmt: skip
    node = {"type": "function", "function": {"function_id": tool["id"], "version": tool["_xact_id"]}}
    function("graph-now", function_data={"type": "graph", "nodes": {"n": node}, "edges": {}})
    stale = {"type": "function", "function": {"function_id": tool["id"], "version": first["_xact_id"]}}
    function("graph-then", function_data={"type": "graph", "nodes": {"n": stale}, "edges": {}})
    by_slug = {"type": "function", "function": {"project_name": project["name"], "slug": "tool", "version": tool["_xact_id"]}}  # fmt: skip
    function("graph-slug", function_data={"type": "graph", "nodes": {"n": by_slug}, "edges": {}})
    stale_slug = {"type": "function", "function": {"project_name": project["name"], "slug": "tool", "version": first["_xact_id"]}}  # fmt: skip
    function("graph-slug-then", function_data={"type": "graph", "nodes": {"n": stale_slug}, "edges": {}})
    target = unique("pins-copy")
    args = ("migrate", "--from-project", project["name"], "--to-project", target, "--create-project",
            "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
    for _ in range(2):
        result = btpipe(emulator, *args)
        assert result.exit_code == 1
        assert (
            f"not copied: function 'graph-then': refers to version {first['_xact_id']} of function 'tool' "
            "(not a version the copy holds)"
        ) in result.stderr, result.stderr
        assert (
            f"not copied: function 'graph-slug-then': refers to version {first['_xact_id']}" in result.stderr
        )
        got = listing(emulator, emulator.other_org_key, destination_project(emulator, target)["id"])
        assert set(got["function"]) == {"judge", "tool", "graph-now", "graph-slug"}, result.stderr
        mine = got["function"]
        for name in ("judged", "pretty"):
            assert got["project_score"][name]["config"]["online"]["scorers"] == [
                {"type": "function", "id": mine["judge"]["id"], "version": mine["judge"]["_xact_id"]}
            ]
        assert mine["graph-now"]["function_data"]["nodes"]["n"]["function"] == {
            "function_id": mine["tool"]["id"],
            "version": mine["tool"]["_xact_id"],
        }
        assert mine["graph-slug"]["function_data"]["nodes"]["n"]["function"] == {
            "project_name": target,
            "slug": "tool",
            "version": mine["tool"]["_xact_id"],
        }
    verified = btpipe(emulator, "verify", "--project", project["name"], "--to-project", target,
                      "--objects", "config", "--to-api-key-env", OTHER, "--json")  # fmt: skip
    diffs = {d["source"]: d for d in json.loads(verified.stdout)["objects"]}
    assert (diffs["functions"]["missing_ids"], diffs["functions"]["differing"]) == (
        ["graph-slug-then", "graph-then"],
        0,
    )
    assert (diffs["project_scores"]["missing"], diffs["project_scores"]["differing"]) == (0, 0)
    # the scores alone: the functions they pin are read to name them, on both sides
    alone = btpipe(emulator, "verify", "--project", project["name"], "--to-project", target,
                   "--objects", "project_scores", "--to-api-key-env", OTHER)  # fmt: skip
    assert alone.exit_code == 0, alone.output


def test_a_key_of_both_orgs_does_not_take_the_source_orgs_group_for_the_destinations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key that reaches both orgs reads the source org's group at the destination too: that
    group is still not the destination org's, so a score it may see is not copied naming it,
    and verify tells a copy naming it from one naming the destination's group."""
    from pipeline.emulator.auth import KeySpec
    from pipeline.emulator.server import RunningServer, ServerConfig

    keys = (KeySpec("multi", "multi@x.test", "a"), KeySpec("multi", "multi@x.test", "b"),
            KeySpec("b-only", "owner@b.test", "b"))  # fmt: skip
    with RunningServer(ServerConfig(port=0, db=str(tmp_path / "e.db"), keys=keys)) as server:
        emulator = Emulator(url=server.url, key="multi")
        monkeypatch.setenv("MULTI", "multi")
        group = post(server.url, "multi", "/v1/group", {"name": "readers", "org_name": "a"})
        source = post(server.url, "multi", "/v1/project", {"name": "vis-src", "org_name": "a"})
        post(server.url, "multi", "/v1/project_score", {"project_id": source["id"], "name": "private", "score_type": "slider",
                                                        "config": {"visibility": {"groups": [group["id"]]}}})  # fmt: skip
        target = post(server.url, "multi", "/v1/project", {"name": "vis-dst", "org_name": "b"})
        args = ("--objects", "config", "--to-api-key-env", "MULTI")
        moved = btpipe(emulator, "migrate", "--from-project", "vis-src", "--to-project", target["id"], *args)
        assert (
            moved.exit_code == 1
            and "'readers' in its visibility (the destination org has no group" in moved.stderr
        )
        theirs = post(server.url, "b-only", "/v1/group", {"name": "readers", "org_name": "b"})
        moved = btpipe(emulator, "migrate", "--from-project", "vis-src", "--to-project", target["id"], *args)
        assert moved.exit_code == 0, moved.output
        (score,) = send("GET", server.url, "multi", "/v1/project_score", params={"project_id": target["id"]})[
            "objects"
        ]
        assert score["config"]["visibility"] == {"groups": [theirs["id"]]}
        check = ("verify", "--project", "vis-src", "--to-project", target["id"], *args)
        assert btpipe(emulator, *check).exit_code == 0
        send("PATCH", server.url, "multi", f"/v1/project_score/{score['id']}",
             {"config": {"visibility": {"groups": [group["id"]]}}})  # fmt: skip
        assert btpipe(emulator, *check).exit_code == 1
        # against an export, whose ids are the source org's own, the other org's id differs too
        out = tmp_path / "backup"
        assert (
            btpipe(
                emulator, "export", "--project", "vis-src", "--objects", "config", "--out", str(out)
            ).exit_code
            == 0
        )
        against = btpipe(
            emulator, "verify", "--in", str(out), "--to-project", target["id"], "--objects", "project_scores"
        )
        assert against.exit_code == 1 and "differing: 1" in against.output, against.output


def test_an_earlier_version_naming_a_function_is_written_after_it(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt whose earlier version names a function its current one no longer does is
    written after that function, so the version is replayed naming the copy, not left out."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("old-tools")})
    pid = project["id"]
    first = {"project_id": pid, "name": "pp", "slug": "pp", "description": "with a tool",
             "prompt_data": {"prompt": CHAT, "tool_functions": []}}  # fmt: skip
    send("PUT", url, key, "/v1/prompt", {**first, "description": "older"})
    tool = send("PUT", url, key, "/v1/function", {"project_id": pid, "name": "tool", "slug": "tool", "function_data": INLINE})  # fmt: skip
    send("PUT", url, key, "/v1/prompt", {**first, "prompt_data": {"prompt": CHAT, "tool_functions": [_tool(tool["id"])]}})  # fmt: skip
    prompt = send("PUT", url, key, "/v1/prompt", {**first, "description": "no tools"})
    target = unique("old-tools-copy")
    result = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", target,
                    "--create-project", "--objects", "config", "--to-api-key-env", OTHER)  # fmt: skip
    assert result.exit_code == 0 and "left out" not in result.stderr, result.output
    copied = destination_project(emulator, target)
    mine = listing(emulator, emulator.other_org_key, copied["id"])
    assert history(emulator, emulator.other_org_key, copied["id"], mine["prompt"]["pp"]["id"]) == history(
        emulator, key, pid, prompt["id"]
    )


def test_a_pin_to_an_earlier_version_of_a_prompt_names_the_copys_version(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A prompt keeps its earlier versions in a copy (replayed), so a reference pinned to one
    (a saved function reference, a prompt's ``origin.prompt_version``) names the copy's
    version of the same content: in the run that writes it, and in a re-run, which finds the
    prompt as it is and reads its history; verify compares such pins by the version's content."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("prompt-pins")})
    pid = project["id"]
    body = {"project_id": pid, "name": "pa", "slug": "pa", "prompt_data": {"prompt": CHAT}}
    first = send("PUT", url, key, "/v1/prompt", {**body, "description": "first"})
    send("PUT", url, key, "/v1/prompt", {**body, "description": "second"})
    origin = {"prompt_id": first["id"], "project_id": pid, "prompt_version": first["_xact_id"]}
    send("PUT", url, key, "/v1/prompt", {"project_id": pid, "name": "pb", "slug": "pb",
                                         "prompt_data": {"prompt": CHAT, "origin": origin}})  # fmt: skip
    _pinned_score(emulator, pid, first)
    target = unique("prompt-pins-copy")
    args = _config_migration(project["name"], target)
    for flags in (("--create-project",), ()):
        result = btpipe(emulator, "migrate", *args, *flags)
        assert result.exit_code == 0, result.output
        copied = destination_project(emulator, target)
        got = listing(emulator, emulator.other_org_key, copied["id"])
        pa = got["prompt"]["pa"]
        [older] = [
            row["_xact_id"]
            for row in versions_of(emulator, emulator.other_org_key, copied["id"], pa["id"])
            if row.get("description") == "first"
        ]
        assert got["prompt"]["pb"]["prompt_data"]["origin"]["prompt_version"] == older
        assert got["project_score"]["judged"]["config"]["online"]["scorers"][0]["version"] == older
    verify = ("verify", "--project", project["name"], "--to-project", target, "--objects", "config",
              "--to-api-key-env", OTHER)  # fmt: skip
    assert btpipe(emulator, *verify).exit_code == 0
    # the prompts first, then the scores alone: the pin names the version of the prompt found there
    apart = unique("prompt-pins-apart")
    for objects, flags in (("prompts", ("--create-project",)), ("project_scores", ())):
        moved_apart = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", apart,
                             "--objects", objects, "--to-api-key-env", OTHER, *flags)  # fmt: skip
        assert moved_apart.exit_code == 0, moved_apart.output
    there = listing(emulator, emulator.other_org_key, destination_project(emulator, apart)["id"])
    theirs = versions_of(
        emulator, emulator.other_org_key, there["prompt"]["pa"]["project_id"], there["prompt"]["pa"]["id"]
    )
    [earlier] = [v["_xact_id"] for v in theirs if v.get("description") == "first"]
    assert there["project_score"]["judged"]["config"]["online"]["scorers"][0]["version"] == earlier
    score = got["project_score"]["judged"]
    moved = {
        "online": {
            "sampling_rate": 1,
            "scorers": [{"type": "function", "id": pa["id"], "version": pa["_xact_id"]}],
        }
    }
    send("PATCH", url, emulator.other_org_key, f"/v1/project_score/{score['id']}", {"config": moved})
    assert btpipe(emulator, *verify).exit_code == 1  # pinned to the current version, not the first


def versions_of(emulator: Emulator, key: str, project_id: str, prompt_id: str) -> list[dict[str, Any]]:
    """A prompt's versions, oldest first, as the Python SDK lists them."""
    query = {
        "from": {"op": "function", "name": {"op": "ident", "name": ["project_prompts"]},
                 "args": [{"op": "literal", "value": project_id}]},
        "select": [{"op": "star"}],
        "filter": {"op": "eq", "left": {"op": "ident", "name": ["id"]}, "right": {"op": "literal", "value": prompt_id}},
    }  # fmt: skip
    found: list[dict[str, Any]] = send("POST", emulator.url, key, "/btql", {"query": query, "audit_log": True, "fmt": "json"})["data"]  # fmt: skip
    return found


def test_pins_to_earlier_versions_that_were_renamed_pin_or_name_themselves(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Earlier versions compared by verify as a copy holds them (under the prompt's current
    slug, with the pins they hold named), an origin naming the prompt's own earlier version
    naming the copy's, and an origin naming a version the copy does not hold listed: migrate
    and verify agree, and a re-run changes nothing."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("odd-pins")})
    pid = project["id"]

    def put(kind: str, **fields: Any) -> dict[str, Any]:
        made: dict[str, Any] = send("PUT", url, key, f"/v1/{kind}", {"project_id": pid, **fields})
        return made

    tool = put("function", name="tool", slug="tool", function_data=INLINE)
    pinned_tool = {"type": "function", "id": tool["id"], "version": tool["_xact_id"]}
    old = put("prompt", name="old", slug="old", description="first",
              prompt_data={"prompt": CHAT, "tool_functions": [pinned_tool]})  # fmt: skip
    send(
        "PATCH", url, key, f"/v1/prompt/{old['id']}", {"slug": "new", "name": "new", "description": "second"}
    )
    origin = {"prompt_id": old["id"], "project_id": pid, "prompt_version": old["_xact_id"]}
    put("prompt", name="new", slug="new", description="third", prompt_data={"prompt": CHAT, "origin": origin})
    _pinned_score(emulator, pid, old)
    target = unique("odd-pins-copy")
    args = _config_migration(project["name"], target)
    for flags in (("--create-project",), ()):
        result = btpipe(emulator, "migrate", *args, *flags, "--json")
        assert result.exit_code == 0, result.output
        copied = destination_project(emulator, target)
        got = listing(emulator, emulator.other_org_key, copied["id"])
        new = got["prompt"]["new"]
        [first] = [v for v in versions_of(emulator, emulator.other_org_key, copied["id"], new["id"])
                   if v.get("description") == "first"]  # fmt: skip
        assert new["prompt_data"]["origin"] == {"prompt_id": new["id"], "project_id": copied["id"],
                                                "prompt_version": first["_xact_id"]}  # fmt: skip
        assert (
            got["project_score"]["judged"]["config"]["online"]["scorers"][0]["version"] == first["_xact_id"]
        )
    counts = {c["kind"]: c for c in json.loads(result.stdout)["config"]}
    assert (counts["prompt"]["unchanged"], counts["project_score"]["unchanged"]) == (1, 1)
    verified = btpipe(emulator, "verify", "--project", project["name"], "--to-project", target, "--objects", "config",
                      "--to-api-key-env", OTHER)  # fmt: skip
    assert verified.exit_code == 0, verified.output

    # an origin naming a version the copy does not hold (left out: it named a deleted function)
    gone = put("function", name="gone", slug="gone", function_data=INLINE)
    left = put("prompt", name="left", slug="left", description="v1", prompt_data={"prompt": CHAT, "tool_functions": [_tool(gone["id"])]})  # fmt: skip
    put("prompt", name="left", slug="left", description="v2", prompt_data={"prompt": CHAT})
    send("DELETE", url, key, f"/v1/function/{gone['id']}")
    pointing = {"prompt_id": left["id"], "project_id": pid, "prompt_version": left["_xact_id"]}
    put("prompt", name="child", slug="child", prompt_data={"prompt": CHAT, "origin": pointing})
    result = btpipe(emulator, "migrate", *args)
    assert result.exit_code == 1
    assert (
        f"not copied: prompt 'child': refers to version {left['_xact_id']} of prompt 'left'" in result.stderr
    )


def _pinned_score(emulator: Emulator, project_id: str, function: dict[str, Any]) -> None:
    """An online score ``judged`` whose scorer is ``function`` pinned to its version as it is."""
    scorer = {"type": "function", "id": function["id"], "version": function["_xact_id"]}
    post(emulator.url, emulator.key, "/v1/project_score", {"project_id": project_id, "name": "judged",
         "score_type": "online", "config": {"online": {"sampling_rate": 1, "scorers": [scorer]}}})  # fmt: skip


def _config_migration(source: str, target: str) -> tuple[str, ...]:
    """``migrate`` arguments copying ``source``'s configuration to ``target`` in the other org."""
    return (
        "--from-project",
        source,
        "--to-project",
        target,
        "--objects",
        "config",
        "--to-api-key-env",
        OTHER,
    )


def test_an_object_made_from_one_not_copied_is_not_copied_either(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt made from a prompt that this load lists as not copied is listed too, as what
    refers to such an object is: its origin would name the source's prompt. A copy made before
    keeps its origin naming the copy's prompt."""
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("made-from")})
    pid = project["id"]
    tool = send(
        "PUT",
        url,
        key,
        "/v1/function",
        {"project_id": pid, "name": "t", "slug": "t", "function_data": INLINE},
    )
    pinned = {"type": "function", "id": tool["id"], "version": tool["_xact_id"]}
    parent = send("PUT", url, key, "/v1/prompt", {"project_id": pid, "name": "p", "slug": "p",
                                                  "prompt_data": {"prompt": CHAT, "tool_functions": [pinned]}})  # fmt: skip
    origin = {"prompt_id": parent["id"], "project_id": pid, "prompt_version": parent["_xact_id"]}
    send("PUT", url, key, "/v1/prompt", {"project_id": pid, "name": "c", "slug": "c",
                                         "prompt_data": {"prompt": CHAT, "origin": origin}})  # fmt: skip
    target = unique("made-from-copy")
    first = btpipe(emulator, "migrate", *_config_migration(project["name"], target), "--create-project")
    assert first.exit_code == 0, first.output
    copied = destination_project(emulator, target)
    before = listing(emulator, emulator.other_org_key, copied["id"])["prompt"]
    assert before["c"]["prompt_data"]["origin"]["prompt_id"] == before["p"]["id"]
    send(
        "PATCH", url, key, f"/v1/function/{tool['id']}", {"description": "changed"}
    )  # p now pins an old version
    again = btpipe(emulator, "migrate", *_config_migration(project["name"], target))
    assert again.exit_code == 1
    assert "not copied: prompt 'p': refers to version" in again.stderr
    assert "not copied: prompt 'c': refers to prompt 'p', which was not copied" in again.stderr, again.stderr
    after = listing(emulator, emulator.other_org_key, copied["id"])["prompt"]
    assert after["c"]["prompt_data"]["origin"] == before["c"]["prompt_data"]["origin"]
