"""API keys, users and orgs of the emulator, and who a request runs as.

A key belongs to a user; a user belongs to orgs with a role (``owner`` or ``member``).
Keys are given as ``KEY=USER_EMAIL@ORG:ROLE`` (``--key`` flags or the comma separated
``BTPIPE_EMULATOR_KEYS``), or in a TOML file::

    [[keys]]
    key = "bt-local-key"
    email = "owner@local.test"
    org = "local"
    role = "owner"        # owner | member
    admin = false         # admin keys may drive the fault control endpoint

With none given, :data:`DEFAULT_KEYS` apply. Only a SHA-256 of each key is stored, so the
database never holds a secret. The identity of a request is a :class:`Principal`, kept
on the request; impersonation (``access.py``) swaps it for the impersonated user's in one place.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipeline.emulator.store import Store

ROLES: Final = ("owner", "member")


@dataclass(frozen=True)
class KeySpec:
    key: str
    email: str
    org: str
    role: str = "owner"
    admin: bool = False


DEFAULT_KEYS: Final[tuple[KeySpec, ...]] = (
    KeySpec("bt-local-key", "owner@local.test", "local", "owner"),
    KeySpec("bt-local-member-key", "member@local.test", "local", "member"),
    KeySpec("bt-other-org-key", "owner@other.test", "other", "owner"),
    KeySpec("bt-admin-key", "admin@local.test", "local", "owner", admin=True),
)


@dataclass(frozen=True)
class OrgMembership:
    org_id: str
    org_name: str
    role: str


@dataclass(frozen=True)
class Principal:
    """The user a request runs as, with the orgs whose objects it may see."""

    user_id: str
    email: str
    orgs: tuple[OrgMembership, ...]
    admin: bool = False

    @property
    def org_ids(self) -> tuple[str, ...]:
        return tuple(m.org_id for m in self.orgs)

    def default_org(self, org_name: str | None = None) -> OrgMembership | None:
        """The org named ``org_name`` (or the first one); ``None`` when not a member."""
        if org_name is None:
            return self.orgs[0] if self.orgs else None
        return next((m for m in self.orgs if m.org_name == org_name), None)

    def only_org(self, org_name: str) -> Principal | None:
        """This principal narrowed to one org (``x-bt-org-name``); ``None`` when not a member."""
        member = self.default_org(org_name)
        return None if member is None else Principal(self.user_id, self.email, (member,), self.admin)


def parse_key_spec(text: str) -> KeySpec:
    """Parse ``KEY=USER_EMAIL@ORG:ROLE``; raise ``ValueError`` naming what is wrong."""
    key, sep, rest = text.strip().partition("=")
    if not sep or not key:
        raise ValueError("key spec must look like KEY=USER_EMAIL@ORG:ROLE")
    who, _, role = rest.partition(":")
    email, at, org = who.rpartition("@")
    if not at or not email or not org or "@" not in email:
        raise ValueError("key spec must look like KEY=USER_EMAIL@ORG:ROLE (user email then @org)")
    role = role or "owner"
    if role not in ROLES:
        raise ValueError(f"key spec role {role!r} must be one of {', '.join(ROLES)}")
    return KeySpec(key, email, org, role)


def parse_key_list(text: str) -> list[KeySpec]:
    """Parse the comma separated form used by ``BTPIPE_EMULATOR_KEYS``."""
    return [parse_key_spec(part) for part in text.split(",") if part.strip()]


def load_keys_file(path: Path) -> list[KeySpec]:
    """Read a TOML keys file (see the module docstring)."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    specs = []
    for i, entry in enumerate(doc.get("keys", [])):
        try:
            spec = KeySpec(
                str(entry["key"]), str(entry["email"]), str(entry["org"]),
                str(entry.get("role", "owner")), bool(entry.get("admin", False)),
            )  # fmt: skip
        except KeyError as exc:
            raise ValueError(f"{path}: keys[{i}] is missing {exc.args[0]!r}") from None
        if spec.role not in ROLES:
            raise ValueError(f"{path}: keys[{i}].role must be one of {', '.join(ROLES)}")
        specs.append(spec)
    return specs


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _ensure_id(conn: sqlite3.Connection, table: str, column: str, value: str) -> str:
    row = conn.execute(f"SELECT id FROM {table} WHERE {column} = ?", (value,)).fetchone()
    if row is not None:
        return str(row[0])
    new_id = str(uuid.uuid4())
    conn.execute(f"INSERT INTO {table} (id, {column}) VALUES (?, ?)", (new_id, value))
    return new_id


def register_keys(store: Store, specs: list[KeySpec] | tuple[KeySpec, ...]) -> None:
    """Create the orgs, users, memberships and keys of ``specs`` (idempotent)."""

    def run(conn: sqlite3.Connection) -> None:
        for spec in specs:
            org_id = _ensure_id(conn, "orgs", "name", spec.org)
            user_id = _ensure_id(conn, "users", "email", spec.email)
            conn.execute(
                "INSERT OR REPLACE INTO members (user_id, org_id, role) VALUES (?, ?, ?)",
                (user_id, org_id, spec.role),
            )
            conn.execute(
                "INSERT OR REPLACE INTO api_keys (key_hash, user_id, admin) VALUES (?, ?, ?)",
                (hash_key(spec.key), user_id, int(spec.admin)),
            )

    store.write_sync(run)


def _with_orgs(conn: sqlite3.Connection, user_id: str, email: str, admin: bool) -> Principal:
    orgs = conn.execute(
        "SELECT o.id, o.name, m.role FROM members m JOIN orgs o ON o.id = m.org_id"
        " WHERE m.user_id = ? ORDER BY o.rowid",
        (user_id,),
    ).fetchall()
    return Principal(user_id, email, tuple(OrgMembership(*o) for o in orgs), admin)


def load_principal(conn: sqlite3.Connection, key: str) -> Principal | None:
    """The principal owning ``key``, or ``None`` for an unknown key."""
    row = conn.execute(
        "SELECT u.id, u.email, k.admin FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = ?",
        (hash_key(key),),
    ).fetchone()
    return None if row is None else _with_orgs(conn, row[0], row[1], bool(row[2]))


def load_user(conn: sqlite3.Connection, who: str) -> Principal | None:
    """The principal of the user with id or email ``who`` (never an admin), or ``None``."""
    row = conn.execute("SELECT id, email FROM users WHERE id = ? OR email = ?", (who, who)).fetchone()
    return None if row is None else _with_orgs(conn, row[0], row[1], False)


class Authenticator:
    """Resolves bearer keys to principals, caching hits (keys do not change at run time; an
    org rename calls :meth:`forget`, since a principal holds its orgs' names)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, Principal] = {}

    async def principal(self, authorization: str | None) -> Principal | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        key = authorization[len("Bearer ") :].strip()
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        found = await self._store.read(lambda conn: load_principal(conn, key))
        if found is not None:
            self._cache[digest] = found
        return found

    def forget(self) -> None:
        """Drop every cached principal."""
        self._cache.clear()
