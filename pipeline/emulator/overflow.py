"""The ``/logs3`` overflow path: a batch over the request limit, uploaded beside the API.

The official SDKs send a batch bigger than ``logs3_payload_max_bytes`` (``GET /version``) in
three steps, and drop it when the first one fails:

1. ``POST /logs3/overflow`` ``{content_type, size_bytes, rows: [{object_ids, is_delete,
   has_comment?, input_row: {byte_size}}]}`` answers ``{method: "PUT", signedUrl, headers,
   key}``;
2. the client ``PUT``\\ s the payload (the very ``{"rows": [...], "api_version": 2}`` body it
   would have posted) to ``signedUrl``, without the API key;
3. ``POST /logs3`` ``{"rows": {"type": "logs3_overflow", "key", "size_bytes"?}}`` applies it.

Where the real service hands out an object-store URL, the emulator serves the upload
itself at ``/_emulator/overflow/<token>``: the token (random, kept only as a hash) is the
credential, so the route needs no API key. An upload is refused when its size is not the
declared one, when it comes twice, or after :data:`TTL_SECONDS`; the payload is kept in the
emulator's database (``overflow_uploads``) until the same user applies it, which writes
it exactly as a ``/logs3`` batch. Applying a key again (a retry after a lost answer)
answers the same row ids without writing twice.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio.to_thread
import orjson
from aiohttp import web

from pipeline.emulator import inserts, jsonvalues
from pipeline.emulator.auth import Principal
from pipeline.emulator.objects import NotFound, resolve_row_object
from pipeline.emulator.rest import json_body, json_response, principal, store
from pipeline.emulator.store import Store
from pipeline.emulator.validate import BadRequest, fail

#: Where uploads go; the token follows.
UPLOAD_PREFIX: Final = "/_emulator/overflow/"
#: How long an upload URL, and the payload it receives, stay valid.
TTL_SECONDS: Final = 3600.0
#: The largest payload accepted through the overflow path.
MAX_OVERFLOW_BYTES: Final = 256 * 1024 * 1024
_CONTENT_TYPE: Final = "application/json"


class UploadRefused(Exception):
    """An upload the signed URL does not allow; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class OverflowRequest:
    """A checked ``POST /logs3/overflow`` body."""

    size_bytes: int
    row_count: int
    targets: frozenset[tuple[str, str]]  # (object_type, object_id) the rows name


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(where, "expected a positive integer")
    return value


def parse_request(body: Any) -> OverflowRequest:
    if not isinstance(body, dict):
        raise BadRequest("request body: expected object")
    if body.get("content_type") != _CONTENT_TYPE:
        raise fail("content_type", f"expected {_CONTENT_TYPE!r}")
    size = _positive_int(body.get("size_bytes"), "size_bytes")
    if size > MAX_OVERFLOW_BYTES:
        raise fail("size_bytes", f"at most {MAX_OVERFLOW_BYTES} bytes")
    rows = body.get("rows")
    if not isinstance(rows, list) or not rows:
        raise fail("rows", "expected a non-empty array")
    targets: set[tuple[str, str]] = set()
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        if not isinstance(row, dict) or not isinstance(row.get("object_ids"), dict):
            raise fail(where, "expected {object_ids, is_delete, input_row: {byte_size}}")
        flags = (row.get("is_delete", False), row.get("has_comment", False))  # JS leaves has_comment out
        if not all(isinstance(flag, bool) for flag in flags):
            raise fail(where, "is_delete and has_comment must be booleans")
        input_row = row.get("input_row")
        if not isinstance(input_row, dict):
            raise fail(f"{where}.input_row", "expected {byte_size}")
        _positive_int(input_row.get("byte_size"), f"{where}.input_row.byte_size")
        targets.add(inserts.logs3_target(row["object_ids"], f"{where}.object_ids"))
    return OverflowRequest(size, len(rows), frozenset(targets))


def create_upload(conn: sqlite3.Connection, request: OverflowRequest, user_id: str, org_ids: Sequence[str], now: float) -> tuple[str, str]:  # fmt: skip
    """Check the caller may write every object the rows name; return ``(key, token)``."""
    for object_type, object_id in sorted(request.targets):
        resolve_row_object(conn, object_type, object_id, org_ids)
    conn.execute("DELETE FROM overflow_uploads WHERE expires < ?", (now,))
    key, token = str(uuid.uuid4()), secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO overflow_uploads (key, token_hash, user_id, size_bytes, row_count, expires)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (key, _hash(token), user_id, request.size_bytes, request.row_count, now + TTL_SECONDS),
    )
    return key, token


def expected_size(conn: sqlite3.Connection, token: str, now: float) -> int:
    """The size the upload at ``token`` must have; refused when the URL is unknown, expired
    or already used."""
    row = conn.execute(
        "SELECT size_bytes, expires, payload IS NOT NULL FROM overflow_uploads WHERE token_hash = ?",
        (_hash(token),),
    ).fetchone()
    if row is None or row[1] < now:
        raise UploadRefused(403, "upload URL is unknown or expired")
    if row[2]:
        raise UploadRefused(409, "this upload URL was already used")
    return int(row[0])


def save_payload(conn: sqlite3.Connection, token: str, payload: bytes, now: float) -> None:
    size = expected_size(conn, token, now)
    if len(payload) != size:
        raise UploadRefused(400, f"upload is {len(payload)} bytes, {size} were declared")
    conn.execute("UPDATE overflow_uploads SET payload = ? WHERE token_hash = ?", (payload, _hash(token)))


@dataclass(frozen=True)
class Stored:
    """An uploaded payload as ``/logs3`` finds it by key."""

    payload: bytes
    row_count: int
    row_ids: list[str] | None  # set once applied


def load(conn: sqlite3.Connection, key: str, size_bytes: int | None, user_id: str, now: float) -> Stored:
    row = conn.execute(
        "SELECT size_bytes, row_count, expires, payload, row_ids FROM overflow_uploads WHERE key = ? AND user_id = ?",
        (key, user_id),
    ).fetchone()
    if row is None or row[2] < now:
        raise NotFound(f"overflow upload {key} not found (unknown, expired, or another user's)")
    if row[3] is None:
        raise fail("rows.key", "nothing was uploaded for this key yet")
    if size_bytes is not None and size_bytes != row[0]:
        raise fail("rows.size_bytes", f"{size_bytes} does not match the upload's {row[0]} bytes")
    return Stored(bytes(row[3]), int(row[1]), None if row[4] is None else orjson.loads(row[4]))


def _decode(stored: Stored) -> list[inserts.Batch]:
    """The uploaded body's batches, validated as any ``/logs3`` body."""
    try:
        body = jsonvalues.loads(stored.payload)
    except ValueError as exc:
        raise BadRequest(f"uploaded payload: invalid JSON ({exc})") from None
    batches = inserts.logs3_insert(body)
    if sum(len(events) for _, _, events in batches) != stored.row_count:
        raise BadRequest(f"uploaded payload: expected {stored.row_count} rows as declared")
    return batches


def _apply(conn: sqlite3.Connection, key: str, batches: list[inserts.Batch], who: Principal) -> list[str]:
    done = conn.execute("SELECT row_ids FROM overflow_uploads WHERE key = ?", (key,)).fetchone()
    if done is not None and done[0] is not None:  # applied meanwhile by a concurrent retry
        applied: list[str] = orjson.loads(done[0])
        return applied
    row_ids = [i for ids in inserts.write_batches(conn, batches, who.org_ids, who.user_id) for i in ids]
    conn.execute(
        "UPDATE overflow_uploads SET row_ids = ? WHERE key = ?", (orjson.dumps(row_ids).decode(), key)
    )
    return row_ids


async def apply_reference(db: Store, reference: inserts.OverflowReference, who: Principal) -> list[str]:
    """Write the batch uploaded under ``reference.key``; return its row ids."""
    now = time.time()
    stored = await db.read(lambda c: load(c, reference.key, reference.size_bytes, who.user_id, now))
    if stored.row_ids is not None:
        return stored.row_ids
    batches = await anyio.to_thread.run_sync(_decode, stored)
    return await db.write(lambda c: _apply(c, reference.key, batches, who))


# -- routes --------------------------------------------------------------------------------


async def request_upload(request: web.Request, params: dict[str, str]) -> web.Response:
    """``POST /logs3/overflow``: where to put a batch too big for ``/logs3``."""
    parsed = parse_request(await json_body(request))
    who = principal(request)
    now = time.time()
    key, token = await store(request).write(lambda c: create_upload(c, parsed, who.user_id, who.org_ids, now))
    url = f"{request.scheme}://{request.host}{UPLOAD_PREFIX}{token}"
    return json_response(
        {"method": "PUT", "signedUrl": url, "headers": {"Content-Type": _CONTENT_TYPE}, "key": key}
    )


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body, or a 400 as soon as it grows past ``limit`` (the request size cap of the
    API routes does not apply here: overflow payloads are over it by definition)."""
    if request.content_length is not None and request.content_length != limit:
        raise UploadRefused(400, f"upload is {request.content_length} bytes, {limit} were declared")
    parts: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise UploadRefused(400, f"upload is over the {limit} bytes declared")
        parts.append(chunk)
    return b"".join(parts)


async def receive_upload(request: web.Request, params: dict[str, str]) -> web.Response:
    """``PUT /_emulator/overflow/<token>``: the signed URL (no API key: the token is the key)."""
    token, db, now = params["token"], store(request), time.time()
    try:
        size = await db.read(lambda c: expected_size(c, token, now))
        payload = await _read_at_most(request, size)
        await db.write(lambda c: save_payload(c, token, payload, now))
    except UploadRefused as exc:
        raise _refusal(exc) from None
    return web.Response(status=200)


def _refusal(exc: UploadRefused) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest, 403: web.HTTPForbidden, 409: web.HTTPConflict,
    }  # fmt: skip
    return kinds[exc.status](text=str(exc))
