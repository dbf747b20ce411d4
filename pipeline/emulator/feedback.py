"""``POST /v1/{project_logs|experiment|dataset}/{id}/feedback``: feedback on rows by id.

Applied the way the spec describes each field of a ``Feedback*Item`` (and the official SDK's
``log_feedback`` writes it): ``scores`` are merged into the row's scores, ``expected``
replaces the row's and ``tags`` join them, all in one merge write (a new row version, like an
``_is_merge`` insert, which joins tags as sets). A ``comment`` is attached to the row in its ``comments`` list; ``metadata`` and
``source`` describe the feedback, not the event, so they go with the comment and with an entry
of the row's ``audit_data`` (the spec's "audit log attached to the event"), never into the row's
own metadata. The row must exist (404 otherwise); every item of a request is written under one
transaction id.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web

from pipeline.emulator import bodies, jsonvalues, spec
from pipeline.emulator.objects import NotFound, resolve_row_object
from pipeline.emulator.rest import json_body, json_response, principal, store, uuid_param
from pipeline.emulator.rowwrite import Target, now_iso, write_events
from pipeline.querylang.ast import ObjectType

#: The row fields a feedback item updates, each as the spec's item describes it.
_UPDATES: Final = ("scores", "expected", "tags")


@functools.cache
def _schema(object_type: ObjectType) -> dict[str, Any]:
    for path in spec.spec()["paths"]:
        if path.startswith(f"/v1/{object_type}/{{") and path.endswith("}/feedback"):
            return bodies.request_schema("POST", path)
    raise LookupError(f"the spec has no POST /v1/{object_type}/{{id}}/feedback")


def _latest(conn: sqlite3.Connection, object_type: str, object_id: str, row_id: str) -> dict[str, Any]:
    found = conn.execute(
        "SELECT deleted, data FROM rows WHERE object_type = ? AND object_id = ? AND id = ?"
        " ORDER BY xact_id DESC LIMIT 1",
        (object_type, object_id, row_id),
    ).fetchone()
    if found is None or found[0]:
        raise NotFound(f"{object_type} row {row_id} not found")
    row: dict[str, Any] = jsonvalues.loads(found[1])
    return row


def comment_entry(
    row_id: str,
    comment: Any,
    *,
    user_id: str,
    source: Any,
    metadata: Any,
    entry_id: str | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """One entry of a row's ``comments``: what was said about row ``row_id``, by whom, from where."""
    return {
        "id": entry_id or str(uuid.uuid4()),
        "created": created or now_iso(),
        "origin": {"id": row_id},
        "comment": comment,
        "user_id": user_id,
        "source": source or "external",
        "metadata": metadata,
    }


def attach_comments(conn: sqlite3.Connection, comments: list[tuple[Target, dict[str, Any]]]) -> None:
    """Append each ``(target, entry)`` to the ``comments`` of the row its ``origin`` names, in
    one merge write. The official SDKs' ``log_feedback`` sends a comment as a ``/logs3`` row of
    its own, often in the batch that writes the row it is about; a comment on a row the object
    does not hold (never written, or deleted) has nothing to show on, and is dropped."""
    lists: dict[tuple[Target, str], list[Any]] = {}
    for target, entry in comments:
        key = (target, entry["origin"]["id"])
        if key not in lists:
            try:
                row = _latest(conn, target.object_type, target.object_id, key[1])
            except NotFound:
                continue
            lists[key] = list(row.get("comments") or [])
        entries = lists[key]
        same = [i for i, old in enumerate(entries) if isinstance(old, dict) and old.get("id") == entry["id"]]
        if same:  # a comment row is upserted by its id, as any row: sent again, it replaces itself
            entries[same[0]] = entry
        else:
            entries.append(entry)
    merges: dict[Target, list[dict[str, Any]]] = {}
    for (target, row_id), entries in lists.items():
        merges.setdefault(target, []).append({"id": row_id, "_is_merge": True, "comments": entries})
    if merges:
        write_events(conn, list(merges.items()))


def apply_feedback(
    conn: sqlite3.Connection,
    object_type: ObjectType,
    object_id: str,
    items: list[dict[str, Any]],
    org_ids: Sequence[str],
    user_id: str,
) -> None:
    """Write ``items`` (checked against the spec) as merges into their rows."""
    project_id, org_id = resolve_row_object(conn, object_type, object_id, org_ids)
    notes: dict[str, dict[str, list[Any]]] = {}  # row id -> comments and audit entries so far
    events = []
    for item in items:
        row_id = item["id"]
        if row_id not in notes:
            row = _latest(conn, object_type, object_id, row_id)
            notes[row_id] = {"comments": list(row.get("comments") or []), "audit_data": list(row.get("audit_data") or [])}  # fmt: skip
        update = {k: item[k] for k in _UPDATES if item.get(k) is not None}
        about: dict[str, Any] = {
            "user_id": user_id,
            "source": item.get("source") or "external",
            "metadata": item.get("metadata"),
        }
        created = now_iso()
        if update:
            notes[row_id]["audit_data"].append({"created": created, **about, "update": update})
        if item.get("comment") is not None:
            comment = comment_entry(row_id, {"text": item["comment"]}, created=created, **about)
            notes[row_id]["comments"].append(comment)
        kept = {name: list(values) for name, values in notes[row_id].items() if values}
        events.append({"id": row_id, "_is_merge": True, **update, **kept})
    write_events(conn, [(Target(object_type, object_id, project_id, org_id), events)])


async def feedback(request: web.Request, object_type: ObjectType, object_id: str) -> web.Response:
    uuid_param(object_id, f"{object_type} id")
    body = bodies.checked(_schema(object_type), await json_body(request))
    who = principal(request)
    items = body["feedback"]
    await store(request).write(
        lambda c: apply_feedback(c, object_type, object_id, items, who.org_ids, who.user_id)
    )
    return json_response({"status": "success"})
