"""Roles, ACLs, org ownership and impersonation.

Roles are in ``roles.py``: the built-in system roles and each org's custom roles. ACLs are
stored as the spec's Acl objects; this emulator understands ``organization``, ``project``,
``experiment``, ``dataset``, ``prompt`` and ``group`` objects and grants to users (not groups). ACL lists are newest
first and page like every list (``listing.py``).

Ownership: a user holds the Owner role on an org when its membership role is ``owner``
or an ACL grants it the Owner role on that organization. Creating or deleting an ACL, and
changing the org's roles or settings, needs the Owner role on that org (the real
``create_acls`` permission); listing every ACL of an org needs it too (``read_acls`` at the
organization level, as the spec says of ``/v1/acl/list_org``).

Impersonation (``x-bt-impersonate-user``: a user id or email) is allowed only when the
caller holds the Owner role on every org the impersonated user belongs to. Everything
else, including a user that does not exist or belongs to no org, is the same
:class:`Forbidden` with the same message, so the header cannot probe for users.
Objects of another org are reported exactly like missing ones (``NotFound``).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import orjson

from pipeline.emulator import bodies, listing
from pipeline.emulator.auth import Principal, load_user
from pipeline.emulator.listing import Paging
from pipeline.emulator.objects import NotFound, StoredKind, located
from pipeline.emulator.roles import OWNER_ROLE_ID, grantable
from pipeline.emulator.rowwrite import now_iso
from pipeline.emulator.validate import BadRequest


class Forbidden(PermissionError):
    """The caller may not do this; the message is the 403 body."""


ACL_OBJECT_TYPES: Final = frozenset({"organization", "project", "experiment", "dataset", "prompt", "group"})
_ACL_ITEM: Final = {"$ref": "#/components/schemas/AclItem"}


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


def object_org(conn: sqlite3.Connection, object_type: str, object_id: str, org_ids: Sequence[str]) -> str:
    """The org of an ACL's (or a view's) object, if the caller can see it (else the same NotFound as missing)."""
    if object_type not in ACL_OBJECT_TYPES:
        raise BadRequest(f"object_type: {object_type!r} is not supported here (use {', '.join(sorted(ACL_OBJECT_TYPES))})")  # fmt: skip
    if object_type == "organization":
        if object_id not in org_ids:
            raise NotFound(f"organization {object_id} not found")
        return object_id
    return located(conn, cast(StoredKind, object_type), object_id, org_ids)[0]


def _require_owner(conn: sqlite3.Connection, who: Principal, org_id: str, action: str) -> None:
    if not is_owner(conn, who.user_id, org_id):
        raise Forbidden(f"{action} ACLs needs the Owner role on the organization")


def _check_grant(conn: sqlite3.Connection, body: dict[str, Any], org_id: str, where: str) -> None:
    if (body.get("user_id") is None) == (body.get("group_id") is None):
        raise BadRequest(f"{where}: give exactly one of user_id and group_id")
    if body.get("group_id") is not None:
        raise BadRequest(f"{where}.group_id: group ACLs are not supported here; grant to a user_id")
    if (body.get("permission") is None) == (body.get("role_id") is None):
        raise BadRequest(f"{where}: give exactly one of permission and role_id")
    if body.get("role_id") is not None:
        if body.get("restrict_object_type") is not None:
            raise BadRequest(f"{where}.restrict_object_type: cannot be set alongside role_id")
        if not grantable(conn, body["role_id"], org_id):
            raise BadRequest(f"{where}.role_id: unknown role {body['role_id']!r} (see GET /v1/role)")


#: The fields that make two ACLs the same grant, and the filters of the ACL lists.
_MATCH_COLUMNS: Final = (
    "object_type",
    "object_id",
    "user_id",
    "permission",
    "role_id",
    "restrict_object_type",
)
FILTERS: Final = (*_MATCH_COLUMNS, "group_id")


def _find_same(conn: sqlite3.Connection, body: dict[str, Any]) -> dict[str, Any] | None:
    where = " AND ".join(f"{c} IS ?" for c in _MATCH_COLUMNS)
    row = conn.execute(
        f"SELECT data FROM acls WHERE {where}", [body.get(c) for c in _MATCH_COLUMNS]
    ).fetchone()
    return None if row is None else orjson.loads(row[0])


def _grant(conn: sqlite3.Connection, who: Principal, body: dict[str, Any], action: str, where: str) -> str:
    """Check one grant (an AclItem already checked against the spec) and that the caller may
    change the ACLs of its object; the org of the object."""
    org_id = object_org(conn, body["object_type"], body["object_id"], who.org_ids)
    _require_owner(conn, who, org_id, action)
    _check_grant(conn, body, org_id, where)
    return org_id


def _add(conn: sqlite3.Connection, body: dict[str, Any], org_id: str, where: str) -> dict[str, Any]:
    member = conn.execute(
        "SELECT 1 FROM members WHERE user_id = ? AND org_id = ?", (body["user_id"], org_id)
    ).fetchone()
    if member is None:
        raise BadRequest(f"{where}.user_id: not a member of the object's organization")
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


def create_acl(conn: sqlite3.Connection, who: Principal, raw: Any) -> dict[str, Any]:
    """Grant (idempotent: an identical ACL is returned as is)."""
    body = bodies.checked(_ACL_ITEM, raw)
    return _add(conn, body, _grant(conn, who, body, "creating", "body"), "body")


def _newest_first(conn: sqlite3.Connection, where: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    sql = f"SELECT data FROM acls WHERE {where} ORDER BY seq DESC"
    return [orjson.loads(r[0]) for r in conn.execute(sql, params)]


def _matches(filters: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    def keep(acl: dict[str, Any]) -> bool:
        return all(acl.get(name) == value for name, value in filters.items())

    return keep


def list_acls(conn: sqlite3.Connection, who: Principal, filters: dict[str, str], paging: Paging) -> list[dict[str, Any]]:  # fmt: skip
    """``GET /v1/acl``: the ACLs on one object (``object_type`` and ``object_id`` are required,
    as in the spec), newest first."""
    object_type, object_id = filters.get("object_type"), filters.get("object_id")
    if object_type is None or object_id is None:
        raise BadRequest("object_type and object_id: both are required to list ACLs")
    object_org(conn, object_type, object_id, who.org_ids)
    found = _newest_first(conn, "object_type = ? AND object_id = ?", (object_type, object_id))
    return listing.page(found, paging, "acl", _matches(filters))


def list_org_acls(conn: sqlite3.Connection, who: Principal, org_name: str | None, filters: dict[str, str], paging: Paging) -> list[dict[str, Any]]:  # fmt: skip
    """``GET /v1/acl/list_org``: every ACL of the caller's org (needs the Owner role on it)."""
    org = who.default_org(org_name)
    if org is None:
        raise NotFound(f"organization {org_name!r} not found")
    if not is_owner(conn, who.user_id, org.org_id):
        raise Forbidden("listing the ACLs of an organization needs the Owner role on it")
    found = _newest_first(conn, "org_id = ?", (org.org_id,))
    return listing.page(found, paging, "acl", _matches(filters))


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
    body = bodies.checked(_ACL_ITEM, raw)
    _grant(conn, who, body, "deleting", "body")
    existing = _find_same(conn, body)
    if existing is None:
        raise NotFound("acl not found")
    return delete_acl(conn, who, existing["id"])


def batch_update(conn: sqlite3.Connection, who: Principal, raw: Any) -> dict[str, list[dict[str, Any]]]:
    """``POST /v1/acl/batch_update``: add and remove grants in one transaction. Idempotent, as the
    spec says: adding a grant that exists returns it unchanged, removing one that does not
    exist does nothing."""
    body = bodies.checked({"$ref": "#/components/schemas/AclBatchUpdateRequest"}, raw)
    added = []
    for i, item in enumerate(body.get("add_acls") or ()):
        where = f"body.add_acls[{i}]"
        added.append(_add(conn, item, _grant(conn, who, item, "creating", where), where))
    removed = []
    for i, item in enumerate(body.get("remove_acls") or ()):
        _grant(conn, who, item, "deleting", f"body.remove_acls[{i}]")
        existing = _find_same(conn, item)
        if existing is not None:
            conn.execute("DELETE FROM acls WHERE id = ?", (existing["id"],))
            removed.append(existing)
    return {"added_acls": added, "removed_acls": removed}
