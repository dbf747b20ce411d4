"""``/v1/user`` routes: the users of the caller's orgs, listed and read by id.

Users are those of the keys the emulator was started with (``auth.py``): an id and an email;
the spec's given and family names are taken from the email's local part (``jane.doe@x`` is
Jane Doe), since no key names them. A user is visible to the members of the orgs it belongs
to and to nobody else, exactly like a missing one.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from pipeline.emulator import listing
from pipeline.emulator.objects import NotFound
from pipeline.emulator.rest import json_response, principal, store, uuid_param

#: The list filters the spec gives ``GET /v1/user``, each matched exactly, any of its values.
_FILTERS = ("given_name", "family_name", "email")


def user_object(user_id: str, email: str) -> dict[str, Any]:
    """The spec's User for a user known by id and email."""
    parts = [p.capitalize() for p in re.split(r"[._+-]+", email.partition("@")[0]) if p]
    return {
        "id": user_id, "given_name": parts[0] if parts else None,
        "family_name": " ".join(parts[1:]) or None, "email": email, "avatar_url": None, "created": None,
    }  # fmt: skip


def visible_users(conn: sqlite3.Connection, org_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The users sharing an org in ``org_ids``, newest first."""
    marks = ",".join("?" * len(org_ids))
    rows = conn.execute(
        f"SELECT id, email FROM users WHERE id IN (SELECT user_id FROM members WHERE org_id IN ({marks}))"
        " ORDER BY rowid DESC",
        tuple(org_ids),
    ).fetchall()
    return [user_object(user_id, email) for user_id, email in rows]


async def list_users(request: web.Request, params: dict[str, str]) -> web.Response:
    paging = listing.parse(request.query)
    who = principal(request)
    org_name = request.query.get("org_name")
    org_ids = who.org_ids
    if org_name is not None:
        org = who.default_org(org_name)
        org_ids = (org.org_id,) if org is not None else ()
    wanted = {name: set(listing.multi(request.query, name)) for name in _FILTERS}

    def keep(user: dict[str, Any]) -> bool:
        return all(not values or user[name] in values for name, values in wanted.items())

    found = await store(request).read(lambda c: listing.page(visible_users(c, org_ids), paging, "user", keep))  # fmt: skip
    return json_response({"objects": found})


async def get_user(request: web.Request, params: dict[str, str]) -> web.Response:
    user_id = uuid_param(params["id"], "user id")
    org_ids = principal(request).org_ids
    found = await store(request).read(lambda c: visible_users(c, org_ids))
    user = next((u for u in found if u["id"] == user_id), None)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return json_response(user)
