"""The checkpoint rule: advance only over the contiguous prefix of finished batches.

Insert workers finish batches out of order. A mark (file position, page cursor) is durable
only when the batch carrying it and every batch before it have been applied, so
:class:`PrefixTracker` keeps the finished-but-not-contiguous sequence numbers and hands back
the newest mark the prefix has passed, and :class:`Ledger` moves an object's
:class:`~pipeline.common.state.ObjectProgress` to it and saves the state. A resumed run starts
after that mark; batches after it that happened to finish are sent again, which is harmless
because events keep their ids and the insert endpoint upserts by id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from pipeline.common.state import Mark, ObjectProgress


class PrefixTracker:
    """Tracks batches ``0, 1, 2, ...`` of one stream; see the module docstring."""

    def __init__(self) -> None:
        self.applied = 0  # batches in the contiguous prefix
        self.rows = 0  # rows in those batches
        self.skipped = 0  # events of those batches that were skipped, not written
        self._marks: dict[int, Mark | None] = {}
        self._rows: dict[int, int] = {}
        self._skipped: dict[int, int] = {}
        self._finished: set[int] = set()

    def register(self, seq: int, mark: Mark | None, rows: int) -> None:
        """Note a batch as it is created (before any worker can finish it)."""
        self._marks[seq] = mark
        self._rows[seq] = rows

    def skip(self, seq: int) -> None:
        """Note that one event of batch ``seq`` was skipped (before it finishes)."""
        self._skipped[seq] = self._skipped.get(seq, 0) + 1

    def finish(self, seq: int) -> tuple[bool, Mark | None]:
        """Mark batch ``seq`` applied; return (prefix advanced, newest mark passed or None)."""
        self._finished.add(seq)
        newest = None
        advanced = False
        while self.applied in self._finished:
            seq_done = self.applied
            self._finished.discard(seq_done)
            mark = self._marks.pop(seq_done)
            self.rows += self._rows.pop(seq_done)
            self.skipped += self._skipped.pop(seq_done, 0)
            if mark is not None:
                newest = mark
            self.applied += 1
            advanced = True
        return advanced, newest

    @property
    def pending(self) -> int:
        """Registered batches not yet in the prefix."""
        return len(self._marks)

    @property
    def confirmed(self) -> int:
        """Rows of every batch finished, in the prefix or beyond it."""
        return self.rows + sum(self._rows[seq] for seq in self._finished)


class Ledger:
    """The checkpoint of one object of a load: batches registered in order, finished in any.

    Whenever the contiguous prefix grows, ``progress`` takes the rows and skipped events of
    this run's prefix on top of those it held at the start, and the newest mark the prefix
    passed (kept when the batches that completed it carried none); then ``on_rows`` hears how
    many rows were added and ``save`` writes the state. That runs under a lock, so each save
    holds a longer prefix than the one before. Skipped events count only once their batch is
    in the prefix, like rows: a resumed run skips again those of the batches after the saved
    mark, so counting them earlier would count them twice.
    """

    def __init__(
        self,
        progress: ObjectProgress,
        *,
        save: Callable[[], Awaitable[None]] | None = None,
        on_rows: Callable[[int], object] | None = None,
    ) -> None:
        self.progress = progress
        self.tracker = PrefixTracker()
        self._rows_before = progress.rows
        self._skipped_before = progress.skipped
        self._save = save
        self._on_rows = on_rows
        self._lock = anyio.Lock()

    @property
    def rows(self) -> int:
        """Rows this run applied in the prefix (skipped oversize events included)."""
        return self.tracker.rows

    @property
    def skipped(self) -> int:
        """Events this run skipped in the prefix (see the class docstring)."""
        return self.tracker.skipped

    @property
    def confirmed(self) -> int:
        """Rows of every batch this run finished, whatever the order: what the server has
        applied (a stopped delete's count), where ``rows`` is what a resume may skip."""
        return self.tracker.confirmed

    def register(self, seq: int, mark: Mark | None, rows: int) -> None:
        self.tracker.register(seq, mark, rows)

    def skip(self, seq: int) -> None:
        """One event of batch ``seq`` was skipped (recorded in the error file, not written)."""
        self.tracker.skip(seq)

    async def finished(self, seq: int) -> None:
        async with self._lock:
            before = self.tracker.rows
            advanced, mark = self.tracker.finish(seq)
            if not advanced:
                return
            self.progress.rows = self._rows_before + self.tracker.rows
            self.progress.skipped = self._skipped_before + self.tracker.skipped
            if mark is not None:
                self.progress.mark = mark
            if self._on_rows is not None:
                self._on_rows(self.tracker.rows - before)
            if self._save is not None:
                await self._save()
