"""Sinks hosted in worker processes, so encoding Parquet does not compete for the GIL.

Decoding a page and building its Arrow columns is CPU work in Python; in the export's own
process it would take turns with the event loop that fetches the next pages. A
``WorkerPool`` starts a few processes (``spawn``, so no lock held by another thread is
inherited) that each host the sinks assigned to them. Every call of a ``RemoteSink`` goes to
the one process that holds its sink, so one range's pages are written in order. Pages travel
through shared-memory slots (one copy in, one out; a pipe costs several and wakes both
processes for every 64 KiB), and only the ``FileInfo`` records of published files come back.
A worker is handed two pages at a time; the other ranges wait holding their own page only,
so shared memory stays at two slots per worker (a container's ``/dev/shm`` is often 64 MB).

Workers ignore Ctrl-C (the main process decides how to stop and aborts the sinks it opened)
and exit on their own when the main process dies, leaving only temporary files, which the
next run removes.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import itertools
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.shared_memory import SharedMemory
from types import TracebackType
from typing import Any, Self, TypeVar

from pipeline.common.errors import BtpipeError
from pipeline.common.manifest import FileInfo
from pipeline.common.storage import Retries, Storage, open_storage
from pipeline.sinks.base import ClosingSink, Sink, close_or_abort

#: Builds a sink in the worker from the worker's storage; must pickle (a module-level function,
#: or ``functools.partial`` of one).
SinkFactory = Callable[[Storage], Sink]
T = TypeVar("T")
_MIN_SLOT_BYTES = 4 * 2**20
#: Pages handed to one worker at once: the one it encodes and the next, ready when it is done.
#: Ranges beyond that wait holding only their own page, not a shared-memory copy of it too.
PAGES_PER_WORKER = 2
GC_YOUNG_THRESHOLD = 50_000


def parquet_sink(storage: Storage, **options: Any) -> Sink:
    """A ``ParquetSink``; as a factory it pickles without importing pyarrow in the main process."""
    from pipeline.sinks.parquet import ParquetSink

    return ParquetSink(storage, **options)


# -- the worker side -------------------------------------------------------------------------
_storage: Storage | None = None
_sinks: dict[int, Sink] = {}
_slots: dict[int, SharedMemory] = {}  # slot number -> this worker's mapping of it


def _start_worker(storage_url: str, retries: Retries | None, parent: int) -> None:
    global _storage
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pipeline.common.memory import keep_memory_flat, keep_numpy_out

    keep_numpy_out()
    keep_memory_flat()
    _storage = open_storage(storage_url, retries=retries)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _ready(module: str) -> None:
    """Import ``module`` now, while the main process is still planning.

    Then the imported objects (pyarrow's alone are about 100,000) leave the garbage
    collector's view, and young objects are collected less often: a page makes thousands of
    short-lived lists and dicts without cycles, and with the default thresholds a full
    collection walked every long-lived object about once per page."""
    __import__(module)
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)


def _open(sink_id: int, factory: SinkFactory) -> None:
    assert _storage is not None
    _sinks[sink_id] = factory(_storage)


def _write_page(sink_id: int, slot: int, name: str, size: int) -> None:
    mapped = _slots.get(slot)
    if mapped is None or mapped.name != name:  # new, or grown (a new block under a new name)
        if mapped is not None:
            mapped.close()
        mapped = _slots[slot] = SharedMemory(name=name)
    assert mapped.buf is not None
    _sinks[sink_id].write_page(bytes(mapped.buf[:size]))


def _write_page_bytes(sink_id: int, page: bytes) -> None:
    _sinks[sink_id].write_page(page)


def _flush(sink_id: int) -> list[FileInfo]:
    return _sinks[sink_id].flush()


def _close(sink_id: int) -> list[FileInfo]:
    return close_or_abort(_sinks.pop(sink_id))


def _abort(sink_id: int) -> None:
    sink = _sinks.pop(sink_id, None)
    if sink is not None:
        sink.abort()


# -- the main side -----------------------------------------------------------------------------
class WorkerPool:
    """``processes`` worker processes for sinks over one storage root."""

    def __init__(
        self,
        processes: int,
        storage_url: str,
        *,
        preload: str = "pipeline.sinks.parquet",
        retries: Retries | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("a worker pool needs at least one process")
        context = multiprocessing.get_context("spawn")
        self._executors = [
            ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=_start_worker,
                initargs=(storage_url, retries, os.getpid()),
            )
            for _ in range(processes)
        ]
        self._ids = itertools.count()
        self._slot_numbers = itertools.count()
        self._free: list[tuple[int, SharedMemory | None]] = []
        self._all: dict[int, SharedMemory] = {}
        self._slot_lock = threading.Lock()
        self._rooms = [threading.BoundedSemaphore(PAGES_PER_WORKER) for _ in self._executors]
        for executor in self._executors:  # start the processes and their imports right away
            executor.submit(_ready, preload)

    def take_slot(self, size: int) -> tuple[int, SharedMemory]:
        """A shared-memory block of at least ``size`` bytes, for one call; ``give_slot`` it back.
        OSError when no shared memory can be reserved."""
        with self._slot_lock:
            number, block = self._free.pop() if self._free else (next(self._slot_numbers), None)
        try:
            if block is None or block.size < size:  # a new slot, or one too small for this page
                if block is not None:
                    with self._slot_lock:
                        del self._all[number]
                    _release(block)
                    block = None
                block = _reserved_block(max(_MIN_SLOT_BYTES, size + size // 4))
                with self._slot_lock:
                    self._all[number] = block
        except BaseException:
            self.give_slot(number, None)  # the number is reused; its block is made next time
            raise
        return number, block

    def give_slot(self, number: int, block: SharedMemory | None) -> None:
        with self._slot_lock:
            self._free.append((number, block))

    def open(self, factory: SinkFactory) -> RemoteSink:
        """A sink built by ``factory`` in the next worker (round robin). Blocks."""
        sink_id = next(self._ids)
        worker = sink_id % len(self._executors)
        sink = RemoteSink(self, self._executors[worker], self._rooms[worker], sink_id)
        sink.call(_open, factory)
        return sink

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=True)
        for block in self._all.values():
            _release(block)
        self._all.clear()
        self._free.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _reserved_block(size: int) -> SharedMemory:
    """A new shared-memory block whose pages exist now: a block made with ``ftruncate`` alone
    has them only on paper, and copying into it when the shared-memory filesystem is full
    kills the process with SIGBUS instead of raising an error. A block beyond the file size
    limit (``ulimit -f``) is refused here: ``SharedMemory`` would fail to size it and then
    unregister a name it never registered, which its tracker process reports as tracebacks."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size > limit:
        raise OSError(errno.EFBIG, f"a shared-memory block of {size} bytes is over the file size limit")
    block = SharedMemory(create=True, size=size)
    fd = getattr(block, "_fd", -1)
    if fd >= 0 and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            _release(block)
            raise
    return block


def _release(block: SharedMemory) -> None:
    block.close()
    with contextlib.suppress(FileNotFoundError):
        block.unlink()


class RemoteSink(ClosingSink):
    """A ``Sink`` whose calls run in a worker process; every method blocks until it has."""

    def __init__(
        self, pool: WorkerPool, executor: ProcessPoolExecutor, room: threading.Semaphore, sink_id: int
    ) -> None:
        self._pool = pool
        self._executor = executor
        self._room = room  # pages given to this sink's worker at once
        self._id = sink_id
        self._closed = False

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return self._executor.submit(fn, self._id, *args).result()
        except BrokenProcessPool as exc:
            raise BtpipeError("a worker process encoding the export stopped unexpectedly") from exc

    def write_page(self, page: bytes, rows: int | None = None) -> None:
        with self._room:
            try:
                number, block = self._pool.take_slot(len(page))
            except OSError:  # no shared memory to be had (a small /dev/shm): send the bytes instead
                self.call(_write_page_bytes, page)
                return
            try:
                assert block.buf is not None
                block.buf[: len(page)] = page
                self.call(_write_page, number, block.name, len(page))
            finally:
                self._pool.give_slot(number, block)

    def flush(self) -> list[FileInfo]:
        return self.call(_flush)

    def close(self) -> list[FileInfo]:
        if self._closed:
            return []
        self._closed = True
        return self.call(_close)

    def abort(self) -> None:
        """Discard the unpublished part in the worker; a worker already gone has nothing to discard."""
        if self._closed:
            return
        self._closed = True
        try:
            self.call(_abort)
        except (BtpipeError, RuntimeError):  # RuntimeError: the pool was already shut down
            pass
