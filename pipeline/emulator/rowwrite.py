"""Turning validated insert events into stored row versions (upsert, merge, delete).

All events of one request share one new ``_xact_id`` and are written in one transaction.
Per object and id the request collapses to one version (the last event wins; a
``_is_merge`` event merges into what came before it, in the request or in the database).
The stored ``data`` is the row exactly as read back, system fields first, so reads can
return it without decoding. Which fields a row carries is the spec's (``spec.py``).
"""

from __future__ import annotations

import copy
import functools
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from pipeline.emulator import jsonvalues, spec
from pipeline.emulator.store import next_row_seq, next_xact_id, pagination_key
from pipeline.emulator.timestamps import canonical_time
from pipeline.querylang.ast import ObjectType

#: The fields :func:`stored_row` fills in itself besides the object keys. The spec says what
#: they hold, not how a server picks them; each object type keeps those its read rows list.
STAMPED_FIELDS: Final = (
    "id", "_xact_id", "_pagination_key", "created", "org_id", "project_id",
    "span_id", "root_span_id", "span_parents", "is_root",
)  # fmt: skip


#: Fields a merge into an existing row leaves as they were: the spec says of each "if the row
#: is being merged into an existing row, this field will be ignored", and the SDKs' own merge
#: of a batch keeps them (``MERGE_ROW_SKIP_FIELDS``).
MERGE_KEEPS: Final = frozenset({"created", "span_id", "root_span_id", "span_parents", "_parent_id"})
#: Top-level lists a merge joins as sets (the existing items, then the new ones not among
#: them) unless ``_merge_paths`` names them: the SDKs' ``_SET_UNION_FIELDS``, whose merge of a
#: batch must agree with the server's.
SET_UNION_FIELDS: Final = frozenset({"tags"})
#: An event key :mod:`inserts` sets on a row carrying the SDKs' ``_audit_source`` or
#: ``_audit_metadata`` (``log_feedback``): who changed the row, from where, and why.
AUDIT: Final = "\0audit"
#: An event key naming one entry for the ``comments`` of the row the event's ``id`` names
#: (``feedback.comment_entry``): added, or replacing the entry of the same id, as a comment
#: row is upserted by its id. A comment on a row the object does not hold is dropped.
COMMENT: Final = "\0comment"

#: Read fields no event sets that a row keeps from version to version: the comments and audit
#: entries feedback attaches to it (``feedback.py``).
KEPT_FIELDS: Final = ("comments", "audit_data")


@dataclass(frozen=True)
class RowLayout:
    """How rows of one object type are written, from the spec's tables."""

    insertable: frozenset[str]  # the fields an event may set
    control: frozenset[str]  # write instructions, never stored
    data: frozenset[str]  # event fields stored as sent
    fixed: Mapping[str, str]  # keys with their one value (``log_id: "g"``)
    object_id_field: str  # the key holding the target's object id
    unlisted: tuple[str, ...]  # stamped fields the spec's rows of this type do not carry
    kept: tuple[str, ...]  # KEPT_FIELDS the spec's rows of this type carry


@functools.cache
def row_layout(object_type: ObjectType) -> RowLayout:
    fields = spec.row_fields(object_type)
    stamped = {*STAMPED_FIELDS, *fields.keys}
    return RowLayout(
        insertable=fields.insert,
        control=fields.control,
        data=frozenset(
            name
            for name in fields.read
            if (name in fields.insert or name in spec.LOGS3_FIELDS) and name not in stamped
        ),
        fixed=fields.fixed,
        object_id_field=fields.object_id_field,
        unlisted=tuple(name for name in STAMPED_FIELDS if name not in fields.read),
        kept=tuple(name for name in KEPT_FIELDS if name in fields.read),
    )


@dataclass(frozen=True)
class Target:
    """The object a batch of events is written to."""

    object_type: ObjectType
    object_id: str  # the project id for project_logs
    project_id: str
    org_id: str


def now_iso() -> str:
    """Now as ISO-8601 UTC with milliseconds and ``Z``, the form the real API gives rows."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def deep_merge(base: dict[str, Any], update: dict[str, Any], stop: set[tuple[str, ...]], at: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Merge ``update`` into ``base`` in place; paths in ``stop`` are replaced, not merged."""
    for key, value in update.items():
        path = (*at, key)
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and path not in stop:
            deep_merge(current, value, stop, path)
        else:
            base[key] = copy.deepcopy(value)


def _array_delete(row: dict[str, Any], instructions: list[dict[str, Any]]) -> None:
    for item in instructions:
        node: Any = row
        for part in item["path"][:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        last = item["path"][-1] if item["path"] else None
        if isinstance(node, dict) and isinstance(node.get(last), list):
            node[last] = [v for v in node[last] if v not in item["delete"]]


def _union(old: list[Any], new: list[Any]) -> list[Any]:
    seen: set[bytes] = set()
    joined = []
    for item in (*old, *new):
        key = jsonvalues.dumps(item)
        if key not in seen:
            seen.add(key)
            joined.append(item)
    return joined


def _resolve(layout: RowLayout, event: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The fields an event could set (data and identity) of the row after applying ``event``."""
    fields = {k: v for k, v in event.items() if k not in layout.control and k != AUDIT}
    if event.get("_is_merge") and previous is not None:
        merged = {k: v for k, v in previous.items() if k in layout.insertable or k in layout.data}
        stop = {tuple(p) for p in event.get("_merge_paths") or ()}
        fields = {k: v for k, v in fields.items() if k not in MERGE_KEEPS}
        for name in SET_UNION_FIELDS:
            old, new = merged.get(name), fields.get(name)
            if isinstance(old, list) and isinstance(new, list) and (name,) not in stop:
                fields[name] = _union(old, new)
        deep_merge(merged, fields, stop)
        fields = merged
    if event.get("_array_delete"):
        _array_delete(fields, event["_array_delete"])
    for name in layout.kept:
        if name not in fields and previous is not None and name in previous:
            fields[name] = previous[name]
    return fields


def stored_row(target: Target, fields: dict[str, Any], xact: int, seq: int) -> dict[str, Any]:
    layout = row_layout(target.object_type)
    span_id = fields.get("span_id") or str(uuid.uuid4())
    parents = fields.get("span_parents") or None
    row: dict[str, Any] = {
        "id": fields["id"],
        "_xact_id": str(xact),
        "_pagination_key": pagination_key(seq),
        "created": canonical_time(fields["created"]) if fields.get("created") else now_iso(),
        "org_id": target.org_id,
        "project_id": target.project_id,
        **layout.fixed,
        layout.object_id_field: target.object_id,
        "span_id": span_id,
        "root_span_id": fields.get("root_span_id") or (span_id if parents is None else str(uuid.uuid4())),
        "span_parents": parents,
        "is_root": parents is None,
    }
    for name in layout.unlisted:
        del row[name]
    for key, value in fields.items():
        if key in layout.data or key in layout.kept:
            row[key] = value
    if target.object_type == "dataset":
        # The official SDKs read every dataset row's "expected" (the Python SDK's fetch fails on
        # a row without it): a record never given one reads back with null.
        row.setdefault("expected", None)
    return row


def latest_row(conn: sqlite3.Connection, target: Target, row_id: str) -> dict[str, Any] | None:
    """The row ``row_id`` of ``target`` as it is now; None when deleted or never written."""
    found = conn.execute(
        "SELECT deleted, data FROM rows WHERE object_type = ? AND object_id = ? AND id = ?"
        " ORDER BY xact_id DESC LIMIT 1",
        (target.object_type, target.object_id, row_id),
    ).fetchone()
    if found is None or found[0]:
        return None
    latest: dict[str, Any] = jsonvalues.loads(found[1])
    return latest


def _commented(layout: RowLayout, previous: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The row ``previous`` with ``entry`` among its comments (in place of one of its id)."""
    fields = _resolve(layout, {"id": previous["id"], "_is_merge": True}, previous)
    comments = list(fields.get("comments") or [])
    same = [i for i, e in enumerate(comments) if isinstance(e, dict) and e.get("id") == entry["id"]]
    if same:
        comments[same[0]] = entry
    else:
        comments.append(entry)
    return {**fields, "comments": comments, "id": previous["id"]}


def _under_parent(fields: dict[str, Any], parent: dict[str, Any] | None) -> None:
    """Make a new row naming ``_parent_id`` a sub-span of that row (the spec's deprecated way
    to nest spans), unless it names its parents itself; a parent the object lacks leaves it a
    root. A parent written earlier in the same request gets its span ids now."""
    if parent is None or fields.get("span_parents"):
        return
    if not parent.get("span_id"):
        parent["span_id"] = str(uuid.uuid4())
    if not parent.get("root_span_id"):
        parent["root_span_id"] = str(uuid.uuid4()) if parent.get("span_parents") else parent["span_id"]
    fields["span_parents"] = [parent["span_id"]]
    fields["root_span_id"] = parent["root_span_id"]


def write_events(conn: sqlite3.Connection, batches: Iterable[tuple[Target, list[dict[str, Any]]]]) -> list[list[str]]:  # fmt: skip
    """Write every batch under one new transaction id; return the row ids per batch.

    Call inside a write transaction (``Store.write``). Events must be validated already.
    """
    xact = next_xact_id(conn)
    pending: dict[tuple[Target, str], dict[str, Any] | None] = {}  # None = delete
    row_ids: list[list[str]] = []
    for target, events in batches:
        layout = row_layout(target.object_type)
        ids = []
        for event in events:
            row_id = event.get("id") or str(uuid.uuid4())
            key = (target, row_id)
            if event.get("_object_delete"):
                ids.append(row_id)
                pending[key] = None
                continue
            previous = pending[key] if key in pending else latest_row(conn, target, row_id)
            if COMMENT in event:
                ids.append(event[COMMENT]["id"])
                if previous is not None and "comments" in layout.kept:
                    pending[key] = _commented(layout, previous, event[COMMENT])
                continue
            ids.append(row_id)
            resolved = pending[key] = {**_resolve(layout, event, previous), "id": row_id}
            if event.get("_parent_id") and not (event.get("_is_merge") and previous is not None):
                parent_key = (target, event["_parent_id"])
                parent = pending.get(parent_key) if parent_key in pending else latest_row(conn, *parent_key)
                _under_parent(resolved, parent)
            if event.get(AUDIT) is not None and "audit_data" in layout.kept:
                update = {k: v for k, v in event.items() if k in layout.data}
                entry = {"created": now_iso(), **event[AUDIT], "update": update}
                resolved["audit_data"] = [*(resolved.get("audit_data") or []), entry]
        row_ids.append(ids)
    seq = next_row_seq(conn)
    records = []
    for (target, row_id), fields in pending.items():
        if fields is None:
            data = orjson.dumps({"id": row_id, "_xact_id": str(xact), "_object_delete": True})
            records.append((seq, target.object_type, target.object_id, row_id, xact, 1, None, data.decode()))
        else:
            row = stored_row(target, fields, xact, seq)
            text = jsonvalues.dumps(row).decode()
            records.append(
                (seq, target.object_type, target.object_id, row_id, xact, 0, row["root_span_id"], text)
            )
        seq += 1
    insert_records(conn, records)
    return row_ids


def insert_records(conn: sqlite3.Connection, records: list[tuple[Any, ...]]) -> None:
    """Append row versions ``(seq, object_type, object_id, id, xact_id, deleted, root_span_id, data)``,
    marking each id's previous latest version as superseded by the new one."""
    conn.executemany(
        "UPDATE rows SET superseded = ? WHERE object_type = ? AND object_id = ? AND id = ?"
        " AND superseded IS NULL AND xact_id < ?",
        [(r[4], r[1], r[2], r[3], r[4]) for r in records],
    )
    conn.executemany(
        "INSERT INTO rows (seq, object_type, object_id, id, xact_id, deleted, root_span_id, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        records,
    )
