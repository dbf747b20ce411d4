"""Project configuration objects, one implementation for every kind: prompts, functions, project
scores and tags, views, span iframes, project automations and (org-level) groups and AI secrets.

Everything a kind needs is read from the shipped spec's operations on ``/v1/<kind>``: the create
schema (``POST``), the object as read back (the ``200`` answer), the patch schema
(``PATCH /v1/<kind>/{id}``) and the list filters (``GET``). From them:

- the *parent* an object lives in: its project when the create schema requires ``project_id``,
  the object a view is on (``object_type``/``object_id``), else the org (groups);
- the *key* unique within the parent: ``slug`` when the create schema requires one (prompts and
  functions, which share one slug namespace per project, as in the real API), a view's
  ``view_type`` and ``name``, else ``name``;
- whether the kind keeps versions: its read schema has ``_xact_id`` (``versions.py``);
- the fields the server sets: those of the read schema no create body lists (``id``,
  ``created``, ``user_id``, ``org_id``, ``log_id``, ``_xact_id``, ...), filled with the value
  a single-valued enum allows, else null.

``POST`` is get-or-create by key within the parent, ``PUT`` create-or-replace (a replaced object
keeps its id and creation time and takes the body's fields, the absent ones null); ``PATCH``
sets the fields it names (``add_*``/``remove_*`` lists change a group's members); ``DELETE``
marks the object deleted. Objects of another org answer exactly like missing ones.

An AI secret's ``secret`` is written, never read back (the spec's read schema has no such
field): the object shows ``preview_secret`` (its last four characters behind asterisks, for a
value of 12 or more; asterisks only for a shorter one), when and by whom it was last set. A
replace (``PUT``) or patch without a ``secret`` (or with a null one) leaves it as it was, as
the spec says of ``PUT``. The emulator keeps only that preview: nothing it serves reads the value.
"""

from __future__ import annotations

import copy
import functools
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson

from pipeline.emulator import access, objects, spec, versions
from pipeline.emulator.auth import Principal
from pipeline.emulator.objects import Conflict, ListFilter, NotFound, StoredKind
from pipeline.emulator.rowwrite import deep_merge, now_iso
from pipeline.emulator.validate import BadRequest

#: The kinds served here, in the order a copy creates them (what others refer to first).
CONFIG_KINDS: Final[tuple[StoredKind, ...]] = (
    "ai_secret", "group", "project_tag", "span_iframe", "function", "prompt", "project_score",
    "project_automation", "view",
)  # fmt: skip
#: Kinds sharing one slug namespace within a project.
_SLUG_SHARING: Final = ("prompt", "function")


@dataclass(frozen=True)
class ConfigKind:
    """What the spec says about one kind."""

    kind: StoredKind
    parent: str  # "project" | "object" (views) | "org"
    key: tuple[str, ...]  # the fields unique within the parent
    versioned: bool
    create: dict[str, Any]  # resolved create schema
    patch: dict[str, Any]  # resolved patch schema
    read: dict[str, Any]  # resolved read schema
    server_fields: tuple[str, ...]
    list_params: frozenset[str]


def _json_schema(operation: dict[str, Any], where: str) -> dict[str, Any]:
    if where == "request":
        node = operation["requestBody"]["content"]["application/json"]["schema"]
    else:
        node = operation["responses"]["200"]["content"]["application/json"]["schema"]
    return spec.resolve(node)


@functools.cache
def config_kind(kind: StoredKind) -> ConfigKind:
    paths = spec.spec()["paths"]
    collection, item = paths[f"/v1/{kind}"], paths[f"/v1/{kind}/{{{kind}_id}}"]
    create = _json_schema(collection["post"], "request")
    read = _json_schema(collection["post"], "response")
    required = set(create.get("required", ()))
    if "project_id" in required:
        parent = "project"
    elif "object_id" in required:
        parent = "object"
    else:
        parent = "org"
    if "slug" in required:
        key: tuple[str, ...] = ("slug",)
    elif "view_type" in required:
        key = ("view_type", "name")
    else:
        key = ("name",)
    listed = create.get("properties", {})
    names = set()
    for param in collection["get"].get("parameters", ()):
        names.add(spec.resolve(param)["name"])
    return ConfigKind(
        kind=kind, parent=parent, key=key, versioned="_xact_id" in read.get("properties", {}),
        create=create, patch=_json_schema(item["patch"], "request"), read=read,
        server_fields=tuple(n for n in read.get("properties", {}) if n not in listed),
        list_params=frozenset(names),
    )  # fmt: skip


def _nullable(node: dict[str, Any]) -> bool:
    resolved = spec.resolve(node)
    branches = resolved.get("anyOf") or resolved.get("oneOf") or ()
    return bool(
        node.get("nullable") or resolved.get("nullable") or None in resolved.get("enum", ())
        or any(b.get("type") == "null" for b in branches)
    )  # fmt: skip


def _enum_value(node: dict[str, Any]) -> Any:
    values = [v for v in spec.resolve(node).get("enum", ()) if v is not None]
    return values[0] if len(values) == 1 else None


# -- parents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parent:
    org_id: str
    parent_id: str | None  # the project, or the object a view is on; None for org-level kinds


def _parent(conn: sqlite3.Connection, ck: ConfigKind, body: dict[str, Any], who: Principal) -> Parent:
    if ck.parent == "project":
        project = objects.get_object(conn, "project", body["project_id"], who.org_ids)
        return Parent(project["org_id"], project["id"])
    if ck.parent == "object":
        org_id = access.object_org(conn, body["object_type"], body["object_id"], who.org_ids)
        return Parent(org_id, body["object_id"])
    org = who.default_org(body.get("org_name"))
    if org is None:
        raise NotFound(f"org {body.get('org_name')!r} not found")
    return Parent(org.org_id, None)


def _require_owner_of_org_level(conn: sqlite3.Connection, ck: ConfigKind, who: Principal, org_id: str) -> None:  # fmt: skip
    """Org-level objects (groups) change only with the Owner role, like roles and ACLs."""
    if ck.parent == "org" and not access.is_owner(conn, who.user_id, org_id):
        raise access.Forbidden(f"changing a {ck.kind} needs the Owner role on the organization")


# -- lookups ---------------------------------------------------------------------------------


def find_by_key(conn: sqlite3.Connection, kind: StoredKind, parent: Parent, key: dict[str, Any]) -> dict[str, Any] | None:  # fmt: skip
    """The live object of ``kind`` in ``parent`` whose key fields equal ``key``."""
    where = " AND ".join("json_extract(data, ?) IS ?" for _ in key)
    params = [p for name, value in key.items() for p in (f"$.{name}", value)]
    row = conn.execute(
        f"SELECT data FROM objects WHERE kind = ? AND org_id = ? AND project_id IS ? AND deleted = 0 AND {where}",
        (kind, parent.org_id, parent.parent_id, *params),
    ).fetchone()
    if row is None:
        return None
    found: dict[str, Any] = orjson.loads(row[0])
    return found


def _key_of(ck: ConfigKind, obj: dict[str, Any]) -> dict[str, Any]:
    return {name: obj.get(name) for name in ck.key}


def _check_slug_free(conn: sqlite3.Connection, ck: ConfigKind, parent: Parent, obj: dict[str, Any]) -> None:
    """A prompt's slug may not be a function's in the same project, and the other way round."""
    if ck.kind not in _SLUG_SHARING:
        return
    for other in _SLUG_SHARING:
        if other == ck.kind:
            continue
        taken = find_by_key(conn, other, parent, {"slug": obj["slug"]})
        if taken is not None:
            raise Conflict(f"slug {obj['slug']!r} is taken by {other} {taken['name']!r} ({taken['id']}) in this project")  # fmt: skip


def _check_key_free(conn: sqlite3.Connection, ck: ConfigKind, parent: Parent, obj: dict[str, Any]) -> None:
    taken = find_by_key(conn, ck.kind, parent, _key_of(ck, obj))
    if taken is not None and taken["id"] != obj["id"]:
        named = ", ".join(f"{k} {v!r}" for k, v in _key_of(ck, obj).items())
        raise Conflict(f"a {ck.kind} with {named} already exists ({taken['id']})")
    _check_slug_free(conn, ck, parent, obj)


# -- writes ----------------------------------------------------------------------------------


def _fields(ck: ConfigKind, body: dict[str, Any]) -> dict[str, Any]:
    """The client-given fields of a create or replace: every field the body has, the read
    schema's other nullable client fields null."""
    read = ck.read.get("properties", {})
    out = {name: None for name, node in read.items() if name not in ck.server_fields and _nullable(node)}
    out.update({k: v for k, v in body.items() if k != "org_name"})
    return out


def _store(conn: sqlite3.Connection, ck: ConfigKind, obj: dict[str, Any], action: str) -> dict[str, Any]:
    return versions.record(conn, obj, action) if ck.versioned else obj


#: The write-only field of each kind that has one.
_WRITE_ONLY: Final[dict[str, str]] = {"ai_secret": "secret"}
_SHOWN_SECRET_CHARS: Final = 4
_SHOWN_FROM_LENGTH: Final = 12


def _preview(secret: str) -> str:
    shown = secret[-_SHOWN_SECRET_CHARS:] if len(secret) >= _SHOWN_FROM_LENGTH else ""
    return "*" * 8 + shown


def _write_only(ck: ConfigKind, obj: dict[str, Any], given: dict[str, Any], who: Principal) -> None:
    """Take ``ck``'s write-only field out of ``obj``; when ``given`` sets it (not null), record
    its preview and when and by whom it was set instead (see the module docstring)."""
    name = _WRITE_ONLY.get(ck.kind)
    if name is None:
        return
    obj.pop(name, None)
    value = given.get(name)
    if isinstance(value, str):
        obj.update(preview_secret=_preview(value), secret_updated_at=now_iso(), secret_updated_by_user_id=who.user_id)  # fmt: skip
    if "updated_at" in ck.read.get("properties", {}):
        obj["updated_at"] = now_iso()


def create(conn: sqlite3.Connection, kind: StoredKind, body: dict[str, Any], who: Principal, *, replace: bool) -> tuple[dict[str, Any], bool]:  # fmt: skip
    """Get-or-create (``replace`` False) or create-or-replace; the object and whether it existed."""
    ck = config_kind(kind)
    parent = _parent(conn, ck, body, who)
    _require_owner_of_org_level(conn, ck, who, parent.org_id)
    _check_members(conn, body, parent.org_id)
    fields = _fields(ck, body)
    existing = find_by_key(conn, kind, parent, _key_of(ck, fields))
    if existing is not None and not replace:
        return existing, True
    if existing is not None:
        kept = {name: existing.get(name) for name in ck.server_fields}
        obj = {**existing, **fields, **kept}
        if "user_id" in ck.read.get("properties", {}) and obj.get("user_id") is None:
            obj["user_id"] = existing.get("user_id")  # a view's creator, when the replacing body names none
        _write_only(ck, obj, body, who)
        _check_slug_free(conn, ck, parent, obj)
        return objects.save_object(conn, _store(conn, ck, obj, "upsert")), True
    read = ck.read.get("properties", {})
    obj = {name: fields[name] if name in fields else _enum_value(node) for name, node in read.items()}
    obj.update(fields)  # fields only the create schema lists are kept too
    obj.update({"id": str(uuid.uuid4()), "created": now_iso()})
    if "user_id" in read and obj.get("user_id") is None:
        obj["user_id"] = who.user_id
    if "org_id" in read:
        obj["org_id"] = parent.org_id
    _write_only(ck, obj, body, who)
    _check_slug_free(conn, ck, parent, obj)
    _store(conn, ck, obj, "upsert")
    conn.execute(
        "INSERT INTO objects (kind, id, org_id, project_id, name, data) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, obj["id"], parent.org_id, parent.parent_id, obj["name"], orjson.dumps(obj).decode()),
    )
    return obj, False


def _check_members(conn: sqlite3.Connection, body: dict[str, Any], org_id: str) -> None:
    """A group's member users must belong to its org, its member groups be groups of it."""
    for where, ids in (("member_users", body.get("member_users")), ("add_member_users", body.get("add_member_users"))):  # fmt: skip
        for user_id in ids or ():
            if conn.execute("SELECT 1 FROM members WHERE user_id = ? AND org_id = ?", (user_id, org_id)).fetchone() is None:  # fmt: skip
                raise BadRequest(f"body.{where}: user {user_id} is not a member of the organization")
    for where, ids in (("member_groups", body.get("member_groups")), ("add_member_groups", body.get("add_member_groups"))):  # fmt: skip
        for group_id in ids or ():
            try:
                objects.get_object(conn, "group", group_id, [org_id])
            except NotFound:
                raise BadRequest(f"body.{where}: group {group_id} not found in the organization") from None


def _visible(conn: sqlite3.Connection, kind: StoredKind, object_id: str, who: Principal) -> tuple[ConfigKind, Parent, dict[str, Any]]:  # fmt: skip
    org_id, parent_id = objects.located(conn, kind, object_id, who.org_ids)
    return (
        config_kind(kind),
        Parent(org_id, parent_id),
        objects.get_object(conn, kind, object_id, who.org_ids),
    )


def _check_view_object(ck: ConfigKind, obj: dict[str, Any], body: dict[str, Any]) -> None:
    """``PATCH``/``DELETE /v1/view/{id}`` name the view's object too; another one is a 404."""
    if ck.parent == "object" and (body.get("object_type"), body.get("object_id")) != (obj["object_type"], obj["object_id"]):  # fmt: skip
        raise NotFound(
            f"{ck.kind} {obj['id']} not found on {body.get('object_type')} {body.get('object_id')}"
        )


def patch(conn: sqlite3.Connection, kind: StoredKind, object_id: str, body: dict[str, Any], who: Principal) -> dict[str, Any]:  # fmt: skip
    ck, parent, obj = _visible(conn, kind, object_id, who)
    _require_owner_of_org_level(conn, ck, who, parent.org_id)
    _check_view_object(ck, obj, body)
    _check_members(conn, body, parent.org_id)
    read = ck.read.get("properties", {})
    for name, value in body.items():
        if name.startswith(("add_", "remove_")) and name.split("_", 1)[1] in read:
            target = name.split("_", 1)[1]
            current = list(obj.get(target) or [])
            if name.startswith("add_"):
                obj[target] = list(dict.fromkeys([*current, *(value or [])]))
            else:
                obj[target] = [v for v in current if v not in set(value or [])]
        elif name in read and name not in ("object_type", "object_id"):
            if value is None and not _nullable(read[name]):
                continue  # a null name, slug, url, ... leaves it as it is
            if isinstance(value, dict) and isinstance(obj.get(name), dict):
                merged = copy.deepcopy(obj[name])  # the spec: "object-type fields will be deep-merged"
                deep_merge(merged, value, set())
                value = merged
            obj[name] = value
    _write_only(ck, obj, body, who)
    _check_key_free(conn, ck, parent, obj)
    return objects.save_object(conn, _store(conn, ck, obj, "merge"))


def get(conn: sqlite3.Connection, kind: StoredKind, object_id: str, who: Principal, version: int | None = None) -> dict[str, Any]:  # fmt: skip
    ck, _, obj = _visible(conn, kind, object_id, who)
    if version is None or not ck.versioned:
        return obj
    old = versions.as_of(conn, object_id, version)
    if old is None:
        raise NotFound(f"{kind} {object_id} has no version at or before {version}")
    return old


def delete(conn: sqlite3.Connection, kind: StoredKind, object_id: str, body: dict[str, Any], who: Principal) -> dict[str, Any]:  # fmt: skip
    ck, parent, obj = _visible(conn, kind, object_id, who)
    _require_owner_of_org_level(conn, ck, who, parent.org_id)
    _check_view_object(ck, obj, body)
    if "deleted_at" in ck.read.get("properties", {}):
        obj["deleted_at"] = now_iso()
    conn.execute(
        "UPDATE objects SET deleted = 1, data = ? WHERE id = ?", (orjson.dumps(obj).decode(), object_id)
    )
    return obj


def delete_named(conn: sqlite3.Connection, kind: StoredKind, body: dict[str, Any], who: Principal) -> dict[str, Any]:  # fmt: skip
    """Delete the org-level object of ``kind`` that ``body`` names (``name``, ``org_name``)."""
    org = who.default_org(body.get("org_name"))
    found = (
        None if org is None else find_by_key(conn, kind, Parent(org.org_id, None), {"name": body.get("name")})
    )
    if found is None:
        raise NotFound(f"{kind} {body.get('name')!r} not found")
    return delete(conn, kind, found["id"], {}, who)


def list_objects(conn: sqlite3.Connection, kind: StoredKind, flt: ListFilter, who: Principal, on: tuple[str, str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One page of a list, newest first; with ``flt.as_of`` each object as of that version.
    ``on`` is the object a view list names (a 404 when the caller cannot see it)."""
    if on is not None:
        access.object_org(conn, *on, who.org_ids)
    found = objects.list_objects(conn, kind, who.org_ids, flt)
    if flt.as_of is None or not config_kind(kind).versioned:
        return found
    return [cast(dict[str, Any], versions.as_of(conn, o["id"], flt.as_of)) for o in found]
