"""Ctrl-C says whether running the command again resumes it, and exits 5 either way."""

from __future__ import annotations

import anyio
import click
import pytest
from click.testing import CliRunner

from pipeline.cli.common import TRACEBACK_VARIABLE, Btpipe, run_async
from pipeline.common.errors import EXIT_FAILED, EXIT_INTERRUPTED


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


def _group_raising(error: BaseException) -> click.Group:
    """A btpipe command group whose one command raises ``error`` outside any run."""

    @click.group(cls=Btpipe)
    def group() -> None:
        pass

    @group.command()
    def fails() -> None:
        raise error

    return group


def test_an_interrupt_before_the_work_began_exits_5_in_one_line() -> None:
    """Ctrl-C while the command loads or parses its flags: click turns it into an abort."""
    result = CliRunner().invoke(_group_raising(KeyboardInterrupt()), ["fails"])
    assert result.exit_code == EXIT_INTERRUPTED
    assert result.stderr.strip().splitlines()[-1] == "btpipe: interrupted before it began; nothing was done"


def test_an_unexpected_error_is_one_line_unless_its_traceback_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    result = CliRunner().invoke(_group_raising(KeyError("objects")), ["fails"])
    assert result.exit_code == EXIT_FAILED
    assert result.stderr.strip().splitlines() == [
        "btpipe: error: unexpected KeyError: 'objects' (an answer or a file btpipe did not expect, "
        f"or a bug; {TRACEBACK_VARIABLE}=1 shows where)"
    ]
    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    result = CliRunner().invoke(_group_raising(KeyError("objects")), ["fails"])
    assert isinstance(result.exception, KeyError)


def test_a_stop_where_ctrl_c_is_ignored_cancels_the_run_so_its_cleanup_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM to a job started in the background (Ctrl-C ignored, so the event loop does not
    handle it) cancels the run as the loop's Ctrl-C handler would: its ``finally`` blocks run
    (a worker pool gives back its shared memory there), then exit 5 as for Ctrl-C."""
    import asyncio

    from pipeline.cli.common import stop_run

    cleaned: list[bool] = []

    async def long_run() -> None:
        asyncio.get_running_loop().call_later(0.05, stop_run)
        try:
            await anyio.sleep(30)
        finally:
            cleaned.append(True)

    with pytest.raises(SystemExit) as stopped:
        run_async(long_run)
    assert stopped.value.code == EXIT_INTERRUPTED and cleaned == [True]
    assert (
        capsys.readouterr().err.strip()
        == "btpipe: interrupted; state saved, re-run the same command to resume"
    )
    assert stop_run() is False  # no run going: the caller stops the process itself


def test_an_interrupt_while_the_command_line_loads_exits_5_in_one_line() -> None:
    """Ctrl-C before click runs (while ``pipeline.cli`` is imported): the script's own line
    and exit 5, no traceback."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "class Interrupting:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pipeline.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupting())\n"
        "from pipeline.__main__ import run\n"
        "run()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (
        EXIT_INTERRUPTED,
        "btpipe: interrupted before it began; nothing was done\n",
    )
