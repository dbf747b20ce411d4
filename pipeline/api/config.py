"""Project configuration objects over REST: list a project's, write one (create or replace).

The kinds, their routes and keys are in :mod:`pipeline.common.config_kinds`. Lists follow
``starting_after`` paging (:func:`pipeline.api.objects.list_all`); a kind whose list route
answers 404 is one the deployment does not serve (an older self-hosted stack), recorded as
such rather than failing the run. A prompt's earlier versions are read as the SDKs read them
(:func:`prompt_versions`). Writes are ``PUT`` (create, or replace the object of the
same name or slug in the project: the spec's create-or-replace), so writing an object twice
leaves one; the settings are the project's ``settings`` field, written with ``PATCH``.
"""

from __future__ import annotations

from typing import Any

import anyio

from pipeline.api.client import BraintrustClient, Response
from pipeline.api.objects import list_all
from pipeline.common import defaults, jsoncodec
from pipeline.common.config_kinds import (
    BY_NAME,
    SETTINGS_NAME,
    VERSIONS_OF,
    ConfigKind,
    ConfigSet,
    comparable,
    is_prompt_function,
    key_of,
)
from pipeline.common.errors import ApiError, NotFoundError, TransientApiError, first_error
from pipeline.common.versions import pretty_version


async def list_kind(
    client: BraintrustClient, kind: ConfigKind, project: dict[str, Any]
) -> list[dict[str, Any]]:
    """The objects of ``kind`` in ``project``; NotFoundError when the route is not served."""
    if kind.path is None:
        current = await client.get_json(f"/v1/project/{project['id']}")
        settings = current.get("settings")
        return [{"name": SETTINGS_NAME, "settings": settings}] if settings else []
    if kind.name == "view":
        params = {"object_type": "project", "object_id": project["id"]}
    else:
        params = {"project_id": project["id"]} if kind.by_project else {}
    found = [obj async for obj in list_all(client, kind.path, params)]
    if kind.name == "view":
        return found
    return [obj for obj in found if obj.get("project_id") == project["id"]]


async def fetch_config(
    client: BraintrustClient,
    project: dict[str, Any],
    kinds: list[str],
    *,
    versions: bool = False,
    workers: int = defaults.CONFIG_WORKERS.default,
) -> ConfigSet:
    """Every object of ``kinds`` in ``project``, the kinds listed at once. A function that is
    a prompt and listed as a prompt too is kept once, as the prompt. ``versions``: also each
    prompt's earlier versions (:func:`prompt_versions`), ``workers`` read at once."""
    result = ConfigSet(project_name=project.get("name"))
    found: dict[str, list[dict[str, Any]] | None] = {}

    async def one(name: str) -> None:
        try:
            found[name] = await list_kind(client, BY_NAME[name], project)
        except NotFoundError:
            found[name] = None

    try:
        async with anyio.create_task_group() as tg:
            for name in kinds:
                tg.start_soon(one, name)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    for name in kinds:
        objects = found[name]
        if objects is None:
            result.unserved.append(name)
        else:
            result.objects[name] = objects
    prompts = {p["id"] for p in result.objects.get("prompt", [])}
    if "function" in result.objects:
        result.objects["function"] = [
            f for f in result.objects["function"] if not (is_prompt_function(f) and f["id"] in prompts)
        ]
    if versions and result.objects.get("prompt"):
        history = await prompt_versions(client, project["id"], result.objects["prompt"], workers)
        if history is None:
            result.unserved.append(VERSIONS_OF["prompt"])
        else:
            result.versions = history
    return result


def _versions_query(project_id: str) -> dict[str, Any]:
    """The query the Python SDK's ``get_prompt_versions`` sends, for every prompt at once."""
    return {
        "from": {"op": "function", "name": {"op": "ident", "name": ["project_prompts"]},
                 "args": [{"op": "literal", "value": project_id}]},
        "select": [{"op": "star"}],
    }  # fmt: skip


async def prompt_versions(
    client: BraintrustClient, project_id: str, prompts: list[dict[str, Any]], workers: int
) -> dict[str, list[dict[str, Any]]] | None:
    """Each prompt's versions before its current one, oldest first, by prompt id; None when
    the deployment keeps no history it can list. The versions are listed as the SDK lists
    them (``/btql`` over ``project_prompts`` with ``audit_log``); each is then read whole
    with ``GET /v1/prompt/{id}?version=``, since an audit entry may hold only what changed."""
    current = {str(p["id"]): str(p.get("_xact_id") or 0) for p in prompts}
    older: dict[str, list[str]] = {}
    body: dict[str, Any] = {"query": _versions_query(project_id), "audit_log": True, "fmt": "json"}
    try:
        while True:
            answer = await client.post_json("/btql", body)
            for entry in answer.get("data") or []:
                pid, xact = str(entry.get("id")), str(entry.get("_xact_id"))
                action = (entry.get("audit_data") or {}).get("action")
                seen = older.setdefault(pid, []) if pid in current else []
                if (
                    pid in current
                    and xact != current[pid]
                    and action in ("upsert", "merge")
                    and xact not in seen
                ):
                    seen.append(xact)
            cursor = answer.get("cursor")
            if not cursor or not answer.get("data"):
                break
            body = {**body, "query": {**body["query"], "cursor": cursor}}
    except TransientApiError:
        raise
    except (ApiError, NotFoundError):
        return None
    found: dict[str, list[dict[str, Any]]] = {}
    limiter = anyio.CapacityLimiter(workers)

    async def read(pid: str, xacts: list[str]) -> None:
        ordered = sorted((x for x in xacts if x.isdigit() and int(x) < int(current[pid])), key=int)
        versions = []
        for xact in ordered:
            async with limiter:
                versions.append(await client.get_json(f"/v1/prompt/{pid}", {"version": pretty_version(xact)}))
        found[pid] = versions

    async with anyio.create_task_group() as tg:
        for pid, xacts in older.items():
            tg.start_soon(read, pid, xacts)
    return {pid: found[pid] for pid in older if found[pid]}


async def write_object(
    client: BraintrustClient,
    kind: ConfigKind,
    body: dict[str, Any],
    before: dict[str, Any] | None,
    project: dict[str, Any],
) -> dict[str, Any]:
    """Create or replace one object of ``project`` (``body`` from
    :func:`~pipeline.common.config_kinds.create_body`); the object as the server now holds it.
    ``before`` is the destination's object of that key as it was (None: none).

    Every ``PUT`` makes a version, so one is not simply sent again when its answer was lost:
    before a retry, the object is read, and one that now equals ``body`` in another version
    than ``before``'s is the write that landed."""
    if kind.path is None:
        current: dict[str, Any] = await client.patch_json(
            f"/v1/project/{project['id']}", {"settings": body.get("settings")}
        )
        return {"name": SETTINGS_NAME, "id": current["id"], "settings": current.get("settings")}

    async def landed() -> Response | None:
        key = key_of(kind, body)
        found = [o for o in await list_kind(client, kind, project) if key_of(kind, o) == key]
        if not found or comparable(found[0], {}) != comparable(body, {}):
            return None
        if before is not None and found[0].get("_xact_id") == before.get("_xact_id"):
            return None
        return Response(200, {}, jsoncodec.dumps(found[0]))

    written: dict[str, Any] = (
        await client.request("PUT", kind.path, body=jsoncodec.dumps(body), landed=landed)
    ).json()
    return written
