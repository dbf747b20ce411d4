"""Exact JSON text <-> Python values, fast where possible.

orjson is the fast path, but it quietly turns an integer beyond the 64-bit range into a float
and refuses to serialise one. Rows are user data and may carry such numbers, so any text with
a run of 19 or more digits (the only place an out-of-range integer can hide) is decoded by the
standard library instead, and values orjson cannot encode are encoded by it too. Both paths
give the same Python values: ints stay ints, floats round-trip through their shortest repr.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS = re.compile(rb"\d{19,}")


def loads(text: bytes) -> Any:
    """Decode one JSON document without losing integer precision."""
    if _LONG_DIGITS.search(text):
        return json.loads(text)
    return orjson.loads(text)


def dumps(value: Any) -> bytes:
    """Compact JSON of ``value`` keeping key order; falls back for integers orjson cannot hold."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def page_lines(page: bytes) -> list[bytes]:
    """The non-blank lines of a JSONL page (raw newlines only ever separate rows)."""
    return [line for line in page.split(b"\n") if line.strip()]


def loads_array(items: list[bytes]) -> list[Any]:
    """Decode many JSON documents with one parser call."""
    return loads(b"[" + b",".join(items) + b"]") if items else []
