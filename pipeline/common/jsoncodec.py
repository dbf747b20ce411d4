"""The one JSON codec: exact JSON text <-> Python values, fast where possible.

Every client module that decodes or encodes row data, request bodies or responses goes
through here, so the exact-number rules live in one place.

orjson is the fast path, but it quietly turns an integer beyond the 64-bit range into a float
and refuses to serialise one. Rows are user data and may carry such numbers, so any text with
a run of 19 or more digits (the only place an out-of-range integer can hide) is decoded by the
standard library instead, and values orjson cannot encode are encoded by it too. Both paths
give the same Python values: ints stay ints, floats round-trip through their shortest repr.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from pipeline.common.errors import BtpipeError


def _character_classes() -> bytes:
    table = bytearray(b"x" * 256)
    for c in b"0123456789":
        table[c] = ord("0")
    for c in b":,[":
        table[c] = ord(":")
    table[ord("-")] = ord("-")
    return bytes(table)


#: Every byte mapped to its class: digit -> 0, value separator (``:`` ``,`` ``[``) -> ``:``,
#: minus stays, anything else -> ``x``; blanks are dropped.
_CLASSES = _character_classes()
_BARE_LONG = b":" + b"0" * 19
_BARE_LONG_NEGATIVE = b":-" + b"0" * 19


def _has_long_number(text: bytes) -> bool:
    """Whether ``text`` may hold a bare integer of 19+ digits (one orjson could not keep exact).

    Long digit runs are common inside strings (every ``_xact_id``), so only a run right after
    ``:``, ``,`` or ``[`` counts: that is where a bare number starts. Mapped to character
    classes, that is two substring searches at C speed. A string that happens to contain
    ``": 1234..."`` is a false positive, which only costs the slower, still exact, path.
    """
    classes = b":" + text.translate(_CLASSES, b" \t\r\n")
    return _BARE_LONG in classes or _BARE_LONG_NEGATIVE in classes


def loads(text: bytes) -> Any:
    """Decode one JSON document without losing integer precision."""
    if _has_long_number(text):
        return json.loads(text)
    return orjson.loads(text)


def dumps(value: Any) -> bytes:
    """Compact JSON of ``value`` keeping key order; falls back for integers orjson cannot hold."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def canonical(value: Any) -> bytes:
    """Compact JSON with sorted keys: equal values give equal bytes (for content hashes)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def loads_lines(page: bytes) -> list[Any]:
    """Every row of a JSONL page, exactly, with one parser call."""
    return loads_array(page_lines(page))


def page_lines(page: bytes) -> list[bytes]:
    """The non-blank lines of a JSONL page (raw newlines only ever separate rows)."""
    return [line for line in page.split(b"\n") if line.strip()]


def loads_array(items: list[bytes]) -> list[Any]:
    """Decode many JSON documents with one parser call."""
    return loads(b"[" + b",".join(items) + b"]") if items else []


def parse_page(page: bytes) -> list[dict[str, Any]]:
    """The row dicts of one JSONL page, parsed with a single decoder call; BtpipeError if a
    line is not JSON or not an object."""
    try:
        rows = loads_array(page_lines(page))
    except ValueError as exc:
        raise BtpipeError(f"page is not valid JSONL ({exc})") from exc
    if not all(type(row) is dict for row in rows):
        raise BtpipeError("page is not valid JSONL (a line is not a JSON object)")
    return rows
