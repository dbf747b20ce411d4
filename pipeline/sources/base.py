"""What every reader yields: a row with the place it came from, for error messages."""

from __future__ import annotations

from typing import Any, NamedTuple


class SourceRow(NamedTuple):
    """One row and where it was read: ``file`` relative to the storage root, ``position`` the
    1-based line number in a JSONL file or the 0-based row index in a Parquet file."""

    row: dict[str, Any]
    file: str
    position: int
