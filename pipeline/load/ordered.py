"""Applying one object's input in order: one run after another, tombstones as deletes.

A restore reads an object's chain (:mod:`pipeline.sources.inputs`), whose runs may each hold a
version of the same row, and the insert endpoint keeps whichever request it applied last,
whatever the versions. Within one run each id appears once, so its batches go out
concurrently; between runs there is a barrier: every batch of a run is acknowledged before the
next run's first batch is sent (:func:`feed_runs`). So the versions of an id land in the order
the runs read them, whatever the latency of each request, and nothing is held per id in
memory: memory stays that of the batches in flight (sending only each id's newest version
instead would need an index of every id of the object).

A tombstone file's ids (:mod:`pipeline.export.tombstones`) become ``_object_delete`` events in
their run's place, after its rows (:func:`delete_item`); a later run holding the id again
writes it again.

Comments need one more step. A server keeps a row's comments when the row is written again
(they are events of their own) and drops them only with the row, so a row deleted and written
again under its id between two runs, which lost its comments at the source, would keep the
old ones in the copy. A :class:`CommentLedger` remembers which comments the restore gave each
row; before a later run's rows go out, the rows whose new version lacks one of them are deleted
(:func:`renewed_deletes`, applied as a run of their own), and the new version then brings
exactly the comments it lists.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio

from pipeline.common import jsoncodec
from pipeline.common.state import FilePosition
from pipeline.common.storage import Storage, location
from pipeline.load.batcher import Batcher, Item
from pipeline.load.insert import InsertPool, feed
from pipeline.load.transform import comment_rows
from pipeline.sources import SourceRow, iter_rows
from pipeline.sources.inputs import InputObject

_LOOKUP_CHUNK = 500  # ids looked up in the ledger at a time (under SQLite's variable limit)


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


def delete_item(row_id: str, where: str, mark: FilePosition | None, *, counted: bool = True) -> Item:
    """The event deleting ``row_id``, read at ``where`` (a tombstone file's line; ``counted``
    False: a delete the restore adds, of the row read there)."""
    return Item(jsoncodec.dumps({"id": row_id, "_object_delete": True}), row_id, where, mark, counted=counted)


def comment_ids(row: dict[str, Any]) -> frozenset[str]:
    """The ids of the comments a restore gives ``row`` (``transform.comment_rows``)."""
    return frozenset(comment["id"] for comment in comment_rows(row))


class CommentLedger:
    """The comments a restore gave each row of one object (by id), in a temporary SQLite
    database on disk, so memory stays flat however many there are (blocking; one object's
    runs use it one after another). Rows without comments have no entry."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False)  # "": a private file, deleted on close
        self._db.execute(
            "CREATE TABLE given (row_id TEXT, comment_id TEXT, PRIMARY KEY (row_id, comment_id)) WITHOUT ROWID"
        )
        self.empty = True

    def give(self, rows: Iterable[tuple[str, frozenset[str]]]) -> None:
        """Note each row's comments as those of its new version (replacing what it had; of
        an id given twice, as in a file joining two exports, the later version)."""
        newest = dict(rows)
        with self._db:
            self._db.executemany("DELETE FROM given WHERE row_id = ?", ((row_id,) for row_id in newest))
            self._db.executemany(
                "INSERT INTO given VALUES (?, ?)", ((r, c) for r, ids in newest.items() for c in ids)
            )
        self.empty = self.empty and not any(newest.values())

    def forget(self, row_ids: Iterable[str]) -> None:
        """The rows were deleted: they have no comments any more."""
        with self._db:
            self._db.executemany("DELETE FROM given WHERE row_id = ?", ((row_id,) for row_id in row_ids))

    def lacking(self, versions: list[tuple[str, frozenset[str]]]) -> list[str]:
        """The ids among ``versions`` (id, comment ids of the new version) whose new version
        lacks a comment given to the row before."""
        found: set[str] = set()
        new = dict(versions)  # of an id given twice, the later version
        ids = list(new)
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            given = self._db.execute(f"SELECT row_id, comment_id FROM given WHERE row_id IN ({marks})", chunk)
            found.update(row_id for row_id, comment_id in given.fetchall() if comment_id not in new[row_id])
        return sorted(found)

    def close(self) -> None:
        self._db.close()


def note_given(ledger: CommentLedger, items: list[Item], deletes: bool) -> None:
    """Note in ``ledger`` what ``items`` (about to be sent) give or take from their rows. A
    row written without comments needs no note: if it had some, it was deleted before
    (:func:`renewed_deletes`)."""
    if deletes:
        ledger.forget(item.id for item in items)
    else:
        ledger.give((item.id, frozenset(c["id"] for c in item.comments)) for item in items if item.comments)


def replay_given(ledger: CommentLedger, storage: Storage, obj: InputObject, upto: tuple[str, int]) -> None:
    """Note in ``ledger`` what ``obj``'s rows gave, in order, up to row ``upto`` (file, position)
    included: what a resumed restore sent before it stopped (blocking)."""
    for path in obj.files[: obj.files.index(upto[0]) + 1]:
        for chunk in iter_rows(storage, path, table=obj.table):
            rows = [row for row, _, position in chunk if path != upto[0] or position <= upto[1]]
            ids = [row["id"] for row in rows if isinstance(row.get("id"), str)]
            if path in obj.deletes:
                ledger.forget(ids)
            else:
                ledger.give((row["id"], comment_ids(row)) for row in rows if isinstance(row.get("id"), str))


async def renewed_deletes(
    storage: Storage, obj: InputObject, files: list[str], after: int, ledger: CommentLedger
) -> AsyncIterator[list[Item]]:
    """Deletes of the rows of ``files`` (one run's data files of ``obj``, from the row after
    ``after`` of the first) whose new version lacks a comment the restore gave them before,
    which the ledger then forgets. Nothing is read while the ledger is empty."""
    if ledger.empty:
        return
    for path in files:
        reader = iter_rows(storage, path, table=obj.table)
        while True:
            chunk = await anyio.to_thread.run_sync(next, reader, None)
            if chunk is None:
                break
            skip_to = after if path == files[0] else -1
            items = await anyio.to_thread.run_sync(_renewed, ledger, storage, chunk, skip_to)
            if items:
                yield items


def _renewed(ledger: CommentLedger, storage: Storage, chunk: list[SourceRow], skip_to: int) -> list[Item]:
    where: dict[str, str] = {}
    versions: list[tuple[str, frozenset[str]]] = []
    for row, path, position in chunk:
        row_id = row.get("id")
        if position > skip_to and isinstance(row_id, str):
            where[row_id] = f"{location(storage, path)}:{position}"
            versions.append((row_id, comment_ids(row)))
    lacking = ledger.lacking(versions)
    ledger.forget(lacking)
    return [delete_item(row_id, where[row_id], None, counted=False) for row_id in lacking]
