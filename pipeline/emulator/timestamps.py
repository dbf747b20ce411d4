"""``created`` as a time value: any ISO-8601 spelling in, one canonical UTC spelling out.

Clients write ``created`` in many spellings (the Python SDK: ``...20.144191+00:00``; the
JavaScript SDK and the REST examples: ``...20.000Z`` or ``...20Z``; users: any offset), and
filters such as ``created >= '2026-01-01T00:03:20Z'`` must compare times, not texts.

Rows are stored with :func:`canonical_time`: UTC, ``Z``, milliseconds, and three more digits
only when the time has sub-millisecond digits (``2026-01-01T00:03:20.000Z``,
``2026-01-01T00:03:20.144191Z``). That keeps every spelling the SDKs write without loss and is
the spelling the service's own row stamps have (milliseconds, ``Z``). Two canonical texts of
the same millisecond differ in length, so queries compare the fixed-width key of
:func:`key_sql` (microseconds, no zone) with the key of the literal (:func:`time_key`): the
stored text stays the page text, and the key costs two string functions in SQLite per row.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

#: Already canonical: skips parsing on the write path (every row read back and rewritten
#: by a merge, and every stamp of ``now``).
_CANONICAL: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(\d\d[1-9]|\d[1-9]\d|[1-9]\d\d)?Z")


def parse_time(text: str) -> datetime:
    """An aware UTC datetime for an ISO-8601 date or date-time; no offset means UTC.

    ValueError for anything else, including times that leave the representable years
    once moved to UTC (``0001-01-01T00:00:00+05:00``)."""
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range in UTC") from None


def canonical_time(text: str) -> str:
    """The canonical UTC spelling of an ISO-8601 time (see the module docstring)."""
    if _CANONICAL.fullmatch(text):
        return text
    naive = parse_time(text).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds" if naive.microsecond % 1000 else "milliseconds") + "Z"


def time_key(text: str) -> str:
    """The fixed-width sort key of a time: UTC, microseconds, no zone (26 characters)."""
    return parse_time(text).replace(tzinfo=None).isoformat(timespec="microseconds")


def key_sql(canonical: str) -> str:
    """SQL turning a canonical stored time (the SQL expression ``canonical``) into its
    :func:`time_key`: ``...20.123Z`` -> ``...20.123000``, ``...20.123456Z`` -> ``...20.123456``."""
    return f"substr(replace({canonical}, 'Z', '000Z'), 1, 26)"


def canonical_from_key_sql(key: str) -> str:
    """SQL turning a :func:`time_key` back into the canonical spelling (for ``min``/``max``);
    it names ``key`` once, as the expression may hold a parameter."""
    return f"replace({key} || 'Z', '000Z', 'Z')"
