"""Progress on stderr: a live display on a terminal, a plain line now and then anywhere else.

The counting lives in :mod:`pipeline.common.progress`; this module only reads its snapshots.
On a terminal, rich redraws one line per active task (rows, rate, and an ETA when the total
is known) a few times a second. Anywhere else (cron, CI, a pipe into a log) a redrawn display
is noise, so one plain line every :data:`PLAIN_INTERVAL` seconds says what is done so far,
which shows a long run is moving, and one final line says where the work ended (a run over
before the first line prints none, leaving only its summary or its error).
:class:`pipeline.cli.common.Output` picks the display; ``--quiet`` and ``--json`` get the
silent :class:`Display`. Lines carry labels and counts only, never settings such as the key.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TextIO, TypeVar

import anyio

from pipeline.common.errors import UsageError
from pipeline.common.progress import Progress, ProgressStatistics, TaskStatistics

if TYPE_CHECKING:  # rich is imported by the live display only: a run without a terminal skips it
    from rich.console import RenderableType

T = TypeVar("T")

#: Seconds between plain progress lines when stderr is not a terminal.
PLAIN_INTERVAL = 30.0
#: Environment variable overriding :data:`PLAIN_INTERVAL` (tests use a tiny interval).
INTERVAL_ENV = "BTPIPE_PROGRESS_INTERVAL"
#: Seconds between redraws of the live display.
LIVE_INTERVAL = 0.25


class Display:
    """Shows a :class:`Progress` while a body runs. This base shows nothing; a subclass sets
    ``interval`` and is called with a snapshot at the start, every ``interval`` seconds, and
    once at the end (also when the body fails, so a log shows how far the work got)."""

    interval: float | None = None

    async def around(self, progress: Progress, body: Callable[[], Awaitable[T]]) -> T:
        if self.interval is None:
            return await body()
        interval = self.interval
        completed = False
        self.start(progress.statistics())
        try:
            async with anyio.create_task_group() as tg:

                async def tick() -> None:
                    while True:
                        await anyio.sleep(interval)
                        self.update(progress.statistics())

                tg.start_soon(tick)
                result = await body()
                completed = True
                tg.cancel_scope.cancel()
        finally:
            self.end(progress.statistics(), completed)
        return result

    def start(self, stats: ProgressStatistics) -> None:
        """Called once before the body runs."""

    def update(self, stats: ProgressStatistics) -> None:
        """Called every ``interval`` seconds while the body runs."""

    def end(self, stats: ProgressStatistics, completed: bool) -> None:
        """Called once after the body returned (``completed``) or failed."""


class PlainLines(Display):
    """One line every ``interval`` seconds naming what is done so far, and a final line that
    closes them. A run shorter than one interval prints nothing: its command's summary (or
    its one error line) says all there is to say."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self.shown = False

    def update(self, stats: ProgressStatistics) -> None:
        self._line(f"btpipe: progress after {duration(stats.seconds)}: {describe(stats)}")
        self.shown = True

    def end(self, stats: ProgressStatistics, completed: bool) -> None:
        if self.shown:
            how = "finished" if completed else "stopped"
            self._line(f"btpipe: progress {how} after {duration(stats.seconds)}: {describe(stats)}")

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


class LiveDisplay(Display):
    """rich redraws one line per active task and a totals line; the last drawing stays."""

    interval = LIVE_INTERVAL

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.live = Live(
            console=Console(file=stream),
            auto_refresh=False,  # redrawn from the event loop, so no thread reads the counters
            redirect_stdout=False,  # stdout carries results (--json, verify); leave it alone
        )

    def start(self, stats: ProgressStatistics) -> None:
        self.live.start()
        self.update(stats)

    def update(self, stats: ProgressStatistics) -> None:
        self.live.update(render(stats), refresh=True)

    def end(self, stats: ProgressStatistics, completed: bool) -> None:
        try:
            self.live.update(render(stats, final="finished" if completed else "stopped"), refresh=True)
        finally:
            self.live.stop()


def for_stream(stream: TextIO) -> Display:
    """The live display when ``stream`` is a terminal, plain lines otherwise."""
    if stream.isatty():
        return LiveDisplay(stream)
    return PlainLines(stream, plain_interval())


def plain_interval() -> float:
    """:data:`PLAIN_INTERVAL`, or the seconds in ``$BTPIPE_PROGRESS_INTERVAL``."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return PLAIN_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"{INTERVAL_ENV}={text!r}: expected a number of seconds above 0")
    return seconds


# -- words ---------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h07m``."""
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def size(nbytes: int) -> str:
    """``512 B``, ``3.4 KB``, ``12.0 MB``, ``1.5 GB`` (powers of 1000)."""
    if nbytes < 1000:
        return f"{nbytes} B"
    value = nbytes / 1000
    for unit in ("KB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} GB"


def rows(task: TaskStatistics) -> str:
    return f"{task.done:,}/{task.total:,} rows" if task.total is not None else f"{task.done:,} rows"


def totals(stats: ProgressStatistics) -> str:
    """Tasks done, rows, bytes (when counted) and retries."""
    parts = [f"{stats.finished} of {len(stats.tasks)} tasks done", f"{stats.rows:,} rows"]
    if stats.bytes:
        parts.append(size(stats.bytes))
    parts.append(f"{stats.retries} retries")
    return ", ".join(parts)


def describe(stats: ProgressStatistics) -> str:
    """The totals, then each active task with its rows, share, rate and ETA."""
    running = []
    for task in stats.active:
        parts = [f"{task.label} {rows(task)}"]
        if task.fraction is not None:
            parts.append(f"{100 * task.fraction:.1f}%")
        if task.rate > 0:
            parts.append(f"{task.rate:,.0f} rows/s")
        if task.eta is not None:
            parts.append(f"ETA {duration(task.eta)}")
        running.append(" ".join(parts))
    return "; ".join([totals(stats), *running])


def render(stats: ProgressStatistics, final: str | None = None) -> RenderableType:
    """The live display: a line per active task, then the totals (``final`` names the end)."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(max_width=40, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=30)
    grid.add_column(justify="right")
    grid.add_column(justify="right")
    grid.add_column(justify="right")
    for task in stats.active:
        grid.add_row(
            Text(task.label),
            ProgressBar(
                total=None if task.fraction is None else 1.0, completed=task.fraction or 0.0, width=30
            ),
            Text(rows(task)),
            Text(f"{task.rate:,.0f} rows/s" if task.rate > 0 else ""),
            Text(f"ETA {duration(task.eta)}" if task.eta is not None else ""),
        )
    head = f"{final} after " if final else ""
    return Group(grid, Text(f"{head}{duration(stats.seconds)}: {totals(stats)}", style="dim"))
