"""Attachment references in rows: finding them, rewriting them, and the index of an export.

A row field, at any depth, may hold ``{"type": "braintrust_attachment", "key", "filename",
"content_type"}``: bytes stored by Braintrust under ``key`` in the row's org. Export copies
those bytes into the layout once each (``_attachments/sha256=<hex>``) and records, per source
key, an :class:`Entry` (``_attachments/keys/<hash of key>.json``); import and migrate upload
them to the destination and rewrite the keys in the rows. ``external_attachment`` references
(a URL the caller stores) are data like any other and pass through untouched.

Rows without attachments must not pay for this: :func:`page_references` looks for
:data:`MARKER` in the page's bytes (a C-speed search) before parsing anything.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from pipeline.common import jsoncodec

#: The ``type`` of a reference to bytes Braintrust stores; a row without it holds none.
MARKER: Final = b"braintrust_attachment"
_TYPE: Final = MARKER.decode()


@dataclass(frozen=True)
class Reference:
    """One ``braintrust_attachment`` reference, as a row holds it."""

    key: str
    filename: str
    content_type: str


def _as_reference(value: dict[str, Any]) -> Reference | None:
    key = value.get("key")
    if value.get("type") != _TYPE or not isinstance(key, str) or not key:
        return None
    filename, content_type = value.get("filename"), value.get("content_type")
    return Reference(key, str(filename or ""), str(content_type or "application/octet-stream"))


def find_references(value: Any, into: dict[str, Reference] | None = None) -> dict[str, Reference]:
    """Every reference in ``value`` (nested anywhere), by key."""
    found = {} if into is None else into
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = _as_reference(item)
            if ref is not None:
                found.setdefault(ref.key, ref)
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def page_references(raw: bytes) -> dict[str, Reference]:
    """The references in a JSONL page; the page is parsed only when it holds the marker."""
    if MARKER not in raw:
        return {}
    found: dict[str, Reference] = {}
    for row in jsoncodec.loads_lines(raw):
        find_references(row, found)
    return found


def rewrite(value: Any, keys: Mapping[str, str]) -> Any:
    """``value`` with each reference's ``key`` replaced by ``keys[key]`` (a copy where anything
    changed; the rest shared). Filename and content type stay as they are."""
    if isinstance(value, dict):
        ref = _as_reference(value)
        if ref is not None:
            return {**value, "key": keys[ref.key]} if ref.key in keys else value
        return {k: rewrite(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, keys) for v in value]
    return value


@dataclass(frozen=True)
class Entry:
    """One exported attachment: its source key, where its bytes are and what they are."""

    key: str
    sha256: str
    bytes: int
    filename: str
    content_type: str

    def to_json(self) -> builtins.bytes:
        return jsoncodec.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: builtins.bytes) -> Entry:
        raw = jsoncodec.loads(data)
        return cls(
            str(raw["key"]),
            str(raw["sha256"]),
            int(raw["bytes"]),
            str(raw["filename"]),
            str(raw["content_type"]),
        )


def key_digest(key: str) -> str:
    """The name of a key's index file: a hash, so a key never steers a path."""
    return hashlib.sha256(key.encode()).hexdigest()


def manifest_section(entries: Iterable[Entry], skipped: int) -> dict[str, Any]:
    """What a run manifest says about the attachments its rows refer to."""
    listed = sorted(entries, key=lambda e: e.key)
    return {
        "count": len(listed),
        "bytes": sum(e.bytes for e in listed),
        "skipped": skipped,
        "files": [asdict(e) for e in listed],
    }
