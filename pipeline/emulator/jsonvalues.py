"""JSON text <-> values for rows, keeping integers of any size exact.

Users may log integers beyond 64 bits; the service stores what it was sent. orjson would turn
them into floats and refuses to encode them, so bodies are decoded by msgspec (which refuses
rather than rounds) with the standard library as the exact fallback, and values orjson
cannot encode are encoded by the standard library.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import orjson


def loads(raw: bytes | str) -> Any:
    """Decode one document; ValueError when it is not JSON."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        if "out of range" not in str(exc):
            raise ValueError(str(exc)) from None
    return json.loads(raw)


def dumps(value: Any) -> bytes:
    """Compact JSON keeping key order and exact integers."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def same(a: Any, b: Any) -> bool:
    """Whether two decoded JSON values are equal as JSON: objects in any key order, numbers
    by value, and ``true`` never ``1`` (Python's ``True == 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, int | float):
        return isinstance(b, int | float) and a == b
    return type(a) is type(b) and a == b
