"""The page budget: a slot frees one unit however many times, and whichever way, it is released."""

from __future__ import annotations

import anyio
import pytest

from pipeline.export.budget import PageBudget


def test_a_slot_released_twice_frees_one_unit() -> None:
    async def main() -> None:
        budget = PageBudget(2)
        first, second = await budget.acquire(), await budget.acquire()
        assert budget.free == 0
        first.release()
        first.release()
        assert budget.free == 1
        with first:  # leaving the block releases it once more: still nothing
            pass
        assert budget.free == 1
        assert budget.try_acquire() is not None
        assert budget.try_acquire() is None
        second.release()
        assert budget.free == 1

    anyio.run(main)


def test_cancellation_while_holding_a_slot_frees_it() -> None:
    async def main() -> None:
        budget = PageBudget(1)
        holding = anyio.Event()

        async def hold() -> None:
            with await budget.acquire():
                holding.set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await holding.wait()
            assert budget.free == 0
            tg.cancel_scope.cancel()
        assert budget.free == 1

    anyio.run(main)


def test_cancellation_while_waiting_for_a_slot_takes_none() -> None:
    async def main() -> None:
        budget = PageBudget(1)
        held = await budget.acquire()
        with anyio.move_on_after(0.05):
            await budget.acquire()
        held.release()
        assert budget.free == 1

    anyio.run(main)


def test_a_budget_has_room_for_a_page() -> None:
    with pytest.raises(ValueError, match="at least one page"):
        PageBudget(0)
