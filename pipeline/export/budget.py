"""The page budget: how many fetched pages an export holds in memory at once, across its ranges.

A page takes a ``Slot`` before it is fetched and gives it back once its sink has written it.
The slot travels with the page, so whichever code drops the page (written, the range ended,
a failure, a cancellation) releases the one unit it holds, and releasing is idempotent: a
slot released on two paths frees one unit, never two, and a slot no path releases would
stall every range once the budget ran dry.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import anyio


class Slot:
    """One unit of a ``PageBudget``; ``release()`` (or leaving ``with slot:``) gives it back once."""

    __slots__ = ("_budget",)

    def __init__(self, budget: anyio.Semaphore) -> None:
        self._budget: anyio.Semaphore | None = budget

    def release(self) -> None:
        """Give the unit back; a second call does nothing."""
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class PageBudget:
    """At most ``pages`` slots out at once; ``acquire`` waits for one, ``try_acquire`` does not."""

    def __init__(self, pages: int) -> None:
        if pages < 1:
            raise ValueError("a page budget needs room for at least one page")
        self.pages = pages
        self._semaphore = anyio.Semaphore(pages)

    @property
    def free(self) -> int:
        """Units not held by any slot."""
        return self._semaphore.value

    async def acquire(self) -> Slot:
        """A slot, once one is free. Cancelled while waiting, it takes nothing."""
        await self._semaphore.acquire()
        return Slot(self._semaphore)

    def try_acquire(self) -> Slot | None:
        """A slot if one is free now, else ``None``."""
        try:
            self._semaphore.acquire_nowait()
        except anyio.WouldBlock:
            return None
        return Slot(self._semaphore)
