"""Running reads: one ``/btql`` page or one legacy fetch page, inside one read snapshot.

Request bodies are checked here, objects are resolved against the caller's orgs, the
query is compiled by ``query.py`` and the page is returned as the stored JSON texts plus
the next cursor. Rendering to bytes happens in :func:`render_json` / :func:`render_jsonl`
by joining those texts (the hot path of every export: keep it free of per-row work).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from pipeline.emulator.objects import NotFound, resolve_row_object
from pipeline.emulator.profiles import ReadPolicy, check_profile
from pipeline.emulator.query import (
    Compiled,
    QueryError,
    Source,
    Visibility,
    check_query,
    compile_history,
    compile_query,
    decode_cursor,
    decode_history_cursor,
    encode_cursor,
    encode_history_cursor,
    paging_direction,
    parse_limit,
    parse_source,
    xact_number,
)
from pipeline.emulator.scanlimit import budget, enforced
from pipeline.emulator.store import current_xact_id
from pipeline.querylang.ast import ObjectType

FORMATS: Final = ("json", "jsonl")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: Body fields of ``/btql`` beside ``query``, as the official clients send them, with the
#: check each gets (null is always accepted) and what it expects. Those without a meaning
#: here are accepted and ignored: the emulator is always realtime (``brainstore_realtime``)
#: and has one store (``use_columnstore``, ``use_brainstore``).
BTQL_FIELDS: Final[dict[str, tuple[Callable[[Any], bool], str]]] = {
    "fmt": (lambda v: v in FORMATS, f"{' or '.join(FORMATS)} (parquet is not supported)"),
    "version": (lambda v: True, "a transaction id"),  # checked by parse_version
    "cursor": (_is_text, "a cursor string"),
    "query_timeout_seconds": (lambda v: _is_number(v) and v > 0, "a number of seconds above 0"),
    "use_columnstore": (_is_bool, "a boolean"),
    "use_brainstore": (_is_bool, "a boolean"),
    "brainstore_realtime": (_is_bool, "a boolean"),
    "audit_log": (_is_bool, "a boolean"),
    "query_source": (_is_text, "a string"),
    "client_version": (_is_text, "a string"),
    "api_version": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "tz_offset": (_is_number, "a number of minutes"),
}
FETCH_FIELDS: Final = frozenset({"limit", "cursor", "version", "max_xact_id", "max_root_span_id"})


@dataclass(frozen=True)
class Page:
    texts: list[bytes]  # one serialized JSON row each
    cursor: str | None
    columns: tuple[str, ...] | None


def parse_version(value: Any, where: str = "version") -> int | None:
    return None if value is None else parse_xact(value, where)


def parse_xact(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise QueryError(f"{where}: expected a transaction id (decimal string or integer)")
    try:
        return xact_number(value)
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


def _check_body(body: Any) -> dict[str, Any]:
    """The body of a ``POST /btql``: an object with a ``query`` and the known fields, each
    of the type it takes (a 400 naming the field otherwise)."""
    if not isinstance(body, dict):
        raise QueryError("request body: expected an object with a 'query'")
    for name, value in body.items():
        if name == "query":
            continue
        if name not in BTQL_FIELDS:
            raise QueryError(f"request body: unknown field {name!r}")
        check, expected = BTQL_FIELDS[name]
        if value is not None and not check(value):
            raise QueryError(f"{name}: expected {expected}, got {value!r}")
    return body


def btql_page(conn: sqlite3.Connection, body: Any, org_ids: Sequence[str], policy: ReadPolicy) -> Page:  # fmt: skip
    """One page of a ``POST /btql`` request (body already parsed from JSON).

    The cursor may come inside the query (the SDKs; ``cursor:`` in BTQL text) or beside it
    (older callers); it pins the version it was made under."""
    body = _check_body(body)
    query = check_query(body.get("query"))
    source = parse_source(query)
    limit = parse_limit(query.get("limit"), "query.limit")
    version = parse_version(body.get("version"))
    check_profile(policy, query, pinned=version is not None)
    cursor = body.get("cursor") or query.get("cursor")
    after_seq = None
    if cursor is not None:
        if not isinstance(cursor, str):
            raise QueryError("cursor: expected a string")
        if paging_direction(query.get("sort")) is None:
            raise QueryError(
                "cursor: cursors page in the server's own order and need no sort other than"
                " _pagination_key; drop 'sort'"
            )
        version, after_seq = decode_cursor(cursor)
    _check_sources(conn, source, org_ids)
    if version is None:
        version = current_xact_id(conn)
    limits = budget(policy.query_timeout_rows, body.get("query_timeout_seconds"))
    seen = Visibility(source, version, counted=limits.rows is not None)
    compiled = compile_query(query, seen, after_seq, limit)
    with enforced(conn, limits):
        return _run(conn, compiled, version)


def fetch_page(conn: sqlite3.Connection, object_type: ObjectType, object_id: str, params: dict[str, Any], org_ids: Sequence[str]) -> Page:  # fmt: skip
    """One page of the legacy ``/v1/{type}/{id}/fetch``: the version history, newest first,
    ``limit`` traces a page (see ``query.compile_history``). It continues after the opaque
    ``cursor`` of the previous page or, the deprecated form, below the pair
    ``max_xact_id`` + ``max_root_span_id`` (the earliest pair of the previous page).

    A page holds each row once, in its newest version there: the spec lets a *later* page
    repeat a row in an older version, and the official Python SDK's ``dataset.fetch()`` joins
    the pages as they come, so a row updated once would otherwise be read twice."""
    unknown = sorted(set(params) - FETCH_FIELDS)
    if unknown:
        raise QueryError(f"request body: unknown field {unknown[0]!r}")
    # the spec's FetchLimit: from 0, no maximum; traces beyond the cap come on the next page
    limit = parse_limit(_int_param(params.get("limit"), "limit"), low=0, clamp=True)
    version = parse_version(params.get("version"))
    before = None
    max_xact, max_root = params.get("max_xact_id"), params.get("max_root_span_id")
    if params.get("cursor") is not None:
        if not isinstance(params["cursor"], str):
            raise QueryError("cursor: expected a string")
        version, before = decode_history_cursor(params["cursor"])
    elif max_xact is not None or max_root is not None:
        if max_xact is None or not isinstance(max_root, str):
            raise QueryError(
                "max_xact_id, max_root_span_id: pass both (together they form the old cursor: the"
                " earliest _xact_id and root_span_id of the previous page)"
            )
        before = (parse_xact(max_xact, "max_xact_id"), max_root)
    resolve_row_object(conn, object_type, object_id, org_ids)
    if limit == 0:
        return Page([], None, None)
    if version is None:
        version = current_xact_id(conn)
    compiled = compile_history(Source(object_type, (object_id,), "spans"), version, before, limit)
    rows = conn.execute(compiled.sql, compiled.params).fetchall()
    cursor = encode_history_cursor(version, rows[-1][2], rows[-1][3]) if rows else None
    newest: list[bytes] = []
    seen: set[str] = set()
    for _, text, _, _, row_id in rows:  # newest first
        if row_id not in seen:
            seen.add(row_id)
            newest.append(text)
    return Page(newest, cursor, None)


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
