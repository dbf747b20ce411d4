"""Roles: the three built-in system roles and the custom roles of each org.

System roles (Owner, Engineer, Viewer) have ``org_id`` null, as the spec's Role schema says of
system roles, fixed ids so they read the same on every emulator, and cannot be edited. Custom
roles belong to one org, are unique by name within it (create is get-or-create by name, ``PUT``
replaces) and are kept in the ``objects`` table like the other REST objects. Lists are newest
first: an org's custom roles, then the system roles.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any, Final

from pipeline.emulator import objects
from pipeline.emulator.objects import ListFilter, NotFound
from pipeline.emulator.rowwrite import now_iso
from pipeline.emulator.validate import BadRequest

_ROLE_NAMESPACE: Final = uuid.UUID("6c1d3f0e-5b7a-4c2e-9f1d-2a8b4e6c0d13")
PERMISSIONS: Final = ("create", "read", "update", "delete", "create_acls", "read_acls", "update_acls", "delete_acls")  # fmt: skip
_ROLE_PERMISSIONS: Final[dict[str, tuple[str, ...]]] = {
    "Owner": PERMISSIONS,
    "Engineer": ("create", "read", "update", "delete"),
    "Viewer": ("read",),
}
_ROLE_DESCRIPTIONS: Final = {
    "Owner": "Unrestricted access to the organization, its data, and its settings",
    "Engineer": "Can access, create, update, and delete projects and their objects",
    "Viewer": "Can read projects and their objects",
}
SYSTEM_ROLES: Final[tuple[dict[str, Any], ...]] = tuple(
    {
        "id": str(uuid.uuid5(_ROLE_NAMESPACE, name)), "org_id": None, "user_id": None,
        "created": "2024-01-01T00:00:00.000Z", "name": name, "description": _ROLE_DESCRIPTIONS[name],
        "deleted_at": None,
        "member_permissions": [{"permission": p, "restrict_object_type": None} for p in permissions],
        "member_roles": None,
    }
    for name, permissions in _ROLE_PERMISSIONS.items()
)  # fmt: skip
SYSTEM_ROLE_IDS: Final = frozenset(r["id"] for r in SYSTEM_ROLES)
OWNER_ROLE_ID: Final = next(r["id"] for r in SYSTEM_ROLES if r["name"] == "Owner")


def visible_roles(conn: sqlite3.Connection, org_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Every role the caller may see, newest first."""
    return [*objects.list_objects(conn, "role", org_ids, ListFilter()), *SYSTEM_ROLES]


def get_role(conn: sqlite3.Connection, role_id: str, org_ids: Sequence[str]) -> dict[str, Any]:
    system = next((r for r in SYSTEM_ROLES if r["id"] == role_id), None)
    return dict(system) if system is not None else objects.get_object(conn, "role", role_id, org_ids)


def grantable(conn: sqlite3.Connection, role_id: str, org_id: str) -> bool:
    """Whether an ACL on an object of ``org_id`` may grant ``role_id``."""
    try:
        role = get_role(conn, role_id, [org_id])
    except NotFound:
        return False
    return role["org_id"] in (None, org_id)


def _member_roles(conn: sqlite3.Connection, ids: Sequence[str] | None, org_id: str, where: str) -> list[str] | None:  # fmt: skip
    for role_id in ids or ():
        if not grantable(conn, role_id, org_id):
            raise BadRequest(f"{where}: unknown role {role_id!r} (see GET /v1/role)")
    return None if ids is None else list(dict.fromkeys(ids))


def _permissions(items: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Permission grants without repeats, in the order given."""
    if items is None:
        return None
    pairs = dict.fromkeys((p["permission"], p.get("restrict_object_type")) for p in items)
    return [{"permission": p, "restrict_object_type": r} for p, r in pairs]


def create_role(conn: sqlite3.Connection, body: dict[str, Any], org_id: str, user_id: str, *, replace: bool) -> tuple[dict[str, Any], bool]:  # fmt: skip
    """Get-or-create by name within the org; with ``replace`` (``PUT``) an existing role takes the
    body's fields. ``(the role, whether it was there)``."""
    fields = {
        "description": body.get("description"),
        "member_permissions": _permissions(body.get("member_permissions")),
        "member_roles": _member_roles(conn, body.get("member_roles"), org_id, "body.member_roles"),
    }
    existing = objects.by_name(conn, "role", org_id, None, body["name"])
    if existing is not None:
        return (objects.save_object(conn, {**existing, **fields}) if replace else existing), True
    role = {
        "id": str(uuid.uuid4()), "org_id": org_id, "user_id": user_id, "created": now_iso(),
        "name": body["name"], **fields, "deleted_at": None,
    }  # fmt: skip
    return objects.insert_object(conn, "role", role, org_id), False


def patch_role(conn: sqlite3.Connection, role_id: str, org_ids: Sequence[str], body: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """``PATCH /v1/role/{id}``: rename, describe, add and remove permissions and member roles."""
    role = objects.get_object(conn, "role", role_id, org_ids)
    if body.get("name") is not None:
        taken = objects.by_name(conn, "role", role["org_id"], None, body["name"])
        if taken is not None and taken["id"] != role_id:
            raise BadRequest(f"body.name: a role named {body['name']!r} already exists")
        role["name"] = body["name"]
    if "description" in body:
        role["description"] = body["description"]
    added = _permissions([*(role["member_permissions"] or []), *(body.get("add_member_permissions") or [])])
    removed = {(p["permission"], p.get("restrict_object_type")) for p in body.get("remove_member_permissions") or []}  # fmt: skip
    if body.get("add_member_permissions") or removed:
        role["member_permissions"] = [
            p for p in added or [] if (p["permission"], p["restrict_object_type"]) not in removed
        ]
    new_roles = _member_roles(conn, body.get("add_member_roles"), role["org_id"], "body.add_member_roles")
    gone = set(body.get("remove_member_roles") or ())
    if new_roles or gone:
        merged = dict.fromkeys([*(role["member_roles"] or []), *(new_roles or [])])
        role["member_roles"] = [r for r in merged if r not in gone]
    return objects.save_object(conn, role)


def delete_role(conn: sqlite3.Connection, role_id: str, org_ids: Sequence[str]) -> dict[str, Any]:
    return objects.delete_object(conn, "role", role_id, org_ids)
