"""``/v1/<kind>`` routes of the project configuration objects (``configobjects.py``): create
(``POST`` get-or-create, answering ``x-bt-found-existing: true`` when it found one; ``PUT``
create-or-replace), list, get, patch, delete.

Lists take the paging parameters (``listing.py``) and the filters the spec lists for the kind:
``<kind>_name``, ``project_id``/``project_name``, ``slug``, ``version`` (each object as of that
version), ``score_type``, ``view_type``, ``ai_secret_type``, ``org_name``; a view list names the object its views
are on (``object_type``/``object_id``, required as in the spec). ``project_id`` and
``project_name`` are also read for the project-level kinds whose list the spec gives no project
filter (span iframes, automations), so a client can list one project's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.emulator import bodies, configobjects, listing, versions
from pipeline.emulator.objects import ListFilter, StoredKind
from pipeline.emulator.rest import created_response, json_body, json_response, principal, store, uuid_param
from pipeline.emulator.validate import BadRequest


def _kind(params: dict[str, str]) -> StoredKind:
    kind: StoredKind = params["kind"]  # type: ignore[assignment]  # the route's pattern lists only config kinds
    return kind


def _version(query: Any) -> int | None:
    if "environment" in query:
        raise BadRequest("environment: prompt environments are not served here; use version")
    if "version" not in query:
        return None
    return min(versions.parse(query["version"]), versions.MAX_XACT)  # past the last: the newest


async def create(request: web.Request, params: dict[str, str]) -> web.Response:
    kind = _kind(params)
    body = bodies.create_body(f"/v1/{kind}", await json_body(request))
    who, replace = principal(request), request.method == "PUT"
    obj, existed = await store(request).write(
        lambda c: configobjects.create(c, kind, body, who, replace=replace)
    )
    return created_response(obj, existed)


def _list_filter(request: web.Request, kind: StoredKind) -> ListFilter:
    q, ck = request.query, configobjects.config_kind(kind)
    paging = listing.parse(q)
    fields: list[tuple[str, tuple[Any, ...]]] = []
    for name in ("slug", "view_type"):
        if name in q and name in ck.list_params:
            fields.append((name, (q[name],)))
    if "score_type" in ck.list_params and listing.multi(q, "score_type"):
        fields.append(("score_type", listing.multi(q, "score_type")))
    if "ai_secret_type" in ck.list_params and listing.multi(q, "ai_secret_type"):
        fields.append(("type", listing.multi(q, "ai_secret_type")))
    project_id = q.get("project_id")
    if ck.parent == "object":
        for name in ("object_type", "object_id"):
            if name not in q:
                raise BadRequest(f"{name}: required to list views")
        uuid_param(q["object_id"], "object_id")
        fields.append(("object_type", (q["object_type"],)))
        project_id = q["object_id"]
    elif project_id is not None:
        uuid_param(project_id, "project_id")
    return ListFilter(
        project_name=q.get("project_name") if ck.parent == "project" else None,
        project_id=project_id if ck.parent != "org" else None,
        name=q.get(f"{kind}_name"), org_name=q.get("org_name"), ids=paging.ids,
        limit=paging.limit, starting_after=paging.starting_after, ending_before=paging.ending_before,
        fields=tuple(fields), as_of=_version(q) if ck.versioned else None,
    )  # fmt: skip


async def list_objects(request: web.Request, params: dict[str, str]) -> web.Response:
    kind = _kind(params)
    flt, who, q = _list_filter(request, kind), principal(request), request.query
    on = (q["object_type"], q["object_id"]) if configobjects.config_kind(kind).parent == "object" else None
    found = await store(request).read(lambda c: configobjects.list_objects(c, kind, flt, who, on))
    return json_response({"objects": found})


async def by_id(request: web.Request, params: dict[str, str]) -> web.Response:
    kind = _kind(params)
    object_id = uuid_param(params["id"], f"{kind} id")
    who, db = principal(request), store(request)
    if request.method == "GET":
        version = _version(request.query) if configobjects.config_kind(kind).versioned else None
        return json_response(await db.read(lambda c: configobjects.get(c, kind, object_id, who, version)))
    schema_path = f"/v1/{kind}/{{{kind}_id}}"
    if request.method == "PATCH":
        body = bodies.checked(bodies.request_schema("PATCH", schema_path), await json_body(request))
        return json_response(await db.write(lambda c: configobjects.patch(c, kind, object_id, body, who)))
    operation = bodies.spec.spec()["paths"][schema_path]["delete"]
    raw = await json_body(request)
    body = (
        bodies.checked(bodies.request_schema("DELETE", schema_path), raw)
        if "requestBody" in operation
        else {}
    )
    return json_response(await db.write(lambda c: configobjects.delete(c, kind, object_id, body, who)))


async def delete_by_name(request: web.Request, params: dict[str, str]) -> web.Response:
    """``DELETE /v1/<kind>`` naming the object in the body (``name``, ``org_name``): the
    org-level kinds whose spec has it (AI secrets)."""
    kind = _kind(params)
    body = bodies.checked(bodies.request_schema("DELETE", f"/v1/{kind}"), await json_body(request))
    who = principal(request)
    return json_response(await store(request).write(lambda c: configobjects.delete_named(c, kind, body, who)))
