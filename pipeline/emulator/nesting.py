"""How deep an inserted row may nest, checked on the raw request body before decoding.

Real JSON parsers bound nesting (the service refuses absurdly deep rows with a 400), and a
decoder that recurses per level fails on deep input with a RecursionError, which would be a
500. A row may nest :data:`MAX_NESTING_DEPTH` levels of objects and arrays, the row object
itself being the first; the insert routes wrap their rows in a fixed envelope
(``{"events": [row]}`` is two levels), so a body may nest ``envelope + MAX_NESTING_DEPTH``.

The depth is measured on the bytes, at C speed: escapes and string contents are removed
(brackets inside strings are data), the brackets left are kept, and innermost pairs are
peeled off one level per pass. Bulk rows are a few levels deep, so that is a few passes over
a text already much smaller than the body (about a millisecond a megabyte).
"""

from __future__ import annotations

import re
from typing import Any, Final

from pipeline.emulator import jsonvalues
from pipeline.emulator.validate import BadRequest

#: Levels of objects and arrays one row may nest (the row object is level 1).
MAX_NESTING_DEPTH: Final = 200

_STRING: Final = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE: Final = bytes(c for c in range(256) if c not in b'[]{}"')
_SQUARE: Final = bytes.maketrans(b"{}", b"[]")  # in valid JSON only the depth of a bracket matters


def nests_deeper_than(raw: bytes, levels: int) -> bool:
    """Whether a valid JSON text nests more than ``levels`` levels of objects and arrays."""
    if raw.count(b"{") + raw.count(b"[") <= levels:
        return False  # too few brackets to nest that deep
    if b"\\" in raw:  # escaped backslashes, then escaped quotes: neither ends a string
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Brackets and quotes only; ``""`` is a string without brackets (or the end of one string
    # and the start of the next with no bracket between): dropping it keeps the pairing.
    brackets = raw.translate(_SQUARE, delete=_NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in brackets:
        brackets = _STRING.sub(b"", brackets)  # strings holding brackets
    for _ in range(levels):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")  # one level a pass: replace never rescans
    return bool(brackets)


def decode_rows_body(raw: bytes, envelope: int) -> Any:
    """The decoded body of an insert request whose rows sit ``envelope`` levels deep;
    400 naming the limit when a row nests deeper than :data:`MAX_NESTING_DEPTH`."""
    allowed = envelope + MAX_NESTING_DEPTH
    too_deep = BadRequest(
        f"request body: a row nests deeper than {MAX_NESTING_DEPTH} levels of objects and arrays"
        f" (the limit is {MAX_NESTING_DEPTH})"
    )
    try:
        body = jsonvalues.loads(raw) if raw.strip() else {}
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:
        raise BadRequest(f"request body: invalid JSON ({exc})") from None
    if nests_deeper_than(raw, allowed):
        raise too_deep
    return body
