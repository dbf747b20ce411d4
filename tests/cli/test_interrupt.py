"""Ctrl-C says whether running the command again resumes it, and exits 5 either way."""

from __future__ import annotations

import pytest

from pipeline.cli.common import run_async
from pipeline.common.errors import EXIT_INTERRUPTED


async def _interrupted() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("resumable", "said"),
    [(True, "state saved, re-run the same command to resume"), (False, "it keeps no state")],
)
def test_an_interrupt_says_whether_a_rerun_resumes(
    capsys: pytest.CaptureFixture[str], resumable: bool, said: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_async(_interrupted, resumable=resumable)
    assert stopped.value.code == EXIT_INTERRUPTED
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("btpipe: interrupted;") and said in line


def test_an_interrupt_after_the_work_is_done_leaves_its_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the event loop shuts down (a worker pool or a local Ray stopping), after the
    command's work returned: the work is done and its state already removed as complete."""
    import anyio

    real_run = anyio.run

    def run_then_interrupted(fn: object, *args: object) -> object:
        real_run(fn, *args)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    async def work() -> str:
        return "summary"

    monkeypatch.setattr(anyio, "run", run_then_interrupted)
    assert run_async(work) == "summary"
