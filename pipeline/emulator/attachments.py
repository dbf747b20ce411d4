"""Attachments: the ``/attachment`` routes and the signed URLs the emulator serves itself.

A row field may hold ``{"type": "braintrust_attachment", "key", "filename", "content_type"}``;
the bytes live beside the rows, uploaded and read the way the official SDKs do it:

* ``POST /attachment {key, filename, content_type, org_id}`` -> ``{signedUrl, headers}``;
* ``PUT signedUrl`` with the bytes (no API key: the URL's token is the credential);
* ``POST /attachment/status {key, org_id, status: {upload_status}}``;
* ``GET /attachment?key&filename&content_type&org_id`` -> ``{downloadUrl, status}``, and
  ``GET downloadUrl`` (no API key) streams the bytes back.

Where the real service hands out object-store URLs, the emulator serves
``/_emulator/attachment/<token>`` itself. A token is random, kept only as a hash, names one
attachment and one direction (upload or download), and expires after :data:`TTL_SECONDS`.
Bytes are stored in SQLite as chunks of at most :data:`CHUNK_BYTES` (``attachment_chunks``),
written as they arrive and read back one at a time, so a large attachment is never whole in
memory; a new ``PUT`` replaces what an earlier one stored (a retried upload). Attachments
belong to an org: a key of another org is not found, as any object of another org.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from functools import partial
from typing import Any, Final

import orjson
from aiohttp import web

from pipeline.emulator import faults
from pipeline.emulator.auth import Principal
from pipeline.emulator.objects import NotFound
from pipeline.emulator.rest import json_body, json_response, principal, store
from pipeline.emulator.validate import BadRequest, fail

#: Where signed URLs point; the token follows.
URL_PREFIX: Final = "/_emulator/attachment/"
#: How long a signed URL stays valid.
TTL_SECONDS: Final = 3600.0
#: The largest chunk stored in one row (and held in memory while an upload arrives).
CHUNK_BYTES: Final = 1 << 20
#: The largest attachment accepted.
MAX_ATTACHMENT_BYTES: Final = 1 << 32
_STATUSES: Final = frozenset({"uploading", "done", "error"})


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise fail(name, "expected a non-empty string")
    return value


def _org(who: Principal, org_id: Any) -> str:
    """The org a request names (the caller's first when empty, as an SDK without a logged-in
    org sends); one the caller is not a member of is not found."""
    if org_id in (None, ""):
        member = who.default_org()
        if member is None:
            raise NotFound("no org")
        return member.org_id
    if not isinstance(org_id, str) or org_id not in who.org_ids:
        raise NotFound(f"org {org_id} not found")
    return org_id


def _sign(conn: sqlite3.Connection, org_id: str, key: str, method: str, now: float) -> str:
    conn.execute("DELETE FROM attachment_urls WHERE expires < ?", (now,))
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO attachment_urls (token_hash, org_id, key, method, expires) VALUES (?, ?, ?, ?, ?)",
        (_hash(token), org_id, key, method, now + TTL_SECONDS),
    )
    return token


def _url(request: web.Request, token: str) -> str:
    return f"{request.scheme}://{request.host}{URL_PREFIX}{token}"


def _status(row: Any) -> dict[str, Any]:
    status: dict[str, Any] = orjson.loads(row)
    return status


# -- the API routes --------------------------------------------------------------------------


def _create(conn: sqlite3.Connection, org_id: str, key: str, filename: str, content_type: str, now: float) -> str:  # fmt: skip
    conn.execute(
        "INSERT INTO attachments (org_id, key, filename, content_type, status) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (org_id, key) DO UPDATE SET filename = excluded.filename,"
        " content_type = excluded.content_type",
        (org_id, key, filename, content_type, orjson.dumps({"upload_status": "uploading"}).decode()),
    )
    return _sign(conn, org_id, key, "PUT", now)


async def request_upload(request: web.Request, params: dict[str, str]) -> web.Response:
    """``POST /attachment``: where to ``PUT`` the bytes of a new attachment."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("request body: expected object")
    key, filename = _text(body, "key"), _text(body, "filename")
    content_type = _text(body, "content_type")
    org_id, now = _org(principal(request), body.get("org_id")), time.time()
    token = await store(request).write(lambda c: _create(c, org_id, key, filename, content_type, now))
    return json_response({"signedUrl": _url(request, token), "headers": {"Content-Type": content_type}})


def _set_status(conn: sqlite3.Connection, org_id: str, key: str, status: dict[str, Any]) -> None:
    found = conn.execute(
        "SELECT size FROM attachments WHERE org_id = ? AND key = ?", (org_id, key)
    ).fetchone()
    if found is None:
        raise NotFound(f"attachment {key} not found")
    if status["upload_status"] == "done" and found[0] is None:
        raise fail("status.upload_status", "nothing was uploaded for this key yet")
    conn.execute(
        "UPDATE attachments SET status = ? WHERE org_id = ? AND key = ?",
        (orjson.dumps(status).decode(), org_id, key),
    )


async def update_status(request: web.Request, params: dict[str, str]) -> web.Response:
    """``POST /attachment/status``: the upload's outcome, as the uploader reports it."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("request body: expected object")
    key = _text(body, "key")
    status = body.get("status")
    if not isinstance(status, dict) or status.get("upload_status") not in _STATUSES:
        raise fail("status", f"expected {{upload_status: {' | '.join(sorted(_STATUSES))}}}")
    org_id = _org(principal(request), body.get("org_id"))
    await store(request).write(lambda c: _set_status(c, org_id, key, status))
    return json_response({})


def _describe(conn: sqlite3.Connection, org_id: str, key: str, now: float) -> tuple[str, dict[str, Any]]:
    found = conn.execute(
        "SELECT status FROM attachments WHERE org_id = ? AND key = ?", (org_id, key)
    ).fetchone()
    if found is None:
        raise NotFound(f"attachment {key} not found")
    return _sign(conn, org_id, key, "GET", now), _status(found[0])


async def describe(request: web.Request, params: dict[str, str]) -> web.Response:
    """``GET /attachment?key&filename&content_type&org_id``: where to download it, and its status.

    An ``external_attachment`` lives at a URL of its own, which the SDKs send instead of a key
    (``?url=``): its bytes are there, so that URL is where to download it."""
    q = request.query
    if "key" not in q and "url" in q:
        return json_response({"downloadUrl": _text(dict(q), "url"), "status": {"upload_status": "done"}})
    key = _text(dict(q), "key")
    org_id, now = _org(principal(request), q.get("org_id")), time.time()
    token, status = await store(request).write(lambda c: _describe(c, org_id, key, now))
    return json_response({"downloadUrl": _url(request, token), "status": status})


# -- the signed URLs -------------------------------------------------------------------------


def _signed(conn: sqlite3.Connection, token: str, method: str, now: float) -> tuple[str, str]:
    row = conn.execute(
        "SELECT org_id, key, expires FROM attachment_urls WHERE token_hash = ? AND method = ?",
        (_hash(token), method),
    ).fetchone()
    if row is None or row[2] < now:
        raise web.HTTPForbidden(text="signed URL is unknown or expired")
    return str(row[0]), str(row[1])


def _put_chunk(conn: sqlite3.Connection, org_id: str, key: str, seq: int, data: bytes) -> None:
    if seq == 0:  # a new upload replaces whatever an earlier one stored
        conn.execute("DELETE FROM attachment_chunks WHERE org_id = ? AND key = ?", (org_id, key))
        conn.execute("UPDATE attachments SET size = NULL WHERE org_id = ? AND key = ?", (org_id, key))
    conn.execute(
        "INSERT INTO attachment_chunks (org_id, key, seq, data) VALUES (?, ?, ?, ?)", (org_id, key, seq, data)
    )


def _finish_put(conn: sqlite3.Connection, org_id: str, key: str, chunks: int, size: int) -> None:
    if chunks == 0:
        _put_chunk(conn, org_id, key, 0, b"")
    conn.execute("UPDATE attachments SET size = ? WHERE org_id = ? AND key = ?", (size, org_id, key))


async def receive(request: web.Request, params: dict[str, str]) -> web.Response:
    """``PUT /_emulator/attachment/<token>``: the bytes, stored chunk by chunk as they arrive."""
    db, now = store(request), time.time()
    org_id, key = await db.read(lambda c: _signed(c, params["token"], "PUT", now))
    buffer, seq, size = bytearray(), 0, 0
    async for piece in request.content.iter_chunked(1 << 16):
        size += len(piece)
        if size > MAX_ATTACHMENT_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_ATTACHMENT_BYTES, size, text="attachment too large")
        buffer += piece
        if len(buffer) >= CHUNK_BYTES:
            await db.write(partial(_put_chunk, org_id=org_id, key=key, seq=seq, data=bytes(buffer)))
            buffer, seq = bytearray(), seq + 1
    if buffer:
        await db.write(partial(_put_chunk, org_id=org_id, key=key, seq=seq, data=bytes(buffer)))
        seq += 1
    chunks = seq
    await db.write(lambda c: _finish_put(c, org_id, key, chunks, size))
    return web.Response(status=200)


def _stored(conn: sqlite3.Connection, org_id: str, key: str) -> tuple[int, str]:
    row = conn.execute(
        "SELECT size, content_type FROM attachments WHERE org_id = ? AND key = ?", (org_id, key)
    ).fetchone()
    if row is None or row[0] is None:
        raise web.HTTPNotFound(text=f"attachment {key}: nothing uploaded")
    return int(row[0]), str(row[1])


def _chunk(conn: sqlite3.Connection, org_id: str, key: str, seq: int) -> bytes | None:
    row = conn.execute(
        "SELECT data FROM attachment_chunks WHERE org_id = ? AND key = ? AND seq = ?", (org_id, key, seq)
    ).fetchone()
    return None if row is None else bytes(row[0])


async def send(request: web.Request, params: dict[str, str]) -> web.StreamResponse:
    """``GET /_emulator/attachment/<token>``: the bytes, streamed one stored chunk at a time
    (half of them, then nothing more, under a ``truncate`` fault)."""
    db, now = store(request), time.time()
    org_id, key = await db.read(lambda c: _signed(c, params["token"], "GET", now))
    size, content_type = await db.read(lambda c: _stored(c, org_id, key))
    response = web.StreamResponse(headers={"Content-Type": content_type, "Content-Length": str(size)})
    await response.prepare(request)
    left = size // 2 if faults.cut_stream(request) else size
    seq = 0
    while left > 0:
        data = await db.read(partial(_chunk, org_id=org_id, key=key, seq=seq))
        if data is None:
            break
        await response.write(data[:left])
        left -= len(data)
        seq += 1
    if not faults.cut_stream(request):
        await response.write_eof()
    return response


def store_bytes(conn: sqlite3.Connection, org_id: str, key: str, filename: str, content_type: str, data: bytes) -> None:  # fmt: skip
    """Store a whole small attachment as uploaded and done (the sample loader's shortcut)."""
    _create(conn, org_id, key, filename, content_type, time.time())
    for seq, start in enumerate(range(0, max(len(data), 1), CHUNK_BYTES)):
        _put_chunk(conn, org_id, key, seq, data[start : start + CHUNK_BYTES])
    conn.execute(
        "UPDATE attachments SET size = ?, status = ? WHERE org_id = ? AND key = ?",
        (len(data), orjson.dumps({"upload_status": "done"}).decode(), org_id, key),
    )
