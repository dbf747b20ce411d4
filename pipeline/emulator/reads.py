"""Running reads: one ``/btql`` page or one legacy fetch page, inside one read snapshot.

Request bodies are checked here, objects are resolved against the caller's orgs, the
query is compiled by ``query.py`` and the page is returned as the stored JSON texts plus
the next cursor. Rendering to bytes happens in :func:`render_json` / :func:`render_jsonl`
by joining those texts (the hot path of every export: keep it free of per-row work).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from pipeline.emulator.objects import NotFound, resolve_row_object
from pipeline.emulator.query import (
    Compiled,
    QueryError,
    Source,
    check_query,
    compile_history,
    compile_query,
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_source,
)
from pipeline.emulator.store import current_xact_id
from pipeline.querylang.ast import ObjectType

BTQL_FIELDS: Final = frozenset(
    {"query", "fmt", "version", "cursor", "use_columnstore", "use_brainstore", "brainstore_realtime",
     "query_source", "tz_offset", "audit_log"}
)  # fmt: skip
FETCH_FIELDS: Final = frozenset({"limit", "cursor", "version", "max_xact_id", "max_root_span_id"})
FORMATS: Final = ("json", "jsonl")


@dataclass(frozen=True)
class Page:
    texts: list[bytes]  # one serialized JSON row each
    cursor: str | None
    columns: tuple[str, ...] | None


def parse_version(value: Any, where: str = "version") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise QueryError(f"{where}: expected a transaction id (decimal string or integer)")
    try:
        return int(value)
    except ValueError:
        raise QueryError(f"{where}: {value!r} is not a transaction id") from None


def _check_sources(conn: sqlite3.Connection, source: Source, org_ids: Sequence[str]) -> None:
    """Unknown ids and ids of another org are the same 400 (same message), so a caller
    cannot tell whether an id exists elsewhere."""
    for object_id in source.object_ids:
        try:
            resolve_row_object(conn, source.object_type, object_id, org_ids)
        except NotFound:
            kind = "project" if source.object_type == "project_logs" else source.object_type
            raise QueryError(f"query.from: unknown {kind} id {object_id!r}") from None


def _run(conn: sqlite3.Connection, compiled: Compiled, version: int) -> Page:
    rows = conn.execute(compiled.sql, compiled.params).fetchall()
    cursor = encode_cursor(version, rows[-1][0]) if rows and compiled.paged else None
    return Page([r[1] for r in rows], cursor, compiled.columns)


def btql_page(conn: sqlite3.Connection, body: Any, org_ids: Sequence[str]) -> Page:
    """One page of a ``POST /btql`` request (body already parsed from JSON)."""
    if not isinstance(body, dict):
        raise QueryError("request body: expected an object with a 'query'")
    unknown = sorted(set(body) - BTQL_FIELDS)
    if unknown:
        raise QueryError(f"request body: unknown field {unknown[0]!r}")
    query = check_query(body.get("query"))
    source = parse_source(query)
    limit = parse_limit(query.get("limit"), "query.limit")
    version = parse_version(body.get("version"))
    cursor = body.get("cursor") or query.get("cursor")
    after_seq = None
    if cursor is not None:
        if not isinstance(cursor, str):
            raise QueryError("cursor: expected a string")
        if query.get("sort") is not None:
            raise QueryError("cursor: cursors page in the server's own order and need no sort; drop 'sort'")
        version, after_seq = decode_cursor(cursor)
    _check_sources(conn, source, org_ids)
    if version is None:
        version = current_xact_id(conn)
    return _run(conn, compile_query(query, source, version, after_seq, limit), version)


def fetch_page(conn: sqlite3.Connection, object_type: ObjectType, object_id: str, params: dict[str, Any], org_ids: Sequence[str]) -> Page:  # fmt: skip
    """One page of the legacy ``/v1/{type}/{id}/fetch`` (version history, newest first)."""
    unknown = sorted(set(params) - FETCH_FIELDS)
    if unknown:
        raise QueryError(f"request body: unknown field {unknown[0]!r}")
    limit = parse_limit(_int_param(params.get("limit"), "limit"))
    version = parse_version(params.get("version")) or parse_version(params.get("max_xact_id"), "max_xact_id")
    before_seq = None
    if params.get("cursor") is not None:
        if not isinstance(params["cursor"], str):
            raise QueryError("cursor: expected a string")
        version, before_seq = decode_cursor(params["cursor"])
    resolve_row_object(conn, object_type, object_id, org_ids)
    if version is None:
        version = current_xact_id(conn)
    return _run(conn, compile_history(Source(object_type, (object_id,), "spans"), version, before_seq, limit), version)  # fmt: skip


def _int_param(value: Any, where: str) -> Any:
    """Query-string limits arrive as text; bodies carry integers."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise QueryError(f"{where}: expected an integer") from None
    return value


def render_jsonl(page: Page) -> bytes:
    return b"\n".join(page.texts) + b"\n" if page.texts else b""


def render_json(page: Page, key: str = "data") -> bytes:
    """``{"<key>": [...], "schema": ..., "cursor": ...}`` built around the stored texts."""
    names = page.columns if page.columns is not None else ()
    schema = {"type": "array", "items": {"type": "object", "properties": {n: {} for n in names}}}
    tail = orjson.dumps({"schema": schema, "cursor": page.cursor})
    return b'{"' + key.encode() + b'":[' + b",".join(page.texts) + b"]," + tail[1:]
