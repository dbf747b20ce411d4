"""Version history of prompts and functions: every create, replace and patch is a version.

Each saved version gets the next ``_xact_id`` (the counter rows use, ``store.next_xact_id``) and
is kept whole in ``object_versions``, so ``GET /v1/prompt/{id}?version=X`` answers the newest
version at or before ``X``. A version is named by its ``_xact_id`` in decimal or in the SDKs'
16-digit hex form (``braintrust.xact_ids.prettify_xact``: the id times an odd constant modulo
2**64, which this module inverts exactly).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import orjson

from pipeline.emulator.store import next_xact_id
from pipeline.emulator.validate import BadRequest

_MOD: Final = 2**64
#: The SDKs' multiplier of a pretty version and its inverse modulo 2**64.
_COPRIME: Final = 205891132094649
_COPRIME_INVERSE: Final = 1522336535492693385
_PRETTY_DIGITS: Final = 16
#: The largest transaction id SQLite holds; reading "as of" a later one reads the newest.
MAX_XACT: Final = 2**63 - 1


def prettify(xact_id: int) -> str:
    """The SDKs' 16-digit hex name of a version."""
    return format(xact_id * _COPRIME % _MOD, "016x")


def parse(version: str, where: str = "version") -> int:
    """The ``_xact_id`` a ``version`` parameter names (decimal, or 16 hex digits as the SDKs
    print versions); 400 otherwise."""
    text = version.strip()
    if len(text) == _PRETTY_DIGITS:
        try:
            return int(text, 16) * _COPRIME_INVERSE % _MOD
        except ValueError:
            pass
    if text.isascii() and text.isdigit():
        return int(text)
    raise BadRequest(f"{where}: expected a transaction id or a 16-digit version id, got {version!r}")


def record(conn: sqlite3.Connection, obj: dict[str, Any], action: str = "upsert") -> dict[str, Any]:
    """Stamp ``obj`` with a new ``_xact_id`` and keep it as a version (call inside a write).
    ``action`` is what the version's audit entry says: ``upsert`` (create, replace) or ``merge``
    (patch)."""
    xact = next_xact_id(conn)
    obj["_xact_id"] = str(xact)
    conn.execute(
        "INSERT INTO object_versions (id, xact_id, data) VALUES (?, ?, ?)",
        (obj["id"], xact, orjson.dumps({"action": action, "object": obj}).decode()),
    )
    return obj


def as_of(conn: sqlite3.Connection, object_id: str, xact_id: int) -> dict[str, Any] | None:
    """The object as it was at ``xact_id`` (its newest version at or before it), or ``None``."""
    row = conn.execute(
        "SELECT data FROM object_versions WHERE id = ? AND xact_id <= ? ORDER BY xact_id DESC LIMIT 1",
        (object_id, xact_id),
    ).fetchone()
    if row is None:
        return None
    found: dict[str, Any] = orjson.loads(row[0])["object"]
    return found


def history(conn: sqlite3.Connection, object_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every version of the objects ``object_ids``, oldest first: ``(action, object)`` pairs."""
    if not object_ids:
        return []
    marks = ",".join("?" * len(object_ids))
    rows = conn.execute(
        f"SELECT data FROM object_versions WHERE id IN ({marks}) ORDER BY xact_id, seq", object_ids
    )
    return [(v["action"], v["object"]) for v in (orjson.loads(r[0]) for r in rows)]
