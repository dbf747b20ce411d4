"""Projects, datasets and experiments: create (get-or-create), get, list, patch, delete; and the
storage of every REST object kept in the ``objects`` table (custom roles too, see ``roles.py``).

Functions take a SQLite connection (run them through ``Store.read``/``Store.write``) and
the org ids the caller may see; an object of another org is reported exactly like a
missing one (:class:`NotFound`), so ids never leak across orgs. Each object is stored
as the JSON the REST API returns, plus indexed columns for lookups.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from pipeline.emulator.rowwrite import deep_merge, now_iso
from pipeline.emulator.validate import BadRequest

Kind = Literal["project", "dataset", "experiment"]
KINDS: Final[tuple[Kind, ...]] = ("project", "dataset", "experiment")
#: Every kind kept in the ``objects`` table: the REST kinds above, org-level custom roles, the
#: settings of an org (``organizations.py``) and the project configuration objects
#: (``configobjects.py``: prompts, functions, scores, tags, views, span iframes, automations, groups,
#: AI secrets).
StoredKind = Literal[
    "project", "dataset", "experiment", "role", "organization", "prompt", "function",
    "project_score", "project_tag", "view", "span_iframe", "project_automation", "group", "ai_secret",
]  # fmt: skip


class NotFound(LookupError):
    """No such object visible to the caller; the message is the 404 body."""


class Conflict(ValueError):
    """The request collides with another object (a slug taken by another kind, a name taken in
    the parent); the 409 body."""


@dataclass(frozen=True)
class ListFilter:
    project_name: str | None = None
    project_id: str | None = None
    name: str | None = None  # dataset_name / experiment_name / project_name for projects
    org_name: str | None = None
    ids: tuple[str, ...] = ()
    limit: int | None = None
    starting_after: str | None = None
    ending_before: str | None = None
    #: ``(field, allowed values)`` pairs a stored object's JSON must match (a prompt's ``slug``).
    fields: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    #: Only objects with a recorded version at or before this ``_xact_id`` (``versions.py``).
    as_of: int | None = None


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _load(conn: sqlite3.Connection, kind: StoredKind, object_id: str, org_ids: Sequence[str], *, deleted_too: bool = False) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """``(seq, object)`` of a live object the caller may see (or a deleted one, with
    ``deleted_too``); else :class:`NotFound`."""
    live = "" if deleted_too else " AND deleted = 0"
    row = conn.execute(
        f"SELECT seq, data FROM objects WHERE kind = ? AND id = ?{live} AND org_id IN ({_marks(len(org_ids))})",
        (kind, object_id, *org_ids),
    ).fetchone()
    if row is None:
        raise NotFound(f"{kind} {object_id} not found")
    return int(row[0]), orjson.loads(row[1])


def get_object(
    conn: sqlite3.Connection, kind: StoredKind, object_id: str, org_ids: Sequence[str]
) -> dict[str, Any]:
    return _load(conn, kind, object_id, org_ids)[1]


def located(conn: sqlite3.Connection, kind: StoredKind, object_id: str, org_ids: Sequence[str]) -> tuple[str, str | None]:  # fmt: skip
    """``(org_id, parent id)`` of a live object the caller may see (the parent: its project, the
    object a view is on, or None); else :class:`NotFound`."""
    row = conn.execute(
        f"SELECT org_id, project_id FROM objects WHERE kind = ? AND id = ? AND deleted = 0 AND org_id IN ({_marks(len(org_ids))})",
        (kind, object_id, *org_ids),
    ).fetchone()
    if row is None:
        raise NotFound(f"{kind} {object_id} not found")
    return str(row[0]), row[1]


def by_name(conn: sqlite3.Connection, kind: StoredKind, org_id: str, project_id: str | None, name: str) -> dict[str, Any] | None:  # fmt: skip
    row = conn.execute(
        "SELECT data FROM objects WHERE kind = ? AND org_id = ? AND project_id IS ? AND name = ? AND deleted = 0",
        (kind, org_id, project_id, name),
    ).fetchone()
    return None if row is None else orjson.loads(row[0])


def insert_object(
    conn: sqlite3.Connection, kind: StoredKind, obj: dict[str, Any], org_id: str
) -> dict[str, Any]:
    conn.execute(
        "INSERT INTO objects (kind, id, org_id, project_id, name, data) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, obj["id"], org_id, obj.get("project_id"), obj["name"], orjson.dumps(obj).decode()),
    )
    return obj


def create_project(
    conn: sqlite3.Connection, body: dict[str, Any], org_id: str, user_id: str
) -> tuple[dict[str, Any], bool]:
    """Get-or-create by name, as every create here: ``(the project, whether it was there)``."""
    existing = by_name(conn, "project", org_id, None, body["name"])
    if existing is not None:
        return existing, True
    obj = {
        "id": str(uuid.uuid4()), "org_id": org_id, "name": body["name"],
        "description": body.get("description"), "created": now_iso(), "deleted_at": None,
        "user_id": user_id, "settings": body.get("settings"),
    }  # fmt: skip
    return insert_object(conn, "project", obj, org_id), False


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "dataset"


def create_dataset(conn: sqlite3.Connection, body: dict[str, Any], org_ids: Sequence[str], user_id: str) -> tuple[dict[str, Any], bool]:  # fmt: skip
    project = get_object(conn, "project", body["project_id"], org_ids)
    existing = by_name(conn, "dataset", project["org_id"], project["id"], body["name"])
    if existing is not None:
        return existing, True
    obj = {
        "id": str(uuid.uuid4()), "project_id": project["id"], "name": body["name"],
        "description": body.get("description"), "created": now_iso(), "deleted_at": None,
        "user_id": user_id, "tags": body.get("tags"), "metadata": body.get("metadata"),
        "url_slug": _slug(body["name"]),
    }  # fmt: skip
    return insert_object(conn, "dataset", obj, project["org_id"]), False


_EXPERIMENT_FIELDS: Final = (
    "description", "repo_info", "base_exp_id", "dataset_id", "dataset_version", "internal_metadata",
    "parameters_id", "parameters_version", "metadata", "tags",
)  # fmt: skip


#: Experiment fields that name another object, which must be one of the experiment's org.
_EXPERIMENT_LINKS: Final[dict[str, StoredKind]] = {"dataset_id": "dataset", "base_exp_id": "experiment"}


def _check_links(conn: sqlite3.Connection, fields: dict[str, Any], org_id: str) -> None:
    """Refuse a link to an object that is not there, is another kind, or is another org's
    (which the caller is told nothing more about than a missing one)."""
    for field, kind in _EXPERIMENT_LINKS.items():
        value = fields.get(field)
        if value is None:
            continue
        try:
            located(conn, kind, value, (org_id,))
        except NotFound:
            raise BadRequest(f"{field}: no {kind} {value} in this organization") from None


def create_experiment(conn: sqlite3.Connection, body: dict[str, Any], org_ids: Sequence[str], user_id: str) -> tuple[dict[str, Any], bool]:  # fmt: skip
    project = get_object(conn, "project", body["project_id"], org_ids)
    org_id = project["org_id"]
    name = body.get("name") or "experiment"
    existing = by_name(conn, "experiment", org_id, project["id"], name)
    if existing is not None:
        if not body.get("ensure_new"):
            return existing, True
        n = 1
        while by_name(conn, "experiment", org_id, project["id"], f"{name}-{n}") is not None:
            n += 1
        name = f"{name}-{n}"
    obj = {
        "id": str(uuid.uuid4()), "project_id": project["id"], "name": name, "created": now_iso(),
        **{f: body.get(f) for f in _EXPERIMENT_FIELDS},
        "commit": (body.get("repo_info") or {}).get("commit"), "deleted_at": None,
        "public": bool(body.get("public") or False), "user_id": user_id,
    }  # fmt: skip
    _check_links(conn, obj, org_id)
    return insert_object(conn, "experiment", obj, org_id), False


def list_objects(conn: sqlite3.Connection, kind: StoredKind, org_ids: Sequence[str], flt: ListFilter) -> list[dict[str, Any]]:  # fmt: skip
    """Objects matching ``flt``, newest first, paged by ``starting_after``/``ending_before`` ids."""
    where = ["o.kind = ?", "o.deleted = 0", f"o.org_id IN ({_marks(len(org_ids))})"]
    params: list[Any] = [kind, *org_ids]
    if flt.org_name is not None:
        where.append("o.org_id = (SELECT id FROM orgs WHERE name = ?)")
        params.append(flt.org_name)
    if flt.name is not None:
        where.append("o.name = ?")
        params.append(flt.name)
    if kind != "project":
        if flt.project_id is not None:
            where.append("o.project_id = ?")
            params.append(flt.project_id)
        if flt.project_name is not None:
            where.append(
                "o.project_id IN (SELECT id FROM objects WHERE kind = 'project' AND deleted = 0 AND name = ?)"
            )
            params.append(flt.project_name)
    if flt.ids:
        where.append(f"o.id IN ({_marks(len(flt.ids))})")
        params.extend(flt.ids)
    for name, values in flt.fields:
        where.append(f"json_extract(o.data, ?) IN ({_marks(len(values))})")
        params.extend((f"$.{name}", *values))
    if flt.as_of is not None:
        where.append("EXISTS (SELECT 1 FROM object_versions v WHERE v.id = o.id AND v.xact_id <= ?)")
        params.append(flt.as_of)
    order = "DESC"
    for anchor, op in ((flt.starting_after, "<"), (flt.ending_before, ">")):
        if anchor is not None:
            # an object deleted since the page that named it still marks its place, so a client
            # paging while objects go keeps its cursor ("the final item in the last page you fetched")
            seq, _ = _load(conn, kind, anchor, org_ids, deleted_too=True)
            where.append(f"o.seq {op} ?")
            params.append(seq)
            order = "ASC" if op == ">" else order
    sql = f"SELECT data FROM objects o WHERE {' AND '.join(where)} ORDER BY o.seq {order}"
    if flt.limit is not None:
        sql += " LIMIT ?"
        params.append(flt.limit)
    found = [orjson.loads(r[0]) for r in conn.execute(sql, params)]
    return found[::-1] if order == "ASC" else found


#: Object fields a PATCH replaces whole, where the spec says so ("Patch operations replace all
#: settings"); every other object-valued field is deep-merged.
REPLACED_ON_PATCH: Final = frozenset({("project", "settings")})


def patch_object(conn: sqlite3.Connection, kind: Kind, object_id: str, org_ids: Sequence[str], body: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Apply a PATCH. A name stays unique in its parent (create finds objects by it): a rename
    onto a live object's name is a :class:`Conflict`."""
    org_id, parent = located(conn, kind, object_id, org_ids)
    obj = get_object(conn, kind, object_id, org_ids)
    name = body.get("name")
    if name is not None and name != obj["name"] and by_name(conn, kind, org_id, parent, name) is not None:
        where = "its organization" if kind == "project" else "its project"
        raise Conflict(f"name: {name!r} is taken by another {kind} in {where}")
    if kind == "experiment":
        _check_links(conn, body, org_id)
    for key, value in body.items():
        if (
            isinstance(value, dict)
            and isinstance(obj.get(key), dict)
            and (kind, key) not in REPLACED_ON_PATCH
        ):
            deep_merge(obj[key], value, set())  # the spec: "object-type fields will be deep-merged"
        elif value is not None or key != "name":
            obj[key] = value
    if kind == "experiment" and "repo_info" in body:
        obj["commit"] = (body["repo_info"] or {}).get("commit")
    return save_object(conn, obj)


def save_object(conn: sqlite3.Connection, obj: dict[str, Any]) -> dict[str, Any]:
    """Store a changed object (found by its id) as is."""
    conn.execute(
        "UPDATE objects SET name = ?, data = ? WHERE id = ?",
        (obj["name"], orjson.dumps(obj).decode(), obj["id"]),
    )
    return obj


def delete_object(
    conn: sqlite3.Connection, kind: StoredKind, object_id: str, org_ids: Sequence[str]
) -> dict[str, Any]:
    obj = get_object(conn, kind, object_id, org_ids)
    obj["deleted_at"] = now_iso()
    conn.execute(
        "UPDATE objects SET deleted = 1, data = ? WHERE id = ?", (orjson.dumps(obj).decode(), object_id)
    )
    _delete_held(conn, object_id, obj["deleted_at"])
    return obj


def _delete_held(conn: sqlite3.Connection, parent_id: str, when: str) -> None:
    """Delete what a deleted object holds (a project's datasets, experiments and configuration,
    and what those hold in turn, such as a view saved on an experiment), so every route treats
    them alike: gone, as their project is."""
    parents = [parent_id]
    while parents:
        marks = _marks(len(parents))
        held = [r[0] for r in conn.execute(f"SELECT id FROM objects WHERE project_id IN ({marks}) AND deleted = 0", parents)]  # fmt: skip
        conn.execute(
            "UPDATE objects SET deleted = 1, data = CASE WHEN json_type(data, '$.deleted_at') IS NULL"
            f" THEN data ELSE json_set(data, '$.deleted_at', ?) END WHERE project_id IN ({marks}) AND deleted = 0",
            (when, *parents),
        )
        parents = held


def resolve_row_object(conn: sqlite3.Connection, object_type: str, object_id: str, org_ids: Sequence[str]) -> tuple[str, str]:  # fmt: skip
    """``(project_id, org_id)`` of the object that rows of ``object_type``/``object_id`` belong to."""
    kind = "project" if object_type == "project_logs" else object_type
    row = conn.execute(
        f"SELECT coalesce(project_id, id), org_id FROM objects WHERE kind = ? AND id = ? AND deleted = 0"
        f" AND org_id IN ({_marks(len(org_ids))})",
        (kind, object_id, *org_ids),
    ).fetchone()
    if row is None:
        raise NotFound(f"{kind} {object_id} not found")
    return str(row[0]), str(row[1])
