"""The checkpoint rule: advance only over the contiguous prefix of finished batches.

Insert workers finish batches out of order. A mark (file position, page cursor) is durable
only when the batch carrying it and every batch before it have been applied, so
:class:`PrefixTracker` keeps the finished-but-not-contiguous sequence numbers and hands back
the newest mark the prefix has passed. A resumed run starts after that mark; batches after it
that happened to finish are sent again, which is harmless because events keep their ids and
the insert endpoint upserts by id.
"""

from __future__ import annotations

from typing import Any


class PrefixTracker:
    """Tracks batches ``0, 1, 2, ...`` of one stream; see the module docstring."""

    def __init__(self) -> None:
        self.applied = 0  # batches in the contiguous prefix
        self.rows = 0  # rows in those batches
        self._marks: dict[int, Any] = {}
        self._rows: dict[int, int] = {}
        self._finished: set[int] = set()

    def register(self, seq: int, mark: Any, rows: int) -> None:
        """Note a batch as it is created (before any worker can finish it)."""
        self._marks[seq] = mark
        self._rows[seq] = rows

    def finish(self, seq: int) -> tuple[bool, Any]:
        """Mark batch ``seq`` applied; return (prefix advanced, newest mark passed or None)."""
        self._finished.add(seq)
        newest = None
        advanced = False
        while self.applied in self._finished:
            seq_done = self.applied
            self._finished.discard(seq_done)
            mark = self._marks.pop(seq_done)
            self.rows += self._rows.pop(seq_done)
            if mark is not None:
                newest = mark
            self.applied += 1
            advanced = True
        return advanced, newest

    @property
    def pending(self) -> int:
        """Registered batches not yet in the prefix."""
        return len(self._marks)
