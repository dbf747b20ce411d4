"""Roles, ACLs, org ownership and impersonation.

Roles are the three built-in system roles (``org_id`` null, as the spec's Role schema
says of system roles): Owner, Engineer, Viewer, with fixed ids so they read the same
on every emulator. ACLs are stored as the spec's Acl objects; this emulator understands
``organization``, ``project``, ``experiment`` and ``dataset`` objects and grants to users
(not groups).

Ownership: a user holds the Owner role on an org when its membership role is ``owner``
or an ACL grants it the Owner role on that organization. Creating or deleting an ACL
needs the Owner role on the ACL's org (the real ``create_acls`` permission).

Impersonation (``x-bt-impersonate-user``: a user id or email) is allowed only when the
caller holds the Owner role on every org the impersonated user belongs to. Everything
else, including a user that does not exist or belongs to no org, is the same
:class:`Forbidden` with the same message, so the header cannot probe for users.
Objects of another org are reported exactly like missing ones (``NotFound``).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any, Final, cast

import orjson

from pipeline.emulator.auth import Principal, load_user
from pipeline.emulator.objects import Kind, NotFound, get_object
from pipeline.emulator.rowwrite import now_iso
from pipeline.emulator.validate import BadRequest, check_body, nullable, one_of, uuid_string


class Forbidden(PermissionError):
    """The caller may not do this; the message is the 403 body."""


_ROLE_NAMESPACE: Final = uuid.UUID("6c1d3f0e-5b7a-4c2e-9f1d-2a8b4e6c0d13")
_PERMISSIONS: Final = ("create", "read", "update", "delete", "create_acls", "read_acls", "update_acls", "delete_acls")  # fmt: skip
_ROLE_PERMISSIONS: Final[dict[str, tuple[str, ...]]] = {
    "Owner": _PERMISSIONS,
    "Engineer": ("create", "read", "update", "delete"),
    "Viewer": ("read",),
}
_ROLE_DESCRIPTIONS: Final = {
    "Owner": "Unrestricted access to the organization, its data, and its settings",
    "Engineer": "Can access, create, update, and delete projects and their objects",
    "Viewer": "Can read projects and their objects",
}
ROLES: Final[tuple[dict[str, Any], ...]] = tuple(
    {
        "id": str(uuid.uuid5(_ROLE_NAMESPACE, name)), "org_id": None, "user_id": None,
        "created": "2024-01-01T00:00:00.000Z", "name": name, "description": _ROLE_DESCRIPTIONS[name],
        "deleted_at": None,
        "member_permissions": [{"permission": p, "restrict_object_type": None} for p in permissions],
        "member_roles": None,
    }
    for name, permissions in _ROLE_PERMISSIONS.items()
)  # fmt: skip
OWNER_ROLE_ID: Final = next(r["id"] for r in ROLES if r["name"] == "Owner")
ACL_OBJECT_TYPES: Final = frozenset({"organization", "project", "experiment", "dataset"})
_ALL_ACL_OBJECT_TYPES: Final = frozenset({
    "organization", "project", "experiment", "dataset", "prompt", "prompt_session", "group", "role",
    "org_member", "project_log", "org_project", "org_audit_logs",
})  # fmt: skip
_ACL_FIELDS: Final = {
    "object_type": one_of(_ALL_ACL_OBJECT_TYPES), "object_id": uuid_string, "user_id": nullable(uuid_string),
    "group_id": nullable(uuid_string), "permission": nullable(one_of(frozenset(_PERMISSIONS))),
    "role_id": nullable(uuid_string), "restrict_object_type": nullable(one_of(_ALL_ACL_OBJECT_TYPES)),
}  # fmt: skip


# -- roles --------------------------------------------------------------------------------


def list_roles(role_name: str | None, ids: Sequence[str], limit: int | None) -> list[dict[str, Any]]:
    found = [
        r for r in ROLES if (role_name is None or r["name"] == role_name) and (not ids or r["id"] in ids)
    ]
    return found[:limit] if limit is not None else found


# -- ownership and impersonation ------------------------------------------------------------


def is_owner(conn: sqlite3.Connection, user_id: str, org_id: str) -> bool:
    """Whether ``user_id`` holds the Owner role on ``org_id`` (membership or ACL)."""
    row = conn.execute(
        "SELECT 1 FROM members WHERE user_id = ? AND org_id = ? AND role = 'owner'"
        " UNION ALL SELECT 1 FROM acls WHERE object_type = 'organization' AND object_id = ?"
        " AND user_id = ? AND role_id = ? LIMIT 1",
        (user_id, org_id, org_id, user_id, OWNER_ROLE_ID),
    ).fetchone()
    return row is not None


IMPERSONATION_DENIED: Final = (
    "x-bt-impersonate-user: not allowed (the caller needs the Owner role on every org of that user)"
)


def impersonate(conn: sqlite3.Connection, caller: Principal, who: str) -> Principal:
    """The principal of user ``who`` (id or email) if ``caller`` may act as them."""
    target = load_user(conn, who)
    if target is None or not target.orgs:
        raise Forbidden(IMPERSONATION_DENIED)
    if not all(is_owner(conn, caller.user_id, m.org_id) for m in target.orgs):
        raise Forbidden(IMPERSONATION_DENIED)
    return target


def me(who: Principal) -> dict[str, Any]:
    """``POST /api/self/me``: the user and its orgs."""
    return {
        "id": who.user_id,
        "email": who.email,
        "organizations": [{"id": m.org_id, "name": m.org_name} for m in who.orgs],
    }


# -- ACLs ------------------------------------------------------------------------------------


def _object_org(conn: sqlite3.Connection, object_type: str, object_id: str, org_ids: Sequence[str]) -> str:
    """The org of an ACL's object, if the caller can see it (else the same NotFound as missing)."""
    if object_type not in ACL_OBJECT_TYPES:
        raise BadRequest(f"object_type: {object_type!r} is not supported here (use {', '.join(sorted(ACL_OBJECT_TYPES))})")  # fmt: skip
    if object_type == "organization":
        if object_id not in org_ids:
            raise NotFound(f"organization {object_id} not found")
        return object_id
    return str(get_object(conn, cast(Kind, object_type), object_id, org_ids)["org_id"])


def _require_owner(conn: sqlite3.Connection, who: Principal, org_id: str, action: str) -> None:
    if not is_owner(conn, who.user_id, org_id):
        raise Forbidden(f"{action} ACLs needs the Owner role on the organization")


def _check_grant(body: dict[str, Any]) -> None:
    if (body.get("user_id") is None) == (body.get("group_id") is None):
        raise BadRequest("body: give exactly one of user_id and group_id")
    if body.get("group_id") is not None:
        raise BadRequest("body.group_id: group ACLs are not supported here; grant to a user_id")
    if (body.get("permission") is None) == (body.get("role_id") is None):
        raise BadRequest("body: give exactly one of permission and role_id")
    if body.get("role_id") is not None:
        if body.get("restrict_object_type") is not None:
            raise BadRequest("body.restrict_object_type: cannot be set alongside role_id")
        if body["role_id"] not in {r["id"] for r in ROLES}:
            raise BadRequest(f"body.role_id: unknown role {body['role_id']!r} (see GET /v1/role)")


_MATCH_COLUMNS: Final = (
    "object_type",
    "object_id",
    "user_id",
    "permission",
    "role_id",
    "restrict_object_type",
)


def _find_same(conn: sqlite3.Connection, body: dict[str, Any]) -> dict[str, Any] | None:
    where = " AND ".join(f"{c} IS ?" for c in _MATCH_COLUMNS)
    row = conn.execute(
        f"SELECT data FROM acls WHERE {where}", [body.get(c) for c in _MATCH_COLUMNS]
    ).fetchone()
    return None if row is None else orjson.loads(row[0])


def create_acl(conn: sqlite3.Connection, who: Principal, raw: Any) -> dict[str, Any]:
    """Grant (idempotent: an identical ACL is returned as is)."""
    body = check_body(raw, _ACL_FIELDS, ("object_type", "object_id"))
    org_id = _object_org(conn, body["object_type"], body["object_id"], who.org_ids)
    _require_owner(conn, who, org_id, "creating")
    _check_grant(body)
    member = conn.execute(
        "SELECT 1 FROM members WHERE user_id = ? AND org_id = ?", (body["user_id"], org_id)
    ).fetchone()
    if member is None:
        raise BadRequest("body.user_id: not a member of the object's organization")
    existing = _find_same(conn, body)
    if existing is not None:
        return existing
    acl = {
        "id": str(uuid.uuid4()), **{c: body.get(c) for c in _MATCH_COLUMNS}, "group_id": None,
        "_object_org_id": org_id, "created": now_iso(),
    }  # fmt: skip
    columns, marks = ", ".join(_MATCH_COLUMNS), ", ".join("?" * len(_MATCH_COLUMNS))
    conn.execute(
        f"INSERT INTO acls (id, org_id, {columns}, data) VALUES (?, ?, {marks}, ?)",
        (acl["id"], org_id, *(acl[c] for c in _MATCH_COLUMNS), orjson.dumps(acl).decode()),
    )
    return acl


def list_acls(conn: sqlite3.Connection, who: Principal, object_type: str | None, object_id: str | None, limit: int | None) -> list[dict[str, Any]]:  # fmt: skip
    """The ACLs on one object (``object_type`` and ``object_id`` are required, as in the spec)."""
    if object_type is None or object_id is None:
        raise BadRequest("object_type and object_id: both are required to list ACLs")
    uuid_string(object_id, "object_id")
    _object_org(conn, object_type, object_id, who.org_ids)
    sql = "SELECT data FROM acls WHERE object_type = ? AND object_id = ? ORDER BY seq"
    found = [orjson.loads(r[0]) for r in conn.execute(sql, (object_type, object_id))]
    return found[:limit] if limit is not None else found


def get_acl(conn: sqlite3.Connection, who: Principal, acl_id: str) -> dict[str, Any]:
    marks = ",".join("?" * len(who.org_ids))
    row = conn.execute(
        f"SELECT data FROM acls WHERE id = ? AND org_id IN ({marks})", (acl_id, *who.org_ids)
    ).fetchone()
    if row is None:
        raise NotFound(f"acl {acl_id} not found")
    acl: dict[str, Any] = orjson.loads(row[0])
    return acl


def delete_acl(conn: sqlite3.Connection, who: Principal, acl_id: str) -> dict[str, Any]:
    acl = get_acl(conn, who, acl_id)
    _require_owner(conn, who, acl["_object_org_id"], "deleting")
    conn.execute("DELETE FROM acls WHERE id = ?", (acl_id,))
    return acl


def delete_acl_matching(conn: sqlite3.Connection, who: Principal, raw: Any) -> dict[str, Any]:
    """``DELETE /v1/acl`` with the grant in the body."""
    body = check_body(raw, _ACL_FIELDS, ("object_type", "object_id"))
    _object_org(conn, body["object_type"], body["object_id"], who.org_ids)
    _check_grant(body)
    existing = _find_same(conn, body)
    if existing is None:
        raise NotFound("acl not found")
    return delete_acl(conn, who, existing["id"])
