"""Turn a row as read back (from files or ``/btql``) into an event the insert endpoint accepts.

The destination object is named by the insert path (``/v1/<type>/<id>/insert``), so an event
carries no object keys at all: the source's ``project_id`` / ``log_id`` / ``dataset_id`` /
``experiment_id`` are dropped with the read-only fields, and the server fills in the
destination's. ``id``, ``span_id``, ``root_span_id``, ``span_parents`` and ``created`` are
kept, so traces and timestamps survive and a re-sent event overwrites instead of doubling.

Write-control fields (``_object_delete``, ``_is_merge``, ...) are never copied from data: a
row read back is a whole row, and a stray ``_object_delete`` in a backup must not turn a
restore into a delete. Where a row has no ``origin``, it gets one pointing at the row it was
copied from (provenance; ``verify`` ignores it because it is a destination field). An origin
it has (an eval row's dataset record) that names an object the load copies names the copy.

A row's ``comments`` (what feedback attached to it) are no field of an event: the insert
endpoints take none. They travel as the official SDKs' ``log_feedback`` sends a comment, as
``/logs3`` rows of their own naming the row in ``origin`` (:func:`comment_rows`), each with its
entry's id, so a comment sent again replaces itself instead of doubling.

An event nested deeper than the service accepts (:data:`MAX_NESTING_DEPTH`) is found here,
before any request (:func:`encode_checked`), so it is reported with its file and line (or
skipped with ``--on-error skip``) rather than failing a whole batch with a 400, or the
encoder with a RecursionError.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.common import jsoncodec
from pipeline.common.rows import (
    ALL_OBJECT_KEY_FIELDS,
    CONTROL_FIELDS,
    OBJECT_KEY_FIELDS,
    READ_ONLY_FIELDS,
    ObjectType,
)

#: Row fields the REST insert does not take (its events do not list them) that the official
#: SDKs write through ``/logs3``: an ``Eval``'s ``classifications``, logged on each root span
#: as a merge. A copy writes them the same way, after the row (:func:`logs3_merges`).
LOGS3_FIELDS: Final = ("classifications",)
_DROPPED = READ_ONLY_FIELDS | ALL_OBJECT_KEY_FIELDS | CONTROL_FIELDS | frozenset(LOGS3_FIELDS)


@dataclass(frozen=True)
class SourceObject:
    """The object rows were read from; ``id`` may be unknown (a bare file), then the row's own
    object key is used for ``origin``."""

    object_type: ObjectType
    id: str | None = None
    #: The objects the load copies, source id -> destination id: an ``origin`` naming one is
    #: pointed at its copy.
    copies: Mapping[str, str] = field(default_factory=dict)


def source_object_id(row: dict[str, Any], source: SourceObject) -> str | None:
    """The id of the object ``row`` came from: the known one, else the row's own object key."""
    if source.id is not None:
        return source.id
    key = OBJECT_KEY_FIELDS[source.object_type][-1]
    value = row.get("project_id" if source.object_type == "project_logs" else key)
    return value if isinstance(value, str) else None


def to_event(row: dict[str, Any], source: SourceObject) -> dict[str, Any]:
    """The insert event for ``row`` (a fresh dict; ``row`` is not modified)."""
    event = {k: v for k, v in row.items() if k not in _DROPPED}
    origin_of = event.get("origin")
    if isinstance(origin_of, dict):
        named = origin_of.get("object_id")
        if isinstance(named, str) and named in source.copies:  # any other value: the server's to judge
            event["origin"] = {**origin_of, "object_id": source.copies[named]}
    if event.get("origin") is None and "id" in row:
        object_id = source_object_id(row, source)
        if object_id is not None:
            origin: dict[str, Any] = {
                "object_type": source.object_type,
                "object_id": object_id,
                "id": row["id"],
            }
            if row.get("_xact_id") is not None:
                origin["_xact_id"] = str(row["_xact_id"])
            if row.get("created") is not None:
                origin["created"] = row["created"]
            event["origin"] = origin
        else:
            event.pop("origin", None)
    return event


def logs3_merges(row: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The ``/logs3`` merge row giving ``row``'s copy its :data:`LOGS3_FIELDS` (without the
    object ids, which the insert adds), as the SDKs log them; none when it has none."""
    fields = {name: row[name] for name in LOGS3_FIELDS if row.get(name) is not None}
    if not fields or not isinstance(row.get("id"), str):
        return ()
    return ({"id": row["id"], "_is_merge": True, **fields},)


def comment_rows(row: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The ``/logs3`` comment rows that give ``row``'s copy the comments ``row`` has (without
    the object ids, which the insert adds): ``{id, created, origin: {id}, comment,
    _audit_source, _audit_metadata}``, as ``log_feedback`` writes them. An entry without an id
    gets one from its row and content, the same each time."""
    entries, row_id = row.get("comments"), row.get("id")
    if not entries or not isinstance(entries, list) or not isinstance(row_id, str):
        return ()
    rows = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("comment"), dict):
            continue
        entry_id = entry.get("id")
        if not isinstance(entry_id, str) or not entry_id:
            entry_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{row_id}/{jsoncodec.canonical(entry).decode()}"))
        comment: dict[str, Any] = {"id": entry_id, "origin": {"id": row_id}, "comment": entry["comment"]}
        if isinstance(entry.get("created"), str):
            comment["created"] = entry["created"]
        if entry.get("source") is not None:
            comment["_audit_source"] = entry["source"]
        if entry.get("metadata") is not None:
            comment["_audit_metadata"] = entry["metadata"]
        rows.append(comment)
    return tuple(rows)


def encode_event(event: dict[str, Any]) -> bytes:
    """Encode an event once; request bodies are built by joining these bytes."""
    return jsoncodec.dumps(event)


#: Levels of objects and arrays one event may nest, the event itself being the first: the
#: service answers 400 to a row nested deeper.
MAX_NESTING_DEPTH: Final = 200

_STRING: Final = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE: Final = bytes(c for c in range(256) if c not in b'[]{}"')
_SQUARE: Final = bytes.maketrans(b"{}", b"[]")  # in valid JSON only the depth of a bracket matters


def nests_deeper_than(data: bytes, levels: int) -> bool:
    """Whether encoded JSON ``data`` nests more than ``levels`` levels of objects and arrays.

    At C speed: a row with fewer brackets than ``levels`` cannot nest that deep (nearly every
    row, two counts); otherwise string contents are dropped, the brackets kept, and innermost
    pairs peeled off one level a pass.
    """
    if data.count(b"{") + data.count(b"[") <= levels:
        return False
    if b"\\" in data:  # escaped backslashes, then escaped quotes: neither ends a string
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _STRING.sub(b"", data.translate(_SQUARE, delete=_NOT_STRUCTURE))
    for _ in range(levels):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def encode_checked(event: dict[str, Any]) -> tuple[bytes, str | None]:
    """The encoded event and None, or, for an event the service would refuse for its depth,
    its encoding (empty when it is too deep even to encode) and why."""
    too_deep = f"nests deeper than {MAX_NESTING_DEPTH} levels of objects and arrays (the service's limit)"
    try:
        data = encode_event(event)
    except RecursionError:
        return b"", too_deep
    return data, too_deep if nests_deeper_than(data, MAX_NESTING_DEPTH) else None
