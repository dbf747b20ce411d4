"""``POST /v1/{project_logs|experiment|dataset}/{id}/feedback``: feedback on rows by id.

Applied the way the spec describes each field of a ``Feedback*Item`` (and the official SDK's
``log_feedback`` writes it): ``scores`` are merged into the row's scores, ``expected``
replaces the row's and ``tags`` join them (a merge, as an ``_is_merge`` insert). A ``comment``
is attached to the row in its ``comments`` list; ``metadata`` and ``source`` describe the
feedback, not the event, so they go with the comment and with an entry of the row's
``audit_data`` (the spec's "audit log attached to the event"), never into the row's own
metadata. Both are write instructions of :func:`~pipeline.emulator.rowwrite.write_events`
(``AUDIT``, ``COMMENT``), which the SDKs' ``/logs3`` rows use too. The row must exist (404
otherwise); every item of a request is written under one transaction id.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web

from pipeline.emulator import bodies, spec
from pipeline.emulator.objects import NotFound, resolve_row_object
from pipeline.emulator.rest import json_body, json_response, principal, store, uuid_param
from pipeline.emulator.rowwrite import AUDIT, COMMENT, Target, latest_row, now_iso, write_events
from pipeline.emulator.timestamps import canonical_time
from pipeline.querylang.ast import ObjectType

#: The row fields a feedback item updates, each as the spec's item describes it.
_UPDATES: Final = ("scores", "expected", "tags")


@functools.cache
def _schema(object_type: ObjectType) -> dict[str, Any]:
    for path in spec.spec()["paths"]:
        if path.startswith(f"/v1/{object_type}/{{") and path.endswith("}/feedback"):
            return bodies.request_schema("POST", path)
    raise LookupError(f"the spec has no POST /v1/{object_type}/{{id}}/feedback")


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
        "created": canonical_time(created) if created else now_iso(),
        "origin": {"id": row_id},
        "comment": comment,
        "user_id": user_id,
        "source": source or "external",
        "metadata": metadata,
    }


def apply_feedback(
    conn: sqlite3.Connection,
    object_type: ObjectType,
    object_id: str,
    items: list[dict[str, Any]],
    org_ids: Sequence[str],
    user_id: str,
) -> None:
    """Write ``items`` (checked against the spec) as merges into their rows: the updates with
    an ``audit_data`` entry saying who made them, from where and why; a comment as an entry of
    the row's ``comments``. A row the object does not hold is a 404."""
    project_id, org_id = resolve_row_object(conn, object_type, object_id, org_ids)
    target = Target(object_type, object_id, project_id, org_id)
    events: list[dict[str, Any]] = []
    for item in items:
        row_id = item["id"]
        if latest_row(conn, target, row_id) is None:
            raise NotFound(f"{object_type} row {row_id} not found")
        update = {k: item[k] for k in _UPDATES if item.get(k) is not None}
        about: dict[str, Any] = {
            "user_id": user_id,
            "source": item.get("source") or "external",
            "metadata": item.get("metadata"),
        }
        events.append({"id": row_id, "_is_merge": True, **update, **({AUDIT: about} if update else {})})
        if item.get("comment") is not None:
            events.append({"id": row_id, COMMENT: comment_entry(row_id, {"text": item["comment"]}, **about)})
    write_events(conn, [(target, events)])


async def feedback(request: web.Request, object_type: ObjectType, object_id: str) -> web.Response:
    uuid_param(object_id, f"{object_type} id")
    body = bodies.checked(_schema(object_type), await json_body(request))
    who = principal(request)
    items = body["feedback"]
    await store(request).write(
        lambda c: apply_feedback(c, object_type, object_id, items, who.org_ids, who.user_id)
    )
    return json_response({"status": "success"})
