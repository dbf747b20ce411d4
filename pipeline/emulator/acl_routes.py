"""``/v1/acl`` routes: list, create, delete (by id or by grant), ``batch_update`` and ``list_org``.

The rules (who may change which ACLs, what a grant may name) are in ``access.py``; this module
reads requests and renders answers. ``list_org`` answers a bare array, as the spec says; the
other lists answer ``{"objects": [...]}``. The generated client posts batch updates to
``/v1/acl/batch-update``, the spec names ``/v1/acl/batch_update``: both are served.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.emulator import access, listing
from pipeline.emulator.rest import json_body, json_response, principal, store, uuid_param
from pipeline.emulator.validate import uuid_string

_ID_FILTERS = frozenset({"object_id", "user_id", "group_id", "role_id"})


def _filters(request: web.Request) -> dict[str, str]:
    found = {name: request.query[name] for name in access.FILTERS if name in request.query}
    for name in _ID_FILTERS & found.keys():
        uuid_string(found[name], name)
    return found


async def acls(request: web.Request, params: dict[str, str]) -> web.Response:
    """``/v1/acl``: list (GET), create (POST), delete by grant (DELETE)."""
    who = principal(request)
    db = store(request)
    if request.method == "GET":
        filters, paging = _filters(request), listing.parse(request.query)
        found = await db.read(lambda c: access.list_acls(c, who, filters, paging))
        return json_response({"objects": found})
    body = await json_body(request)
    change = access.create_acl if request.method == "POST" else access.delete_acl_matching
    return json_response(await db.write(lambda c: change(c, who, body)))


async def acl_by_id(request: web.Request, params: dict[str, str]) -> web.Response:
    acl_id = uuid_param(params["id"], "acl id")
    who = principal(request)
    if request.method == "GET":
        return json_response(await store(request).read(lambda c: access.get_acl(c, who, acl_id)))
    return json_response(await store(request).write(lambda c: access.delete_acl(c, who, acl_id)))


async def list_org(request: web.Request, params: dict[str, str]) -> web.Response:
    who = principal(request)
    filters, paging = _filters(request), listing.parse(request.query)
    org_name = request.query.get("org_name")
    found = await store(request).read(lambda c: access.list_org_acls(c, who, org_name, filters, paging))
    return json_response(found)


async def batch_update(request: web.Request, params: dict[str, str]) -> web.Response:
    who = principal(request)
    body = await json_body(request)
    return json_response(await store(request).write(lambda c: access.batch_update(c, who, body)))
