"""Projects, datasets and experiments: resolve by name or id, list, create when missing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio

from pipeline.api.client import BraintrustClient
from pipeline.common.errors import ApiError, NotFoundError, UsageError, first_error
from pipeline.common.rows import ObjectType
from pipeline.common.selection import parse_selection

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: REST collection for each object kind ("project_logs" rows live on the project).
_COLLECTION = {"project": "project", "dataset": "dataset", "experiment": "experiment"}


@dataclass(frozen=True)
class ObjectRef:
    """One object whose rows can be read or written: project logs, a dataset or an experiment."""

    object_type: ObjectType
    id: str
    name: str
    project_id: str
    info: dict[str, Any]

    @property
    def label(self) -> str:
        return "logs" if self.object_type == "project_logs" else f"{self.object_type}:{self.name}"

    @property
    def rows_path(self) -> str:
        """The REST prefix for this object's rows (insert, fetch)."""
        return f"/v1/{self.object_type}/{self.id}"


def is_uuid(value: str) -> bool:
    return bool(_UUID.match(value))


async def _list(client: BraintrustClient, kind: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
    async for obj in list_all(client, f"/v1/{_COLLECTION[kind]}", params):
        yield obj


async def list_all(
    client: BraintrustClient, path: str, params: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    """Every object of the list endpoint ``path``, following ``starting_after`` pagination."""
    params = {**params, "limit": "100"}
    while True:
        answer = await client.get_json(path, params)
        objects = answer.get("objects") if isinstance(answer, dict) else None
        if not isinstance(objects, list) or not all(isinstance(o, dict) and "id" in o for o in objects):
            raise ApiError(client.sided(f"GET {path}: the answer is not a list of objects with ids"))
        for obj in objects:
            yield obj
        if len(objects) < 100:
            return
        params["starting_after"] = objects[-1]["id"]


async def resolve_project(client: BraintrustClient, name_or_id: str) -> dict[str, Any]:
    """The project called ``name_or_id`` (or with that id); NotFoundError if there is none."""
    if is_uuid(name_or_id):
        try:
            project: dict[str, Any] = await client.get_json(f"/v1/project/{name_or_id}")
            return project
        except NotFoundError:
            pass
    try:
        async for obj in _list(client, "project", {"project_name": name_or_id}):
            if obj.get("name") == name_or_id:
                return obj
    except NotFoundError as exc:  # the list itself is missing: the URL is not the API's
        raise UsageError(f"{exc} (no project list at this API URL: check the URL's path)") from None
    raise NotFoundError(client.sided(f"project {name_or_id!r} not found"))


async def ensure_project(
    client: BraintrustClient, name: str, description: str | None = None
) -> dict[str, Any]:
    """Create the project if it does not exist (the API returns the existing one otherwise,
    as it is); ``description``: the new project's."""
    body = {"name": name} if description is None else {"name": name, "description": description}
    project: dict[str, Any] = await client.post_json("/v1/project", body)
    return project


async def list_objects(
    client: BraintrustClient, kind: ObjectType, project_id: str
) -> AsyncIterator[dict[str, Any]]:
    async for obj in _list(client, kind, {"project_id": project_id}):
        yield obj


async def find_object(
    client: BraintrustClient, kind: ObjectType, project_id: str, name: str
) -> dict[str, Any] | None:
    param = {"dataset": "dataset_name", "experiment": "experiment_name"}[kind]
    async for obj in _list(client, kind, {"project_id": project_id, param: name}):
        if obj["name"] == name:
            return obj
    return None


def logs_ref(project: dict[str, Any]) -> ObjectRef:
    return ObjectRef("project_logs", project["id"], project["name"], project["id"], project)


def object_ref(kind: ObjectType, obj: dict[str, Any]) -> ObjectRef:
    return ObjectRef(kind, obj["id"], obj["name"], obj["project_id"], obj)


async def resolve_selection(
    client: BraintrustClient, project: dict[str, Any], selection: str
) -> list[ObjectRef]:
    """Turn ``--objects`` text into object refs, each once, in the order the text names them.

    ``logs``, ``datasets`` and ``experiments`` mean the project logs and every dataset or
    experiment; ``dataset:NAME`` and ``experiment:NAME`` pick one (NotFoundError if absent).
    The lookups go out together, so resolving costs one round trip however many kinds.
    """
    selectors = parse_selection(selection)
    found: dict[int, list[ObjectRef]] = {}

    async def resolve(index: int, kind: ObjectType, name: str | None) -> None:
        if kind == "project_logs":
            found[index] = [logs_ref(project)]
        elif name is None:
            found[index] = [object_ref(kind, o) async for o in list_objects(client, kind, project["id"])]
        else:
            obj = await find_object(client, kind, project["id"], name)
            if obj is None:
                raise NotFoundError(client.sided(f"{kind} {name!r} not found in project {project['name']!r}"))
            found[index] = [object_ref(kind, obj)]

    try:
        async with anyio.create_task_group() as tg:
            for index, selector in enumerate(selectors):
                tg.start_soon(resolve, index, selector.object_type, selector.name)
    except BaseExceptionGroup as group:  # one lookup's error, as a sequential loop raised it
        raise first_error(group) from None
    refs = [ref for index in range(len(selectors)) for ref in found[index]]
    seen: set[tuple[str, str]] = set()
    unique = []
    for ref in refs:
        if (ref.object_type, ref.id) not in seen:
            seen.add((ref.object_type, ref.id))
            unique.append(ref)
    return unique
