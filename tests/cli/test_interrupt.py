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
