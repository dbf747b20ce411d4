"""``/v1/role`` routes: list, create (``POST`` get-or-create, ``PUT`` replace), get, patch, delete.

Any member of an org reads its roles; creating, changing or deleting one needs the Owner role
on the org, like changing its ACLs (``access.py``). System roles read like any other role
and cannot be changed (403).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from aiohttp import web

from pipeline.emulator import access, bodies, listing, roles
from pipeline.emulator.auth import Principal
from pipeline.emulator.objects import NotFound
from pipeline.emulator.rest import created_response, json_body, json_response, principal, store, uuid_param


def _require_owner(conn: sqlite3.Connection, who: Principal, org_id: str) -> None:
    if not access.is_owner(conn, who.user_id, org_id):
        raise access.Forbidden("changing roles needs the Owner role on the organization")


async def list_roles(request: web.Request, params: dict[str, str]) -> web.Response:
    paging = listing.parse(request.query)
    name, org_name = request.query.get("role_name"), request.query.get("org_name")
    org = principal(request).default_org(org_name) if org_name is not None else None
    if org_name is not None and org is None:
        return json_response({"objects": []})
    org_ids = principal(request).org_ids

    def keep(role: dict[str, Any]) -> bool:
        in_org = org is None or role["org_id"] in (None, org.org_id)
        return in_org and (name is None or role["name"] == name)

    found = await store(request).read(lambda c: listing.page(roles.visible_roles(c, org_ids), paging, "role", keep))  # fmt: skip
    return json_response({"objects": found})


async def create_role(request: web.Request, params: dict[str, str]) -> web.Response:
    body = bodies.checked(bodies.request_schema(request.method, "/v1/role"), await json_body(request))
    who = principal(request)
    org = who.default_org(body.get("org_name"))
    if org is None:
        raise NotFound(f"org {body.get('org_name')!r} not found")
    replace = request.method == "PUT"

    def run(conn: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
        _require_owner(conn, who, org.org_id)
        return roles.create_role(conn, body, org.org_id, who.user_id, replace=replace)

    return created_response(*await store(request).write(run))


async def role_by_id(request: web.Request, params: dict[str, str]) -> web.Response:
    role_id = uuid_param(params["id"], "role id")
    who = principal(request)
    if request.method == "GET":
        return json_response(await store(request).read(lambda c: roles.get_role(c, role_id, who.org_ids)))
    raw = await json_body(request) if request.method == "PATCH" else {}
    body = bodies.checked(bodies.request_schema("PATCH", "/v1/role/{role_id}"), raw) if raw else {}

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        role = roles.get_role(conn, role_id, who.org_ids)
        if role["org_id"] is None:
            raise access.Forbidden(f"role {role['name']!r} is a system role and cannot be changed")
        _require_owner(conn, who, role["org_id"])
        if request.method == "PATCH":
            return roles.patch_role(conn, role_id, who.org_ids, body)
        return roles.delete_role(conn, role_id, who.org_ids)

    return json_response(await store(request).write(run))
