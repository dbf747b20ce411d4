"""The ``btpipe`` command line: parse flags, build a job, run it, print the summary.

Each command is a few lines in a module of its own, imported only when it is invoked (so
start-up stays fast); the work lives in the library. Library errors become one line on stderr
and the exit code documented in the README (see :mod:`pipeline.common.errors`).
"""

from __future__ import annotations

import gc
import signal
from types import FrameType
from typing import Any

import click

from pipeline import __version__
from pipeline.cli.common import Btpipe, stop_run

#: Every command, as ``name -> "module:attribute"``, imported only when used.
LAZY_COMMANDS = {
    "delete": "pipeline.cli.load:delete_command",
    "doctor": "pipeline.cli.doctor:doctor",
    "emulator": "pipeline.cli.emulator:emulator",
    "export": "pipeline.cli.export:export",
    "import": "pipeline.cli.load:import_command",
    "migrate": "pipeline.cli.load:migrate_command",
    "query": "pipeline.cli.query:query",
    "run": "pipeline.cli.jobs:run",
    "runs": "pipeline.cli.runs:runs",
    "validate": "pipeline.cli.jobs:validate",
    "verify": "pipeline.cli.load:verify_command",
}


@click.group(
    cls=Btpipe,
    lazy_commands=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="btpipe")
def main() -> None:
    """Bulk export and import for the Braintrust REST API."""


def program() -> Any:
    """The ``btpipe`` program (``python -m pipeline`` too): :func:`main`, then a quicker exit.

    The interpreter's last garbage collection walks every object the run left behind
    (aiohttp's, click's, a big export's), 10 to 20 ms of a 1.5 s export. Frozen,
    they are not walked; they go with the process all the same. Files and sessions are closed
    by then, as every command closes its own. (Tests call :func:`main` in their process and
    keep collecting.)

    SIGTERM (a service manager, ``timeout``, a cron host shutting down) stops a run as Ctrl-C
    does: state saved, exit 5, instead of a silent death that leaves the lease to go stale."""
    signal.signal(signal.SIGTERM, _stop_as_interrupt)
    try:
        return main()
    finally:
        gc.freeze()


def _stop_as_interrupt(signum: int, frame: FrameType | None) -> None:
    """Hand SIGTERM to whatever handles Ctrl-C now (the event loop's handler cancels the run
    so it stops in order); where Ctrl-C is ignored (a job started in the background), cancel
    the run the same way, or, with none going, stop all the same."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    elif not stop_run():
        raise KeyboardInterrupt
