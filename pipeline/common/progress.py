"""Counters for long work: rows, bytes and retries per task, read as small frozen snapshots.

A stage counts (``task = progress.add(label, total)``, then ``task.advance(rows, nbytes)`` and
``task.finish()``); displays and tests read :meth:`Progress.statistics`. Nothing here draws or
prints: the command line decides whether and how to show the counters
(:mod:`pipeline.cli.display`), so a stage runs the same under a terminal, cron or a test, and
the ``--json`` summary and the display can never disagree about what was counted.

Counters are only touched from the event loop, so they need no lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TaskStatistics:
    """One task at one moment. ``resumed`` rows were done by an earlier run: they count in
    ``done`` but not in the rate, so a resumed run's ETA is not flattered by them."""

    label: str
    total: int | None
    done: int
    resumed: int
    bytes: int
    seconds: float
    finished: bool

    @property
    def rate(self) -> float:
        """Rows per second done by this run, since the task was added."""
        return (self.done - self.resumed) / self.seconds if self.seconds > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        """Share of ``total`` done (at most 1), or None when the total is unknown."""
        if self.total is None:
            return None
        return min(1.0, self.done / self.total) if self.total else 1.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None when finished, without a total or a rate."""
        rate = self.rate
        if self.finished or self.total is None or rate <= 0:
            return None
        return max(0, self.total - self.done) / rate


@dataclass(frozen=True)
class ProgressStatistics:
    """Every task at one moment, plus the retries of the clients being watched."""

    tasks: tuple[TaskStatistics, ...]
    retries: int
    seconds: float

    @property
    def rows(self) -> int:
        return sum(t.done for t in self.tasks)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tasks)

    @property
    def active(self) -> tuple[TaskStatistics, ...]:
        return tuple(t for t in self.tasks if not t.finished)

    @property
    def finished(self) -> int:
        return sum(t.finished for t in self.tasks)


class Task:
    """Counters of one unit of work (an object being exported or loaded)."""

    def __init__(self, label: str, total: int | None, done: int = 0) -> None:
        self.label = label
        self.total = total
        self._done = self._resumed = done
        self._bytes = 0
        self._started = time.monotonic()
        self._finished: float | None = None

    def advance(self, rows: int, nbytes: int = 0) -> None:
        self._done += rows
        self._bytes += nbytes

    def finish(self) -> None:
        """Mark the task done; the first call fixes its duration."""
        if self._finished is None:
            self._finished = time.monotonic()

    def statistics(self) -> TaskStatistics:
        end = self._finished if self._finished is not None else time.monotonic()
        return TaskStatistics(
            label=self.label,
            total=self.total,
            done=self._done,
            resumed=self._resumed,
            bytes=self._bytes,
            seconds=end - self._started,
            finished=self._finished is not None,
        )


class _Retries(Protocol):
    @property
    def retries(self) -> int: ...


class RetryCounting(Protocol):
    """Anything whose ``statistics()`` counts retries, such as the API client."""

    def statistics(self) -> _Retries: ...


class Progress:
    """The tasks of one command, and the clients whose retries it reports."""

    def __init__(self) -> None:
        self._tasks: list[Task] = []
        self._clients: list[RetryCounting] = []
        self._started = time.monotonic()

    def add(self, label: str, total: int | None, *, done: int = 0) -> Task:
        """A new task; ``done`` rows were already done by an earlier run (a resume)."""
        task = Task(label, total, done)
        self._tasks.append(task)
        return task

    def watch_retries(self, client: RetryCounting) -> None:
        """Count ``client``'s retries in :meth:`statistics` (a client is counted once)."""
        if not any(c is client for c in self._clients):
            self._clients.append(client)

    def statistics(self) -> ProgressStatistics:
        return ProgressStatistics(
            tasks=tuple(t.statistics() for t in self._tasks),
            retries=sum(c.statistics().retries for c in self._clients),
            seconds=time.monotonic() - self._started,
        )
