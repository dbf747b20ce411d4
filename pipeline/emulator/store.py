"""SQLite storage for the emulator: schema, connections and the transaction id counter.

One writer connection guarded by a lock serialises every write (SQLite allows one writer
anyway); each read takes a reader connection of its own (an idle one, else a new one) so,
in WAL mode, a long page read never waits for an insert. An in-memory database cannot be shared between connections without
shared-cache locking surprises, so ``:memory:`` uses the single writer connection for
reads too. Callers on the event loop go through :meth:`Store.read` / :meth:`Store.write`,
which leave the loop with ``anyio.to_thread.run_sync``.

Row versions live in ``rows`` (see the column comments); the query compiler in
``query.py`` relies on that layout and on the indexes created here.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

import anyio.to_thread

from pipeline.emulator import jsonvalues

T = TypeVar("T")

#: How much of the database file readers map (SQLite caps it at its compiled maximum).
MMAP_BYTES = 2**31 - 2**16

#: First transaction id handed out; 64-bit, strictly increasing, kept in ``meta``. Real ids
#: have these top 16 bits (``0x0DE1``), which the SDKs set again when they read back a version
#: they printed as 16 hex digits (``load_pretty_xact``), so ids below them would not survive it.
FIRST_XACT_ID = 0x0DE1 << 48

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS members (
    user_id TEXT NOT NULL, org_id TEXT NOT NULL, role TEXT NOT NULL,
    PRIMARY KEY (user_id, org_id)
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, admin INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY,          -- creation order; lists are newest first
    kind TEXT NOT NULL,               -- project | dataset | experiment | role | prompt | view | ...
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    project_id TEXT,                  -- the parent: NULL for projects and org-level kinds, a view's object
    name TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL                -- the object as the REST API returns it
);
CREATE TABLE IF NOT EXISTS acls (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,             -- the org of the object the ACL applies to
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    user_id TEXT,
    permission TEXT,
    role_id TEXT,
    restrict_object_type TEXT,
    data TEXT NOT NULL                -- the ACL as the REST API returns it
);
CREATE INDEX IF NOT EXISTS acls_by_object ON acls (object_type, object_id);
CREATE INDEX IF NOT EXISTS objects_by_name ON objects (kind, org_id, project_id, name);
CREATE INDEX IF NOT EXISTS objects_by_parent ON objects (project_id);  -- what a deleted object held
CREATE TABLE IF NOT EXISTS object_versions (  -- every saved version of a prompt or function (versions.py)
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,                 -- the object's id
    xact_id INTEGER NOT NULL,         -- the version's _xact_id
    data TEXT NOT NULL                -- the object as the REST API returned it at that version
);
CREATE INDEX IF NOT EXISTS object_versions_by_id ON object_versions (id, xact_id);
CREATE TABLE IF NOT EXISTS rows (
    seq INTEGER PRIMARY KEY,          -- global write order; _pagination_key derives from it
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,          -- the project id for project_logs
    id TEXT NOT NULL,
    xact_id INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    root_span_id TEXT,
    data TEXT NOT NULL,               -- the row exactly as read back, serialized JSON
    superseded INTEGER                -- xact_id of the id's next version; NULL while latest
);
CREATE INDEX IF NOT EXISTS rows_version ON rows (object_type, object_id, id, xact_id);
CREATE INDEX IF NOT EXISTS rows_seq ON rows (object_type, object_id, seq);
CREATE INDEX IF NOT EXISTS rows_trace ON rows (object_type, object_id, root_span_id);
CREATE TABLE IF NOT EXISTS overflow_uploads (  -- logs3 batches sent beside the API (overflow.py)
    key TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,  -- sha256 of the signed URL's token
    user_id TEXT NOT NULL,            -- who asked for the upload; only they may apply it
    size_bytes INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    expires REAL NOT NULL,            -- unix time after which the upload is gone
    payload BLOB,                     -- NULL until uploaded
    row_ids TEXT                      -- JSON list of the written row ids once applied
);
CREATE TABLE IF NOT EXISTS attachments (  -- attachment metadata per org (attachments.py)
    org_id TEXT NOT NULL,
    key TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    status TEXT NOT NULL,             -- the AttachmentStatus as JSON
    size INTEGER,                     -- set once an upload completed
    PRIMARY KEY (org_id, key)
);
CREATE TABLE IF NOT EXISTS attachment_chunks (
    org_id TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (org_id, key, seq)
);
CREATE TABLE IF NOT EXISTS attachment_urls (
    token_hash TEXT PRIMARY KEY,      -- sha256 of the signed URL's token
    org_id TEXT NOT NULL,
    key TEXT NOT NULL,
    method TEXT NOT NULL,             -- PUT or GET
    expires REAL NOT NULL
);
"""

#: Visibility at a version is a per-row test on ``superseded`` (no scan of later versions), so
#: counts and min/max over a big object are answered from this covering index.
VISIBILITY_INDEX = """
CREATE INDEX IF NOT EXISTS rows_visible ON rows (object_type, object_id, xact_id, deleted, superseded);
"""


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database written before ``superseded`` existed up to date (once)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(rows)")}
    if "superseded" not in columns:
        with conn:
            conn.execute("ALTER TABLE rows ADD COLUMN superseded INTEGER")
            conn.execute(
                "UPDATE rows SET superseded = (SELECT min(n.xact_id) FROM rows n WHERE n.object_type ="
                " rows.object_type AND n.object_id = rows.object_id AND n.id = rows.id AND n.xact_id > rows.xact_id)"
            )
    conn.executescript(VISIBILITY_INDEX)


@lru_cache(maxsize=256)
def _like_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = ("." if ch == "_" else ".*" if ch == "%" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _bt_like(value: object, pattern: object, ignore_case: int) -> int | None:
    """SQL LIKE with Unicode-aware case folding (SQLite's own only folds ASCII)."""
    if value is None or pattern is None:
        return None
    return int(_like_regex(str(pattern), bool(ignore_case)).fullmatch(str(value)) is not None)


def _bt_json_equal(value: object, literal: object) -> int | None:
    """Whether a field's JSON text equals a literal's, as JSON (``jsonvalues.same``); NULL where
    the field is absent or a JSON null, as every other comparison has it."""
    if value is None or literal is None:
        return None
    found = jsonvalues.loads(str(value))
    return None if found is None else int(jsonvalues.same(found, _literal_value(str(literal))))


@lru_cache(maxsize=64)
def _literal_value(text: str) -> Any:
    """A query's literal, decoded once for all the rows it is compared with (never mutated)."""
    return jsonvalues.loads(text)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.create_function("bt_like", 3, _bt_like, deterministic=True)
    conn.create_function("bt_json_equal", 2, _bt_json_equal, deterministic=True)
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA cache_size=-65536")
    # Readers map the file instead of copying its pages into a cache of their own: with one
    # connection per read at once, each cache warmed separately, so a page read cost more CPU the
    # more reads ran at once (about a third more at 12 than at 4), which no real server does.
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    return conn


class Store:
    """The emulator database. Thread-safe; see the module docstring for the locking model."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._memory = path == ":memory:"
        self._lock = threading.Lock()
        self._writer = _connect(path)
        self._writer.executescript(SCHEMA)
        _migrate(self._writer)
        self._readers: list[sqlite3.Connection] = []  # every reader opened, to close them
        self._idle: list[sqlite3.Connection] = []  # readers no read holds now
        self._readers_lock = threading.Lock()
        self._closed = False

    # -- synchronous API (call from worker threads) ------------------------------------

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with a read connection (inside one read transaction: a snapshot)."""
        if self._memory:
            with self._lock:
                return fn(self._writer)
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        finally:
            with self._readers_lock:
                self._idle.append(conn)

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction on the writer connection; roll back on error."""
        with self._lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    # -- async API (call from the event loop) -------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self.read_sync, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self.write_sync, fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._lock:
            self._writer.close()

    def _reader(self) -> sqlite3.Connection:
        """A read connection no read holds: an idle one, or a new one when all are busy. So
        there are never more than reads at once; one per thread, as before, grew with every
        worker thread the event loop's pool replaced, each with its files and its mapping."""
        with self._readers_lock:
            if self._idle:
                return self._idle.pop()
        conn = _connect(self.path)
        with self._readers_lock:
            self._readers.append(conn)
        return conn


def next_xact_id(conn: sqlite3.Connection) -> int:
    """Allocate the next transaction id; call inside a write transaction."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'xact_id'").fetchone()
    xact = FIRST_XACT_ID if row is None else int(row[0]) + 1
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('xact_id', ?)", (xact,))
    return xact


def current_xact_id(conn: sqlite3.Connection) -> int:
    """The newest committed transaction id (``FIRST_XACT_ID - 1`` on an empty database)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'xact_id'").fetchone()
    return FIRST_XACT_ID - 1 if row is None else int(row[0])


def next_row_seq(conn: sqlite3.Connection) -> int:
    """The seq the next inserted row version gets; call inside a write transaction."""
    row = conn.execute("SELECT max(seq) FROM rows").fetchone()
    return (row[0] or 0) + 1


def pagination_key(seq: int) -> str:
    """A sortable string for a row version's place in the global write order."""
    return f"p{seq:020d}"
