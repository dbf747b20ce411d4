"""Group encoded events into insert requests bounded by row count and by bytes.

Each event is encoded once (:func:`pipeline.load.transform.encode_event`); a request body is
``{"events":[`` + the encoded events joined by ``,`` + ``]}``, so nothing is encoded twice and
the size of a body is known exactly before it is built. The byte bound is the request size
(``logs3_payload_max_bytes`` from ``GET /version``, or ``--max-batch-bytes``). An event whose
body alone would exceed it comes out as a batch of its own marked ``oversize``: never sent
to the insert endpoint, it goes through the overflow route (:mod:`pipeline.load.overflow`), so
only one such event is held per batch, and the checkpoint treats it like any other batch.

Every item may carry a checkpoint ``mark`` (for files: the file and position of the row; for
a migration: the page cursor, on the last row of each page). A batch's mark is the last mark
among its items: once that batch and every batch before it are applied, the mark is durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_HEAD = b'{"events":['
_TAIL = b"]}"
ENVELOPE_BYTES = len(_HEAD) + len(_TAIL)


@dataclass(frozen=True)
class Item:
    """One encoded event, with where it came from (for messages) and an optional mark.
    ``refused`` says why the event cannot be sent at all (see ``transform.encode_checked``):
    it comes out as a batch of its own, which the insert workers report or skip, never send."""

    data: bytes
    id: str
    where: str
    mark: Any = None
    refused: str | None = None
    #: The row's comments, sent after it as ``/logs3`` rows (``transform.comment_rows``).
    comments: tuple[dict[str, Any], ...] = ()
    #: Fields of the row the REST insert does not take, sent after it as a ``/logs3`` merge
    #: row before its comments (``transform.logs3_merges``).
    merges: tuple[dict[str, Any], ...] = ()
    #: Whether the event counts as a row of the input (not one a restore adds of itself).
    counted: bool = True


@dataclass
class Batch:
    """One insert request for one destination (``path`` is ``/v1/<type>/<id>``)."""

    seq: int
    path: str
    items: list[Item]
    nbytes: int
    oversize: bool = False
    ledger: Any = field(default=None, repr=False)

    @property
    def mark(self) -> Any:
        for item in reversed(self.items):
            if item.mark is not None:
                return item.mark
        return None


def request_body(items: list[Item]) -> bytes:
    return _HEAD + b",".join(item.data for item in items) + _TAIL


class Batcher:
    """Accumulates items for one destination; ``add`` returns the batches that became full.

    ``seq`` numbers batches 0, 1, 2, ... in input order, which is the order the checkpoint
    advances in.
    """

    def __init__(self, path: str, *, max_rows: int, max_bytes: int, ledger: Any = None) -> None:
        if max_rows < 1 or max_bytes <= ENVELOPE_BYTES:
            raise ValueError("a batch must allow at least one row and more bytes than its envelope")
        self.path = path
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.ledger = ledger
        self.next_seq = 0
        self._items: list[Item] = []
        self._bytes = ENVELOPE_BYTES

    def add(self, item: Item) -> list[Batch]:
        ready: list[Batch] = []
        size = len(item.data)
        if item.refused is not None:
            ready.extend(self._flush())
            ready.append(self._make([item], ENVELOPE_BYTES + size))
            return ready
        if ENVELOPE_BYTES + size > self.max_bytes:
            ready.extend(self._flush())
            ready.append(self._make([item], ENVELOPE_BYTES + size, oversize=True))
            return ready
        extra = size + (1 if self._items else 0)
        if self._items and (len(self._items) >= self.max_rows or self._bytes + extra > self.max_bytes):
            ready.extend(self._flush())
            extra = size
        self._items.append(item)
        self._bytes += extra
        return ready

    def flush(self) -> list[Batch]:
        """The partial batch, if any (at the end of the input, or of a chunk that must go out whole)."""
        return self._flush()

    def _flush(self) -> list[Batch]:
        if not self._items:
            return []
        batch = self._make(self._items, self._bytes)
        self._items = []
        self._bytes = ENVELOPE_BYTES
        return [batch]

    def _make(self, items: list[Item], nbytes: int, *, oversize: bool = False) -> Batch:
        batch = Batch(self.next_seq, self.path, items, nbytes, oversize, self.ledger)
        self.next_seq += 1
        return batch
