"""Applying one object's input in order: one run after another, tombstones as deletes.

A restore reads an object's chain (:mod:`pipeline.sources.inputs`), whose runs may each hold a
version of the same row, and the insert endpoint keeps whichever request it applied last,
whatever the versions. Within one run each id appears once, so its batches go out
concurrently; between runs there is a barrier: every batch of a run is acknowledged before the
next run's first batch is sent (:func:`feed_runs`). So the versions of an id land in the order
the runs read them, whatever the latency of each request, and nothing is held per id: memory
stays that of the batches in flight (sending only each id's newest version instead would need
an index of every id of the object).

A tombstone file's ids (:mod:`pipeline.export.tombstones`) become ``_object_delete`` events in
their run's place, after its rows (:func:`delete_item`); a later run holding the id again
writes it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio

from pipeline.common import jsoncodec
from pipeline.common.state import FilePosition
from pipeline.load.batcher import Batcher, Item
from pipeline.load.insert import InsertPool, feed


class Barrier:
    """An object's ledger, wrapped to tell when every batch submitted so far is applied.

    The insert workers call ``register`` as a batch is queued and ``finished`` once it is
    applied; anything else is the wrapped ledger's own."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self._open = 0
        self._idle = anyio.Event()
        self._idle.set()

    @classmethod
    def around(cls, batcher: Batcher) -> Barrier:
        """Wrap ``batcher``'s ledger; every batch it makes from now on carries the barrier."""
        barrier = cls(batcher.ledger)
        batcher.ledger = barrier
        return barrier

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def register(self, seq: int, mark: Any, rows: int) -> None:
        if self._open == 0:
            self._idle = anyio.Event()
        self._open += 1
        self._ledger.register(seq, mark, rows)

    async def finished(self, seq: int) -> None:
        await self._ledger.finished(seq)
        self._open -= 1
        if self._open == 0:
            self._idle.set()

    async def settled(self) -> None:
        """Return once no batch is queued or in flight."""
        await self._idle.wait()


async def feed_runs(pool: InsertPool, batcher: Batcher, runs: Iterable[AsyncIterator[list[Item]]]) -> None:
    """Submit the items of each of ``runs`` (one run's files each), waiting after each run
    until all its batches are applied (see the module docstring)."""
    barrier = Barrier.around(batcher)
    for chunks in runs:
        await feed(pool, batcher, chunks)
        await barrier.settled()


def run_spans(files: list[str], runs: dict[str, str], start: int) -> list[range]:
    """The indexes of ``files[start:]``, cut where the run (``runs``, by path) changes; loose
    files, of no run, make one span."""
    spans: list[range] = []
    first = start
    for index in range(start + 1, len(files)):
        if runs.get(files[index]) != runs.get(files[index - 1]):
            spans.append(range(first, index))
            first = index
    if first < len(files):
        spans.append(range(first, len(files)))
    return spans


def delete_item(row_id: str, where: str, mark: FilePosition) -> Item:
    """The event deleting ``row_id``, read at ``where`` (a tombstone file's line)."""
    return Item(jsoncodec.dumps({"id": row_id, "_object_delete": True}), row_id, where, mark)
