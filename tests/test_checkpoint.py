"""The ledger moves an object's progress only over the contiguous prefix of finished batches,
saving after each advance, and a resumed run adds to what the saved progress held."""

from __future__ import annotations

import random

import anyio
from hypothesis import given
from hypothesis import strategies as st

from pipeline.common.checkpoint import Ledger
from pipeline.common.state import FilePosition, Mark, ObjectProgress


def batch_mark(seq: int) -> Mark | None:
    """Every third batch carries no mark (a migration page split over several batches)."""
    return None if seq % 3 == 1 else FilePosition("f", seq)


def prefix(done: set[int]) -> int:
    """How many batches ``0, 1, 2, ...`` are all in ``done``."""
    count = 0
    while count in done:
        count += 1
    return count


@given(
    st.integers(1, 30),
    st.randoms(),
    st.integers(0, 100),
    st.integers(0, 5),
    st.none() | st.builds(FilePosition, st.just("f"), st.integers(-1, 0)),
)
def test_ledger_advances_over_the_prefix_and_saves_each_advance(
    count: int, rnd: random.Random, rows_before: int, skipped_before: int, mark_before: FilePosition | None
) -> None:
    progress = ObjectProgress("D", rows=rows_before, mark=mark_before, skipped=skipped_before)
    saves: list[ObjectProgress] = []
    added: list[int] = []

    async def save() -> None:
        saves.append(ObjectProgress.from_json(progress.to_json()))

    async def scenario() -> None:
        ledger = Ledger(progress, save=save, on_rows=added.append)
        for seq in range(count):
            ledger.register(seq, batch_mark(seq), rows=seq + 1)
        order = list(range(count))
        rnd.shuffle(order)
        done: set[int] = set()
        for seq in order:
            if seq % 5 == 4:
                ledger.skip(seq)  # an event of this batch went to the error file
            prefix_before = prefix(done)
            done.add(seq)
            saved_before = len(saves)
            await ledger.finished(seq)
            applied_batches = prefix(done)
            applied = sum(s + 1 for s in range(applied_batches))
            assert ledger.rows == applied and progress.rows == rows_before + applied
            skipped = sum(1 for s in range(applied_batches) if s % 5 == 4)  # only those in the prefix
            assert ledger.skipped == skipped and progress.skipped == skipped_before + skipped
            marked = [s for s in range(applied_batches) if batch_mark(s) is not None]
            assert progress.mark == (batch_mark(marked[-1]) if marked else mark_before)
            if applied_batches > prefix_before:
                assert len(saves) == saved_before + 1 and saves[-1] == progress
            else:
                assert len(saves) == saved_before
        assert ledger.tracker.pending == 0
        assert progress.skipped == skipped_before + ledger.skipped

    anyio.run(scenario)
    assert sum(added) == sum(range(1, count + 1))
    assert [s.rows for s in saves] == sorted({s.rows for s in saves})  # each save a longer prefix


def test_a_ledger_without_save_only_counts() -> None:
    progress = ObjectProgress("D")

    async def scenario() -> Ledger:
        ledger = Ledger(progress)
        ledger.register(0, "c1", 3)
        ledger.register(1, None, 2)
        await ledger.finished(1)
        assert (ledger.rows, progress.rows, progress.mark) == (0, 0, None)
        await ledger.finished(0)
        return ledger

    ledger = anyio.run(scenario)
    assert (ledger.rows, progress.rows, progress.cursor) == (5, 5, "c1")


@given(st.integers(1, 30), st.randoms())
def test_confirmed_counts_every_finished_batch_whatever_the_order(n: int, rng: random.Random) -> None:
    """``confirmed``: the rows of every batch finished, in the prefix or beyond it (what a
    stopped delete has deleted), while ``rows`` waits for the prefix (what a resume may skip)."""
    order = list(range(n))
    rng.shuffle(order)
    sizes = [seq % 4 + 1 for seq in range(n)]

    async def scenario() -> None:
        ledger = Ledger(ObjectProgress("D"))
        for seq in range(n):
            ledger.register(seq, batch_mark(seq), sizes[seq])
        done: set[int] = set()
        for seq in order:
            await ledger.finished(seq)
            done.add(seq)
            assert ledger.confirmed == sum(sizes[s] for s in done)
            assert ledger.rows == sum(sizes[: prefix(done)])

    anyio.run(scenario)
