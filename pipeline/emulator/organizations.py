"""``/v1/organization`` routes: the caller's orgs, listed, read by id and patched.

Orgs are those of the keys the emulator was started with (``auth.py``). The settings a
``PATCH`` sets are kept in the ``objects`` table (kind ``organization``, the org's own id);
a rename also renames the org the keys belong to, so ``org_name`` parameters and the
``x-bt-org-name`` header take the new name. Patching needs the Owner role on the org. An org
the caller does not belong to reads exactly like a missing one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import orjson
from aiohttp import web

from pipeline.emulator import access, bodies, listing
from pipeline.emulator.objects import NotFound
from pipeline.emulator.rest import AUTH_KEY, json_body, json_response, principal, store, uuid_param

#: The spec's Organization fields a PATCH may set (all but the name default to null).
_SETTINGS: Final = (
    "api_url", "is_universal_api", "is_dataplane_private", "proxy_url", "realtime_url", "image_rendering_mode",
)  # fmt: skip


def _org(conn: sqlite3.Connection, org_id: str, name: str) -> dict[str, Any]:
    stored = conn.execute(
        "SELECT data FROM objects WHERE kind = 'organization' AND id = ?", (org_id,)
    ).fetchone()
    settings = orjson.loads(stored[0]) if stored else {}
    return {"id": org_id, "name": name, **{k: settings.get(k) for k in _SETTINGS}, "created": None}


def visible_orgs(conn: sqlite3.Connection, org_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The orgs in ``org_ids``, newest first."""
    marks = ",".join("?" * len(org_ids))
    rows = conn.execute(
        f"SELECT id, name FROM orgs WHERE id IN ({marks}) ORDER BY rowid DESC", tuple(org_ids)
    )
    return [_org(conn, org_id, name) for org_id, name in rows.fetchall()]


def get_org(conn: sqlite3.Connection, org_id: str, org_ids: Sequence[str]) -> dict[str, Any]:
    found = visible_orgs(conn, [org_id] if org_id in org_ids else [])
    if not found:
        raise NotFound(f"organization {org_id} not found")
    return found[0]


def patch_org(conn: sqlite3.Connection, user_id: str, org_id: str, org_ids: Sequence[str], body: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    org = get_org(conn, org_id, org_ids)
    if not access.is_owner(conn, user_id, org_id):
        raise access.Forbidden("changing an organization needs the Owner role on it")
    if body.get("name") is not None:
        org["name"] = body["name"]
        conn.execute("UPDATE orgs SET name = ? WHERE id = ?", (org["name"], org_id))
    org.update({k: body[k] for k in _SETTINGS if k in body})
    settings = orjson.dumps({k: org[k] for k in _SETTINGS}).decode()
    conn.execute(
        "INSERT INTO objects (kind, id, org_id, name, data) VALUES ('organization', ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, data = excluded.data",
        (org_id, org_id, org["name"], settings),
    )
    return org


async def list_orgs(request: web.Request, params: dict[str, str]) -> web.Response:
    paging = listing.parse(request.query)
    org_ids, name = principal(request).org_ids, request.query.get("org_name")

    def keep(org: dict[str, Any]) -> bool:
        return name is None or org["name"] == name

    found = await store(request).read(lambda c: listing.page(visible_orgs(c, org_ids), paging, "organization", keep))  # fmt: skip
    return json_response({"objects": found})


async def org_by_id(request: web.Request, params: dict[str, str]) -> web.Response:
    org_id = uuid_param(params["id"], "organization id")
    who = principal(request)
    if request.method == "GET":
        return json_response(await store(request).read(lambda c: get_org(c, org_id, who.org_ids)))
    schema = bodies.request_schema("PATCH", "/v1/organization/{organization_id}")
    body = bodies.checked(schema, await json_body(request))
    org = await store(request).write(lambda c: patch_org(c, who.user_id, org_id, who.org_ids, body))
    if "name" in body:
        request.app[AUTH_KEY].forget()
    return json_response(org)
