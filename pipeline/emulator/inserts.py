"""The three insert request forms, reduced to one: ``(object_type, object_id, events)`` batches.

``/v1/{type}/{id}/insert`` names one object; ``/v1/insert`` maps type -> id -> events;
``/logs3`` (the official SDK) tags each row with its object keys, or names a batch uploaded
through the overflow path (:func:`overflow_reference`, applied by ``overflow.py``). All are
validated in full before :func:`write_batches` writes them under one transaction id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pipeline.emulator.feedback import comment_entry
from pipeline.emulator.objects import resolve_row_object
from pipeline.emulator.rowwrite import AUDIT, COMMENT, Target, write_events
from pipeline.emulator.validate import (
    BadRequest,
    date_time,
    events_list,
    fail,
    listed_event,
    string,
)
from pipeline.querylang.ast import OBJECT_TYPES, ObjectType

Batch = tuple[ObjectType, str, list[dict[str, Any]]]

#: Where a ``/logs3`` comment row travels in its batch, until it is attached (``write_batches``).
_COMMENT: Final = "\0comment"
#: ``rows.type`` of a ``/logs3`` body that names an overflow upload instead of carrying rows.
OVERFLOW_REFERENCE_TYPE: Final = "logs3_overflow"


@dataclass(frozen=True)
class OverflowReference:
    key: str
    size_bytes: int | None  # the JavaScript SDK leaves it out


def object_insert(object_type: ObjectType, object_id: str, body: Any) -> list[Batch]:
    events = [listed_event(object_type, event, f"events[{i}]") for i, event in enumerate(events_list(body))]
    return [(object_type, object_id, events)]


def cross_object_insert(body: Any) -> list[Batch]:
    if not isinstance(body, dict):
        raise BadRequest("request body: expected object")
    batches: list[Batch] = []
    for object_type, per_object in body.items():
        if object_type not in OBJECT_TYPES:
            raise fail(object_type, f"unknown object type (use {', '.join(OBJECT_TYPES)})")
        if per_object is None:
            continue
        if not isinstance(per_object, dict):
            raise fail(object_type, "expected an object mapping ids to {events: [...]}")
        for object_id, entry in per_object.items():
            where = f"{object_type}.{object_id}"
            if not isinstance(entry, dict) or set(entry) - {"events", "feedback"}:
                raise fail(where, "expected {events: [...]}")
            if entry.get("feedback"):
                raise fail(f"{where}.feedback", "feedback is not supported")
            events = entry.get("events") or []
            if not isinstance(events, list):
                raise fail(f"{where}.events", "expected array")
            listed = [listed_event(object_type, e, f"{where}.events[{i}]") for i, e in enumerate(events)]
            batches.append((object_type, object_id, listed))
    return batches


def logs3_target(row: dict[str, Any], where: str) -> tuple[ObjectType, str]:
    """The object a logs3 row (or an overflow row's ``object_ids``) names. ``/logs3`` is the
    SDK's own route, not in the spec, so how its rows name their object is written here."""
    if isinstance(row.get("experiment_id"), str):
        return "experiment", row["experiment_id"]
    if isinstance(row.get("dataset_id"), str):
        return "dataset", row["dataset_id"]
    if isinstance(row.get("project_id"), str) and row.get("log_id") == "g":
        return "project_logs", row["project_id"]
    raise fail(where, "row needs experiment_id, dataset_id, or project_id with log_id 'g'")


def overflow_reference(body: Any) -> OverflowReference | None:
    """The upload a ``/logs3`` body names (``{"rows": {"type": "logs3_overflow", "key", "size_bytes"}}``),
    or ``None`` for an ordinary body."""
    rows = body.get("rows") if isinstance(body, dict) else None
    if not isinstance(rows, dict):
        return None
    if rows.get("type") != OVERFLOW_REFERENCE_TYPE:
        raise fail("rows.type", f"expected {OVERFLOW_REFERENCE_TYPE!r} (or rows as an array)")
    key, size = rows.get("key"), rows.get("size_bytes")
    if not isinstance(key, str) or not key:
        raise fail("rows.key", "expected the key /logs3/overflow answered")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise fail("rows.size_bytes", "expected an integer")
    return OverflowReference(key, size)


def logs3_insert(body: Any) -> list[Batch]:
    """The batches of a ``/logs3`` body. Its rows are the SDKs' own: a field the spec's events
    of that type do not list (the JavaScript SDK forwards an experiment row's
    ``datasetRecordId``) is accepted and not stored, as by every insert (``listed_event``); the SDK's ``_audit_source`` and
    ``_audit_metadata`` (``log_feedback``) become an entry of the row's ``audit_data``, as the
    feedback route records them; and a row with a ``comment`` is a comment on the row its
    ``origin`` names (:func:`_comment_row`)."""
    rows = events_list(body, "rows")
    grouped: dict[tuple[ObjectType, str], list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        if not isinstance(row, dict):
            raise fail(where, "expected object")
        object_type, object_id = logs3_target(row, where)
        if "comment" in row:
            event = _comment_row(row, where)
        else:
            event = listed_event(object_type, row, where, logs3=True)
            if row.get("_audit_source") is not None or row.get("_audit_metadata") is not None:
                event[AUDIT] = {"source": row.get("_audit_source") or "external", "metadata": row.get("_audit_metadata")}  # fmt: skip
        grouped.setdefault((object_type, object_id), []).append(event)
    return [(t, i, events) for (t, i), events in grouped.items()]


def _comment_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A comment row as ``log_feedback`` sends it: ``{id, created, origin: {id}, comment:
    {text}, <object keys>, _audit_source, _audit_metadata}``, kept for :func:`write_batches`."""
    origin, comment = row.get("origin"), row["comment"]
    if not isinstance(origin, dict) or not isinstance(origin.get("id"), str):
        raise fail(f"{where}.origin.id", "a comment row names the row it is about")
    if not isinstance(comment, dict) or not isinstance(comment.get("text"), str):
        raise fail(f"{where}.comment", "expected {text: string}")
    for name in ("id", "created"):
        if row.get(name) is not None:
            (string if name == "id" else date_time)(row[name], f"{where}.{name}")
    return {_COMMENT: row}


def _audited(event: dict[str, Any], user_id: str) -> dict[str, Any]:
    if AUDIT not in event:
        return event
    return {**event, AUDIT: {"user_id": user_id, **event[AUDIT]}}


def write_batches(
    conn: sqlite3.Connection, batches: list[Batch], org_ids: Sequence[str], user_id: str = ""
) -> list[list[str]]:
    """Check every target is visible to the caller, then write all batches in one transaction.
    The comment rows of a ``/logs3`` batch go after its other rows, so a comment finds the row
    it is about when the batch writes that row too; their ids come back after the others'."""
    targets: list[tuple[Target, list[dict[str, Any]]]] = []
    for object_type, object_id, events in batches:
        project_id, org_id = resolve_row_object(conn, object_type, object_id, org_ids)
        rows = [_audited(e, user_id) for e in events if _COMMENT not in e]
        comments = [_comment_event(e[_COMMENT], user_id) for e in events if _COMMENT in e]
        targets.append((Target(object_type, object_id, project_id, org_id), rows + comments))
    return write_events(conn, targets)


def _comment_event(row: dict[str, Any], user_id: str) -> dict[str, Any]:
    """The event attaching a ``/logs3`` comment row to the row its ``origin`` names."""
    entry = comment_entry(
        row["origin"]["id"], row["comment"], user_id=user_id, source=row.get("_audit_source"),
        metadata=row.get("_audit_metadata"), entry_id=row.get("id"), created=row.get("created"),
    )  # fmt: skip
    return {"id": row["origin"]["id"], COMMENT: entry}
