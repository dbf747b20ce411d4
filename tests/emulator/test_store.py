"""The emulator's store keeps no more reader connections than reads ran at once."""

from __future__ import annotations

import threading
from pathlib import Path

from pipeline.emulator.store import Store


def test_threads_that_come_and_go_share_the_reader_connections(tmp_path: Path) -> None:
    """The event loop's worker threads end when idle and new ones start: each kept its own
    connection (files and a mapping) open for good, and a long session ran out of them."""
    store = Store(str(tmp_path / "emulator.db"))
    try:
        for _ in range(50):
            reader = threading.Thread(
                target=store.read_sync, args=(lambda conn: conn.execute("SELECT 1").fetchone(),)
            )
            reader.start()
            reader.join()
        assert len(store._readers) == 1
        held = threading.Event()
        release = threading.Event()

        def slow(conn: object) -> None:
            held.set()
            release.wait(10)

        first = threading.Thread(target=store.read_sync, args=(slow,))
        first.start()
        held.wait(10)
        store.read_sync(lambda conn: conn.execute("SELECT 1").fetchone())  # one more while it reads
        release.set()
        first.join()
        assert len(store._readers) == 2
    finally:
        store.close()
