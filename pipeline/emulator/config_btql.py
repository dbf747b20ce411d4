"""``/btql`` over a project's prompts and functions: ``from: project_prompts('<project id>')`` and
``project_functions``, the way the Python SDK's ``get_prompt_versions`` lists a prompt's versions.

Only the parsed query object is read (what the SDK sends): ``select: *``, the source, and an
optional ``filter`` of ``id = '<id>'`` (anything else is a 400 naming it). Without
``audit_log`` the answer is each live object as it is now, newest first; with
``audit_log: true`` it is every version, oldest first, each with ``audit_data.action``
``upsert`` (create, replace) or ``merge`` (patch), as the SDK reads it. One page holds all.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from pipeline.emulator import objects, versions
from pipeline.emulator.auth import Principal
from pipeline.emulator.objects import ListFilter, StoredKind
from pipeline.emulator.validate import BadRequest

SOURCES: Final[dict[str, StoredKind]] = {"project_prompts": "prompt", "project_functions": "function"}


def source_kind(body: Any) -> StoredKind | None:
    """The kind a ``/btql`` body reads when it names a prompt or function source, else None."""
    query = body.get("query") if isinstance(body, dict) else None
    source = query.get("from") if isinstance(query, dict) else None
    name = source.get("name") if isinstance(source, dict) else None
    parts = name.get("name") if isinstance(name, dict) else None
    if isinstance(parts, list) and len(parts) == 1 and parts[0] in SOURCES:
        return SOURCES[parts[0]]
    return None


def _project_id(query: dict[str, Any]) -> str:
    args = query["from"].get("args") or []
    if len(args) != 1 or not isinstance(args[0], dict) or not isinstance(args[0].get("value"), str):
        raise BadRequest("query.from: expected one project id literal")
    value: str = args[0]["value"]
    return value


def _id_filter(query: dict[str, Any]) -> str | None:
    node = query.get("filter")
    if node is None:
        return None
    left, right = (node.get("left") or {}, node.get("right") or {}) if isinstance(node, dict) else ({}, {})
    if node.get("op") != "eq" or left.get("name") != ["id"] or not isinstance(right.get("value"), str):
        raise BadRequest("query.filter: only id = '<id>' is supported on prompt and function sources")
    value: str = right["value"]
    return value


def rows(conn: sqlite3.Connection, kind: StoredKind, body: dict[str, Any], who: Principal) -> list[dict[str, Any]]:  # fmt: skip
    """The rows of one such query (see the module docstring)."""
    query = body["query"]
    project_id = _project_id(query)
    objects.get_object(conn, "project", project_id, who.org_ids)
    wanted = _id_filter(query)
    live = objects.list_objects(conn, kind, who.org_ids, ListFilter(project_id=project_id, ids=(wanted,) if wanted else ()))  # fmt: skip
    if not body.get("audit_log"):
        return live
    sql = "SELECT id FROM objects WHERE kind = ? AND project_id = ?" + (" AND id = ?" if wanted else "")
    ids = [r[0] for r in conn.execute(sql, (kind, project_id, *((wanted,) if wanted else ())))]
    return [{**obj, "audit_data": {"action": action}} for action, obj in versions.history(conn, ids)]
