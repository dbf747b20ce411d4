"""Project configuration objects over REST: list a project's, write one (create or replace).

The kinds, their routes and keys are in :mod:`pipeline.common.config_kinds`. Lists follow
``starting_after`` paging (:func:`pipeline.api.objects.list_all`); a kind whose list route
answers 404 is one the deployment does not serve (an older self-hosted stack), recorded as
such rather than failing the run. Writes are ``PUT`` (create, or replace the object of the
same name or slug in the project: the spec's create-or-replace), so writing an object twice
leaves one; the settings are the project's ``settings`` field, written with ``PATCH``.
"""

from __future__ import annotations

from typing import Any

import anyio

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import list_all
from pipeline.common.config_kinds import BY_NAME, SETTINGS_NAME, ConfigKind, ConfigSet, is_prompt_function
from pipeline.common.errors import NotFoundError, first_error


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


async def fetch_config(client: BraintrustClient, project: dict[str, Any], kinds: list[str]) -> ConfigSet:
    """Every object of ``kinds`` in ``project``, the kinds listed at once. A function that is
    a prompt and listed as a prompt too is kept once, as the prompt."""
    result = ConfigSet()
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
    return result


async def write_object(client: BraintrustClient, kind: ConfigKind, body: dict[str, Any]) -> dict[str, Any]:
    """Create or replace one object (``body`` from :func:`~pipeline.common.config_kinds.create_body`);
    the object as the server now holds it."""
    if kind.path is None:
        project: dict[str, Any] = await client.patch_json(
            f"/v1/project/{body['project_id']}", {"settings": body.get("settings")}
        )
        return {"name": SETTINGS_NAME, "id": project["id"], "settings": project.get("settings")}
    written: dict[str, Any] = await client.put_json(kind.path, body)
    return written
