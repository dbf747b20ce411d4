"""Sinks hosted in worker processes: pages in order per sink, exact rows, errors, no leftovers."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pipeline.common.errors import BtpipeError
from pipeline.common.storage import is_temp_name, open_storage
from pipeline.sinks.workers import PAGES_PER_WORKER, WorkerPool, parquet_sink
from tests.test_sinks_parquet import canonical, page_of, read_all


def _shared_blocks() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.iterdir()} if shm.is_dir() else set()


def _rows(sink: int, count: int, width: int) -> list[dict[str, Any]]:
    return [{"id": f"s{sink}-{i:05d}", "input": {"text": "é" * width, "i": i}} for i in range(count)]


def write_at_once(
    sinks: dict[int, Any], pages: dict[int, list[list[dict[str, Any]]]]
) -> dict[int, list[Any]]:
    """Each sink's pages written and the sink closed, every sink in a thread of its own,
    all starting together; the files each published."""
    published: dict[int, list[Any]] = {}
    start = threading.Barrier(len(sinks))

    def write(sink: int) -> None:
        start.wait()
        with sinks[sink] as remote:
            for page in pages[sink]:
                remote.write_page(page_of(page))
            published[sink] = remote.close()

    threads = [threading.Thread(target=write, args=(sink,)) for sink in sinks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return published


def test_concurrent_sinks_in_two_workers_write_every_row_in_order(tmp_path: Path) -> None:
    before = _shared_blocks()
    storage = open_storage(str(tmp_path))
    # sink 3 gets pages of about 6 MB, beyond the first shared-memory slots, so slots grow
    pages = {
        sink: [_rows(sink, 40, 20 if sink < 3 else 75_000)[i : i + 10] for i in range(0, 40, 10)]
        for sink in range(4)
    }
    with WorkerPool(2, storage.url) as pool:
        sinks = {
            sink: pool.open(
                partial(parquet_sink, directory=f"s{sink}", object_type="dataset", row_group_rows=15)
            )
            for sink in range(4)
        }
        published = write_at_once(sinks, pages)
    for sink in range(4):
        expected = [row for page in pages[sink] for row in page]
        assert canonical(read_all(storage, [f.path for f in published[sink]])) == canonical(expected)
    assert not [p for p in storage.list_files() if is_temp_name(p)]
    assert not _shared_blocks() - before  # none left behind (other processes may come and go)


def test_ranges_waiting_for_a_busy_worker_do_not_each_hold_a_shared_memory_copy(tmp_path: Path) -> None:
    """Eight sinks in one worker, written at once: the pages waiting for the worker stay with
    their writers, and only the two a worker takes at a time are copied to shared memory."""
    storage = open_storage(str(tmp_path))
    pages = {sink: [_rows(sink, 30, 2_000)[i : i + 10] for i in range(0, 30, 10)] for sink in range(8)}
    with WorkerPool(1, storage.url) as pool:
        sinks = {
            sink: pool.open(partial(parquet_sink, directory=f"s{sink}", object_type="dataset"))
            for sink in range(8)
        }
        published = write_at_once(sinks, pages)
        assert len(pool._all) <= PAGES_PER_WORKER  # the blocks made, kept for reuse until the pool closes
    for sink in range(8):
        expected = [row for page in pages[sink] for row in page]
        assert canonical(read_all(storage, [f.path for f in published[sink]])) == canonical(expected)


def test_errors_in_a_worker_reach_the_caller_and_an_aborted_sink_publishes_nothing(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    with WorkerPool(1, storage.url) as pool:
        sink = pool.open(partial(parquet_sink, directory="d", object_type="dataset", row_group_rows=2))
        with pytest.raises(BtpipeError, match="page is not valid JSONL"), sink:
            sink.write_page(page_of(_rows(0, 3, 5)))
            sink.write_page(b'{"id":"a"}\n[1]\n')
        assert sink.close() == []
    assert storage.list_files() == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nor a temporary file


def test_workers_leave_with_the_pool(tmp_path: Path) -> None:
    before = set(_children())
    pool = WorkerPool(2, open_storage(str(tmp_path)).url)
    workers = set(_children()) - before
    assert len(workers) == 2
    pool.close()
    assert not workers & set(_children())


def _children() -> list[int]:
    """This process's children, but not multiprocessing's resource tracker (it stays)."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            found += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            pass
    return [pid for pid in found if b"resource_tracker" not in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_without_shared_memory_pages_travel_in_the_call(tmp_path: Path, monkeypatch: Any) -> None:
    """A full or tiny /dev/shm: the slot cannot be reserved, and the page goes by pipe instead."""
    from pipeline.sinks import workers

    before = _shared_blocks()
    storage = open_storage(str(tmp_path))
    small, large = _rows(0, 10, 5), _rows(1, 3, 400_000)  # the second page needs a bigger slot
    with WorkerPool(1, storage.url) as pool:
        sink = pool.open(partial(parquet_sink, directory="d", object_type="dataset"))
        sink.write_page(page_of(small))

        def no_room(size: int) -> Any:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(workers, "_reserved_block", no_room)
        sink.write_page(page_of(large))
        published = sink.close()
    assert canonical(read_all(storage, [f.path for f in published])) == canonical(small + large)
    assert not _shared_blocks() - before  # none left behind (other processes may come and go)


def test_a_block_over_the_file_size_limit_is_refused_without_the_trackers_tracebacks() -> None:
    """Under ``ulimit -f`` a shared-memory block cannot be sized: an OSError (the page then
    goes by pipe), and nothing on stderr from the resource tracker."""
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "from pipeline.sinks.workers import _reserved_block\n"
        "try:\n"
        "    _reserved_block(1 << 20)\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.stdout, done.stderr) == (f"refused {errno.EFBIG}\n", "")
