"""Progress on long work: one line per task on stderr, redrawn twice a second.

Drawn only when stderr is a terminal and ``--quiet`` is off; otherwise the counters are still
kept (the ``--json`` summary reads them) and nothing is printed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

import anyio

T = TypeVar("T")


@dataclass
class Task:
    label: str
    total: int | None
    done: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def advance(self, count: int, nbytes: int = 0) -> None:
        self.done += count
        self.bytes += nbytes

    def finish(self) -> None:
        self.finished = time.monotonic()

    def render(self) -> str:
        elapsed = max((self.finished or time.monotonic()) - self.started, 1e-6)
        rate = self.done / elapsed
        mbps = self.bytes / elapsed / 1e6
        if self.total:
            pct = min(100.0, 100.0 * self.done / self.total)
            bar = "#" * int(pct / 5)
            left = (self.total - self.done) / rate if rate > 0 and self.finished is None else 0.0
            head = f"[{bar:<20}] {pct:5.1f}% {self.done:,}/{self.total:,} rows"
            tail = "done" if self.finished else f"ETA {left:,.0f}s"
        else:
            head = f"{self.done:,} rows"
            tail = "done" if self.finished else ""
        return f"{self.label[:32]:<32} {head}  {rate:,.0f} rows/s  {mbps:,.1f} MB/s  {tail}"


class Progress:
    """A set of tasks and an optional redraw loop; use ``async with progress.running():``."""

    def __init__(self, *, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.tasks: list[Task] = []
        self._drawn_lines = 0

    def add(self, label: str, total: int | None) -> Task:
        task = Task(label, total)
        self.tasks.append(task)
        return task

    def draw(self) -> None:
        if not self.enabled:
            return
        out = self.stream
        if self._drawn_lines:
            out.write(f"\x1b[{self._drawn_lines}F")
        for task in self.tasks:
            out.write("\x1b[2K" + task.render() + "\n")
        out.flush()
        self._drawn_lines = len(self.tasks)

    async def redraw_forever(self, interval: float = 0.5) -> None:
        while True:
            self.draw()
            await anyio.sleep(interval)

    async def around(self, body: Callable[[], Awaitable[T]]) -> T:
        """Run ``body`` while the display redraws; draw the final state once it returns."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.redraw_forever)
            result = await body()
            tg.cancel_scope.cancel()
        self.draw()
        return result
