"""Insert workers: bounded concurrency, bytes in flight, 413 splitting, oversize events.

    producer --submit()--> bounded stream (``workers`` slots) --> ``workers`` insert tasks
                                                                   |
                                   batch.ledger.finished(seq) <---+ (checkpoint, in order)

``submit`` waits for room twice: for bytes (at most ``max_bytes_in_flight`` encoded bytes
between the producer and the server; one batch larger than that still goes alone) and for a
stream slot. Retries on 429/5xx/connection errors are the API client's, the one retry policy.
A 413 splits the batch in half and sends both halves. A single event the server still
refuses, or one the batcher already knew was too big, is an *oversize* event: it goes alone
through the overflow route the official SDKs use (:mod:`pipeline.load.overflow`), as one
batch like any other for the checkpoint. Where the server has no such route (or refuses the
event there), it stops the run with an error naming its id, size and the limit, or with
``--on-error skip`` is written to the error file (one JSON line with the event itself, so
nothing is silently dropped) and counted. The comments of the rows a request wrote follow it,
as the ``/logs3`` comment rows the SDKs' ``log_feedback`` sends (``transform.comment_rows``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from pipeline.api.client import BadRequestError, BraintrustClient
from pipeline.common import defaults, jsoncodec
from pipeline.common.errors import ApiError, BtpipeError, first_error
from pipeline.load.batcher import Batch, Batcher, Item, request_body
from pipeline.load.errorlog import ErrorLog
from pipeline.load.overflow import API_VERSION, OverflowRefused, OverflowSender, object_ids

OnError = Literal["fail", "skip"]
BAD_REQUEST = 400
PAYLOAD_TOO_LARGE = 413
_EVENT_INDEX = re.compile(r"\bevents\[(\d+)\]")
#: Bytes of a ``/logs3`` body besides its rows.
_LOGS3_ENVELOPE = 40


async def request_limit(client: BraintrustClient, flag: int | None) -> int:
    """Largest request body to build: ``--max-batch-bytes``, capped by the server's
    ``logs3_payload_max_bytes`` when it reports one."""
    try:
        info = await client.get_json("/version")
    except ApiError:
        info = None
    server = info.get("logs3_payload_max_bytes") if isinstance(info, dict) else None
    limits = [v for v in (flag, server) if isinstance(v, int) and v > 0]
    return min(limits) if limits else defaults.FALLBACK_REQUEST_BYTES


@dataclass(frozen=True)
class InsertOptions:
    workers: int = defaults.LOAD_WORKERS.default
    max_bytes_in_flight: int = defaults.MAX_INFLIGHT_MB.default * defaults.MB
    on_error: OnError = defaults.ON_ERROR.default


@dataclass(frozen=True)
class InsertStatistics:
    batches: int
    rows: int
    splits: int
    skipped: int
    overflowed: int  # oversize events written through the overflow route
    comments: int = 0  # comments given to the rows written (``/logs3`` comment rows)
    comments_skipped: int = 0  # comments over the request limit, in the error file instead


class ByteBudget:
    """A semaphore counted in bytes; a request larger than the budget waits for an empty one.

    ``release`` is plain code, not a coroutine: a worker stopped by Ctrl-C returns its bytes
    in a ``finally`` inside a cancelled scope, where anything awaited (a lock, a condition)
    would be cancelled or waited on forever, the bytes never returned, and the cancellation
    retried on every turn of the event loop meanwhile."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.in_flight = 0
        self._freed = anyio.Event()

    async def acquire(self, nbytes: int) -> None:
        while self.in_flight and self.in_flight + nbytes > self.limit:
            await self._freed.wait()
        self.in_flight += nbytes

    def release(self, nbytes: int) -> None:
        self.in_flight -= nbytes
        self._freed.set()
        self._freed = anyio.Event()


class InsertPool:
    """Runs ``workers`` insert tasks for the duration of ``run(produce)``."""

    def __init__(
        self,
        client: BraintrustClient,
        options: InsertOptions,
        *,
        max_request_bytes: int,
        error_log: ErrorLog | None = None,
    ) -> None:
        if options.on_error == "skip" and error_log is None:
            raise ValueError("--on-error skip needs an error log")
        self.client = client
        self.options = options
        self.max_request_bytes = max_request_bytes
        self.error_log = error_log
        self._budget = ByteBudget(options.max_bytes_in_flight)
        self._overflow = OverflowSender(client)
        self._send: MemoryObjectSendStream[Batch] | None = None
        self._batches = self._rows = self._splits = self._comments = self._comments_skipped = 0

    def statistics(self) -> InsertStatistics:
        skipped = self.error_log.count if self.error_log else 0
        return InsertStatistics(
            self._batches,
            self._rows,
            self._splits,
            skipped - self._comments_skipped,
            self._overflow.sent,
            self._comments,
            self._comments_skipped,
        )

    async def run(self, produce: Callable[[], Awaitable[None]]) -> None:
        """Start the workers, run ``produce`` (which calls :meth:`submit`), drain, stop."""
        try:
            await self._run(produce)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    async def _run(self, produce: Callable[[], Awaitable[None]]) -> None:
        send, receive = anyio.create_memory_object_stream[Batch](max(1, self.options.workers))
        async with anyio.create_task_group() as tg:
            async with receive:
                for _ in range(max(1, self.options.workers)):
                    tg.start_soon(self._worker, receive.clone())
            async with send:
                self._send = send
                try:
                    await produce()
                finally:
                    self._send = None

    async def submit(self, batch: Batch) -> None:
        """Queue ``batch``; waits while the workers or the byte budget are full."""
        if self._send is None:
            raise RuntimeError("submit() outside InsertPool.run()")
        batch.ledger.register(batch.seq, batch.mark, sum(item.counted for item in batch.items))
        await self._budget.acquire(batch.nbytes)
        await self._send.send(batch)

    async def _worker(self, receive: MemoryObjectReceiveStream[Batch]) -> None:
        async with receive:
            async for batch in receive:
                try:
                    await self._apply(batch)
                finally:
                    self._budget.release(batch.nbytes)
                await batch.ledger.finished(batch.seq)

    async def _apply(self, batch: Batch) -> None:
        first = batch.items[0]
        if first.refused is not None:
            await self._give_up(batch, first, f"event {first.id!r} at {first.where} {first.refused}")
        elif batch.oversize:
            limit = f"the request limit of {self.max_request_bytes:,} bytes"
            await self._oversize(batch, first, limit)
        else:
            await self._insert(batch, batch.items)
        self._batches += 1

    async def _insert(self, batch: Batch, items: list[Item]) -> None:
        try:
            await self.client.post_raw(f"{batch.path}/insert", request_body(items))
        except ApiError as exc:
            if exc.status == BAD_REQUEST:
                raise _name_the_event(exc, items) from None
            if exc.status != PAYLOAD_TOO_LARGE:
                raise
            if len(items) == 1:
                await self._oversize(batch, items[0], "what the server accepts in one request (HTTP 413)")
                return
            self._splits += 1
            half = len(items) // 2
            await self._insert(batch, items[:half])
            await self._insert(batch, items[half:])
            return
        self._rows += len(items)
        await self._comment(batch, items)

    async def _comment(self, batch: Batch, items: list[Item]) -> None:
        """Give the rows just written the comments their sources have: ``/logs3`` comment rows
        (``transform.comment_rows``) with the destination's object ids, in requests within the
        request limit. Each keeps its entry's id, so sending it again replaces it."""
        if not any(item.comments or item.merges for item in items):
            return
        ids = object_ids(batch.path)
        encoded: list[tuple[bytes, bool]] = []  # each row, and whether it is a comment
        for item in items:
            for row in (*item.merges, *item.comments):
                data = jsoncodec.dumps({**ids, **row})
                if len(data) + _LOGS3_ENVELOPE > self.max_request_bytes:
                    await self._comment_too_big(item, row["id"], data)
                else:
                    encoded.append((data, "comment" in row))
        if not encoded:
            return
        start, size = 0, 0
        for end, (data, _) in enumerate(encoded):
            if end > start and size + len(data) + _LOGS3_ENVELOPE > self.max_request_bytes:
                await self._post_comments(encoded[start:end])
                start, size = end, 0
            size += len(data) + 1
        await self._post_comments(encoded[start:])

    async def _comment_too_big(self, item: Item, comment_id: str, data: bytes) -> None:
        """A comment over the request limit: stop the run naming it, or with ``--on-error skip``
        record it in the error file (its row stays written) and go on."""
        where = f"{item.where}, comment {comment_id}"
        reason = (
            f"the comment {comment_id!r} on event {item.id!r} at {item.where} is {len(data):,} bytes "
            f"encoded, more than the request limit of {self.max_request_bytes:,} bytes"
        )
        if self.options.on_error != "skip" or self.error_log is None:
            raise BtpipeError(
                f"{reason}; re-run with --on-error skip to record it in an error file and go on"
            )
        await self.error_log.record(Item(data, comment_id, where), reason)
        self._comments_skipped += 1

    async def _post_comments(self, rows: list[tuple[bytes, bool]]) -> None:
        body = b'{"rows":[' + b",".join(r for r, _ in rows) + b'],"api_version":' + str(API_VERSION).encode() + b"}"  # fmt: skip
        await self.client.post_raw("/logs3", body)
        self._comments += sum(comment for _, comment in rows)

    async def _oversize(self, batch: Batch, item: Item, limit: str) -> None:
        """Send ``item`` through the overflow route; where it cannot go, fail or skip it."""
        try:
            await self._overflow.send(batch.path, item.data)
        except OverflowRefused as refused:
            why = refused.reason
        else:
            self._rows += 1
            await self._comment(batch, [item])
            return
        reason = (
            f"event {item.id!r} at {item.where} is {len(item.data):,} bytes encoded, more than {limit}, "
            f"and {why}"
        )
        await self._give_up(batch, item, reason)

    async def _give_up(self, batch: Batch, item: Item, reason: str) -> None:
        """An event that cannot be written: stop the run, or with ``--on-error skip`` record it
        in the error file and count it in its batch (so the checkpoint counts it once)."""
        if self.options.on_error != "skip" or self.error_log is None:
            raise BtpipeError(
                f"{reason}; re-run with --on-error skip to record it in an error file and go on"
            )
        await self.error_log.record(item, reason)
        batch.ledger.skip(batch.seq)


def _name_the_event(exc: ApiError, items: list[Item]) -> ApiError:
    """A 400 naming ``events[i]`` of the request, as one naming that event's id and where it
    came from (file and line, or page row), so the user can find the row to fix."""
    match = _EVENT_INDEX.search(str(exc))
    if match is None or int(match.group(1)) >= len(items):
        return exc
    item = items[int(match.group(1))]
    return BadRequestError(f"event {item.id!r} at {item.where} was refused: {exc}", exc.status)


async def feed(
    pool: InsertPool, batcher: Batcher, chunks: AsyncIterator[list[Item]], *, whole_chunks: bool = False
) -> None:
    """Batch every item of ``chunks`` and submit the batches in order, the partial one last.
    ``whole_chunks``: each chunk's last batch goes out before the next chunk is asked for
    (else a full batch waits in the batcher for the next item)."""
    async for items in chunks:
        for item in items:
            for batch in batcher.add(item):
                await pool.submit(batch)
        if whole_chunks:
            for batch in batcher.flush():
                await pool.submit(batch)
    for batch in batcher.flush():
        await pool.submit(batch)
