"""The app routes the JavaScript SDK creates its objects through (after ``/api/apikey/login``).

``POST /api/project/register {project_name, org_id}`` -> ``{project}``;
``POST /api/dataset/register {org_id, project_name | project_id, dataset_name, description,
metadata}`` -> ``{project, dataset}``; ``POST /api/experiment/register {org_id, project_name |
project_id, experiment_name, update, base_exp_id | base_experiment, repo_info, dataset_id, ...}``
-> ``{project, experiment}``. The objects are the REST API's (``objects.py``): projects and
datasets are got or created by name; an experiment is always a new one, named
``<name>-<n>`` when the name is taken, unless ``update`` asks to reuse the one of that name.
A ``base_experiment`` names an experiment of the project; an unknown one is a 400 saying
"base experiment", which the SDK answers by registering again without it. Fields these
routes do not use (``ancestor_commits``, ...) are accepted and ignored, as the SDK sends
what its version knows.

It opens what exists through three more: ``GET /api/project?id=`` -> the project (``initLogger``
with a ``projectId``); ``POST /api/experiment/get {project_name | project_id, org_name,
experiment_name}`` -> the project's experiments of that name, newest first (``initExperiment``
with ``open``); ``POST /api/self/get_object_info {object_type, object_ids}`` -> ``[{object_id,
object_name, parent_cols: {project: {id, name}}}]`` for those the caller may see
(``initDataset`` with a ``datasetId``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from pipeline.emulator import objects
from pipeline.emulator.auth import Principal
from pipeline.emulator.objects import NotFound
from pipeline.emulator.rest import json_body, json_response, principal, store, uuid_param
from pipeline.emulator.validate import (
    BadRequest,
    Check,
    any_value,
    array_of,
    boolean,
    fail,
    nullable,
    object_of,
    one_of,
    string,
    uuid_string,
)

_PROJECT_FIELDS: Final[dict[str, Check]] = {
    "org_id": nullable(string), "project_name": nullable(string), "project_id": nullable(uuid_string),
}  # fmt: skip
_DATASET_FIELDS: Final[dict[str, Check]] = {
    **_PROJECT_FIELDS, "dataset_name": string, "description": nullable(string), "metadata": nullable(object_of()),
}  # fmt: skip
_EXPERIMENT_FIELDS: Final[dict[str, Check]] = {
    **_PROJECT_FIELDS, "experiment_name": nullable(string), "update": nullable(boolean),
    "description": nullable(string), "repo_info": nullable(object_of()), "base_exp_id": nullable(uuid_string),
    "base_experiment": nullable(string), "dataset_id": nullable(uuid_string), "dataset_version": nullable(string),
    "internal_metadata": nullable(object_of()), "parameters_id": nullable(uuid_string),
    "parameters_version": nullable(string), "public": nullable(boolean), "metadata": nullable(object_of()),
    "tags": nullable(array_of(string)),
}  # fmt: skip
#: What ``objects.create_experiment`` takes from a register body as is.
_EXPERIMENT_COPIED: Final = (
    "description", "repo_info", "dataset_id", "dataset_version", "internal_metadata", "parameters_id",
    "parameters_version", "public", "metadata", "tags",
)  # fmt: skip


def _checked(body: Any, fields: dict[str, Check], required: tuple[str, ...] = ()) -> dict[str, Any]:
    object_of(fields, extra=any_value, required=required)(body, "body")
    checked: dict[str, Any] = body
    return checked


def _project(conn: sqlite3.Connection, body: dict[str, Any], who: Principal) -> dict[str, Any]:
    """The project a register body names: by id (visible to the caller), else got or created
    by name in ``org_id`` (one of the caller's orgs; the first when not given)."""
    if body.get("project_id"):
        return objects.get_object(conn, "project", body["project_id"], who.org_ids)
    name = body.get("project_name")
    if not name:
        raise fail("body.project_name", "a project_name or project_id is required")
    org_id = body.get("org_id")
    member = who.default_org() if org_id is None else next((m for m in who.orgs if m.org_id == org_id), None)
    if member is None:
        raise NotFound(f"org {org_id} not found")
    return objects.create_project(conn, {"name": name}, member.org_id, who.user_id)[0]


def register_project(conn: sqlite3.Connection, body: dict[str, Any], who: Principal) -> dict[str, Any]:
    return {"project": _project(conn, body, who)}


def register_dataset(conn: sqlite3.Connection, body: dict[str, Any], who: Principal) -> dict[str, Any]:
    project = _project(conn, body, who)
    spec = {"project_id": project["id"], "name": body["dataset_name"], "description": body.get("description"),
            "metadata": body.get("metadata")}  # fmt: skip
    return {"project": project, "dataset": objects.create_dataset(conn, spec, who.org_ids, who.user_id)[0]}


def _base_experiment_id(
    conn: sqlite3.Connection, body: dict[str, Any], project: dict[str, Any]
) -> str | None:
    if body.get("base_exp_id"):
        base_id: str = body["base_exp_id"]
        return base_id
    name = body.get("base_experiment")
    if not name:
        return None
    found = objects.by_name(conn, "experiment", project["org_id"], project["id"], name)
    if found is None:
        raise BadRequest(f"base experiment {name!r} not found in project {project['name']!r}")
    found_id: str = found["id"]
    return found_id


def register_experiment(conn: sqlite3.Connection, body: dict[str, Any], who: Principal) -> dict[str, Any]:
    project = _project(conn, body, who)
    name = body.get("experiment_name")
    if body.get("update") and name:
        existing = objects.by_name(conn, "experiment", project["org_id"], project["id"], name)
        if existing is not None:
            return {"project": project, "experiment": existing}
    spec: dict[str, Any] = {
        "project_id": project["id"], "name": name, "ensure_new": True,
        "base_exp_id": _base_experiment_id(conn, body, project),
        **{k: body[k] for k in _EXPERIMENT_COPIED if k in body},
    }  # fmt: skip
    return {
        "project": project,
        "experiment": objects.create_experiment(conn, spec, who.org_ids, who.user_id)[0],
    }


Register = Callable[[sqlite3.Connection, dict[str, Any], Principal], dict[str, Any]]
_REGISTER: Final[dict[str, tuple[Register, dict[str, Check], tuple[str, ...]]]] = {
    "project": (register_project, _PROJECT_FIELDS, ()),
    "dataset": (register_dataset, _DATASET_FIELDS, ("dataset_name",)),
    "experiment": (register_experiment, _EXPERIMENT_FIELDS, ()),
}


async def register(request: web.Request, params: dict[str, str]) -> web.Response:
    """``POST /api/{project|dataset|experiment}/register``."""
    run, fields, required = _REGISTER[params["kind"]]
    body = _checked(await json_body(request), fields, required)
    who = principal(request)
    return json_response(await store(request).write(lambda c: run(c, body, who)))


# -- lookups ------------------------------------------------------------------------------------


def _named_project(conn: sqlite3.Connection, body: dict[str, Any], who: Principal) -> dict[str, Any]:
    """The existing project a lookup names, by id or by name (in ``org_name`` when given)."""
    if body.get("project_id"):
        return objects.get_object(conn, "project", body["project_id"], who.org_ids)
    name = body.get("project_name")
    if not name:
        raise fail("body.project_name", "a project_name or project_id is required")
    flt = objects.ListFilter(name=name, org_name=body.get("org_name"))
    found = objects.list_objects(conn, "project", who.org_ids, flt)
    if not found:
        raise NotFound(f"project {name!r} not found")
    return found[0]


def experiments_named(conn: sqlite3.Connection, body: dict[str, Any], who: Principal) -> list[dict[str, Any]]:
    project = _named_project(conn, body, who)
    flt = objects.ListFilter(project_id=project["id"], name=body.get("experiment_name"))
    return objects.list_objects(conn, "experiment", who.org_ids, flt)


def object_info(conn: sqlite3.Connection, body: dict[str, Any], who: Principal) -> list[dict[str, Any]]:
    kind = body["object_type"]
    if not body["object_ids"]:  # an empty id filter would be no filter
        return []
    found = objects.list_objects(conn, kind, who.org_ids, objects.ListFilter(ids=tuple(body["object_ids"])))
    info = []
    for obj in found:
        project = (
            obj if kind == "project" else objects.get_object(conn, "project", obj["project_id"], who.org_ids)
        )
        parents = {} if kind == "project" else {"project": {"id": project["id"], "name": project["name"]}}
        info.append({"object_id": obj["id"], "object_name": obj["name"], "parent_cols": parents})
    return info


Lookup = Callable[[sqlite3.Connection, dict[str, Any], Principal], Any]
_EXPERIMENT_GET_FIELDS: Final[dict[str, Check]] = {
    **_PROJECT_FIELDS, "org_name": nullable(string), "experiment_name": nullable(string),
}  # fmt: skip
_OBJECT_INFO_FIELDS: Final[dict[str, Check]] = {
    "object_type": one_of(frozenset({"project", "dataset", "experiment"})), "object_ids": array_of(uuid_string),
}  # fmt: skip
_LOOKUPS: Final[dict[str, tuple[Lookup, dict[str, Check], tuple[str, ...]]]] = {
    "experiment/get": (experiments_named, _EXPERIMENT_GET_FIELDS, ()),
    "self/get_object_info": (object_info, _OBJECT_INFO_FIELDS, ("object_type", "object_ids")),
}


async def lookup(request: web.Request, params: dict[str, str]) -> web.Response:
    """``POST /api/experiment/get``, ``POST /api/self/get_object_info``."""
    run, fields, required = _LOOKUPS[params["what"]]
    body = _checked(await json_body(request), fields, required)
    who = principal(request)
    return json_response(await store(request).read(lambda c: run(c, body, who)))


async def project_by_id(request: web.Request, params: dict[str, str]) -> web.Response:
    """``GET /api/project?id=``."""
    project_id = uuid_param(request.query.get("id", ""), "id")
    org_ids = principal(request).org_ids
    return json_response(
        await store(request).read(lambda c: objects.get_object(c, "project", project_id, org_ids))
    )
