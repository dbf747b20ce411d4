"""Pieces every btpipe command shares: API and output options, settings, error handling.

Each command lives in a module of its own (:mod:`pipeline.cli.export`, import and friends in
:mod:`pipeline.cli.load`, ...) and all use these, so a flag means the same everywhere. Flags
with a default are built from :mod:`pipeline.common.defaults` (:mod:`pipeline.cli.options`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import anyio
import click
import orjson

from pipeline.cli.display import Display, for_stream
from pipeline.cli.options import setting_option, setting_options
from pipeline.common.defaults import (
    API_KEY_ENV,
    API_URL,
    ATTACHMENT_WORKERS,
    BATCH_ROWS,
    CONFIG_WORKERS,
    CONNECTIONS,
    CREATE_PROJECT,
    ENGINE,
    ERROR_FILE,
    IMPERSONATE,
    LOAD_WORKERS,
    MAX_ATTACHMENT_MB,
    MAX_BACKOFF,
    MAX_BATCH_BYTES,
    MAX_INFLIGHT_MB,
    MAX_RETRIES,
    ON_ERROR,
    RAY_ADDRESS,
    RAY_REQUEST_RATE,
    READ_TIMEOUT,
    RETRY_JITTER,
    STATE_DIR,
    THROTTLE_PATIENCE,
    TO_IMPERSONATE,
    WAIT_LEASE,
)
from pipeline.common.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    BtpipeError,
    UsageError,
    first_error,
)
from pipeline.common.memory import keep_memory_flat
from pipeline.common.progress import Progress

if TYPE_CHECKING:
    from pipeline.api.client import BraintrustClient, ClientSettings

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(frozen=True)
class Output:
    """What a command prints besides its results. ``--json``: the summary on stdout and no
    progress; ``--quiet``: stderr holds only errors and the warnings that need action."""

    quiet: bool
    json: bool

    def display(self) -> Display:
        """Progress on stderr (live on a terminal, a line now and then otherwise), or none."""
        return Display() if self.quiet or self.json else for_stream(sys.stderr)

    def say(self, text: str) -> None:
        """A message for a person watching; dropped under --quiet and --json."""
        if not self.quiet and not self.json:
            click.echo(text, err=True)

    def warn(self, text: str) -> None:
        """Something the user should act on: printed whatever the flags."""
        click.echo(f"btpipe: warning: {text}", err=True)


#: The settings :func:`api_options` folds into one ``settings``, as ``ClientSettings.from_options``
#: names them; the key is an option of its own, never a setting with a default.
_CLIENT_SETTINGS = (
    API_URL, IMPERSONATE, MAX_RETRIES, MAX_BACKOFF, THROTTLE_PATIENCE, RETRY_JITTER, READ_TIMEOUT, CONNECTIONS,
)  # fmt: skip


def api_options(fn: F) -> F:
    """--api-url / --api-key / --impersonate and the retry and connection knobs, shared by every
    API command, which receives them as one ready ``settings: ClientSettings`` parameter."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        from pipeline.api.client import ClientSettings  # loads the HTTP stack only when a command runs

        values = {name: kwargs.pop(name) for name in ("api_key", *(s.name for s in _CLIENT_SETTINGS))}
        return fn(*args, settings=ClientSettings.from_options(**values), **kwargs)

    api_key = click.option(
        "--api-key",
        envvar=API_KEY_ENV.default,
        default="",
        show_default=False,
        help=f"API key (env {API_KEY_ENV.default}). Never printed or stored.",
    )
    options = [setting_option(API_URL), api_key, *(setting_option(s) for s in _CLIENT_SETTINGS[1:])]
    for option in reversed(options):
        command = option(command)
    return cast(F, command)


def output_options(fn: F) -> F:
    fn = click.option(
        "--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary on stdout."
    )(fn)
    return click.option(
        "--quiet",
        "-q",
        is_flag=True,
        help="No progress or messages: only errors and warnings that need action.",
    )(fn)


def load_options(fn: F) -> F:
    """Batching, concurrency and resume flags shared by import and migrate."""
    fn = setting_option(CREATE_PROJECT)(fn)
    fn = click.option("--restart", is_flag=True, help="Ignore saved state and start from the beginning.")(fn)
    settings = (LOAD_WORKERS, CONFIG_WORKERS, BATCH_ROWS, MAX_BATCH_BYTES, MAX_INFLIGHT_MB, ON_ERROR, ERROR_FILE,
                STATE_DIR, WAIT_LEASE, MAX_ATTACHMENT_MB, ATTACHMENT_WORKERS)  # fmt: skip
    return setting_options(*settings)(fn)


def engine_options(fn: F) -> F:
    """``--engine``, and where and how fast Ray runs (export, import)."""
    return setting_options(ENGINE, RAY_ADDRESS, RAY_REQUEST_RATE)(fn)


@asynccontextmanager
async def ray_engine(settings: ClientSettings, kw: dict[str, Any]) -> AsyncIterator[Any]:
    """Pop the engine flags of ``kw``; with ``--engine ray``, Ray for the command
    (:func:`pipeline.ray.engine.ray_engine`): yields ``(engine module, key variable, budget)``,
    else None."""
    engine, address, rate = kw.pop("engine"), kw.pop("ray_address"), kw.pop("ray_request_rate")
    if engine != "ray":
        yield None
        return
    try:
        from pipeline.ray import engine as module
    except ImportError as exc:
        raise UsageError(f"--engine ray: Ray is not installed ({exc}); pip install 'btpipe[ray]'") from None
    async with module.ray_engine(settings, address=address, request_rate=rate) as (key_env, budget):
        yield module, key_env, budget


def to_options(fn: F) -> F:
    """The destination's URL, the name of the variable holding its key and the user it acts as
    (migrate, verify); ``--impersonate`` is the source's only."""
    fn = setting_option(TO_IMPERSONATE)(fn)
    fn = click.option("--to-api-key-env", default=None, metavar="VAR",
                      help="Name of the environment variable holding the destination API key.")(fn)  # fmt: skip
    return click.option(
        "--to-api-url", default=None, help="Destination API URL (default: same as --api-url)."
    )(fn)


def error_lines(exc: BaseException) -> list[str]:
    """``btpipe: error: <message>``, on one line whatever the message holds (a library's text
    quoted in it may have line breaks); a job file's problems a line each."""
    problems = getattr(exc, "problems", None) or [str(exc)]
    return [f"btpipe: error: {' '.join(str(problem).split())}" for problem in problems]


class Failed(SystemExit):
    """A command ended by :func:`fail`: its lines are on stderr; ``error`` is for ``--json``."""

    def __init__(self, error: str, code: int) -> None:
        super().__init__(code)
        self.error = error


def fail(lines: list[str], code: int) -> NoReturn:
    """End the command: ``lines`` on stderr, exit ``code``. With ``--json``, the command line
    then prints ``{"ok": false, "error": ..., "exit_code": ...}`` on stdout unless the command
    printed its own JSON (a stopped delete's summary), so a script reading it gets one JSON
    document whatever happened."""
    for line in lines:
        click.echo(line, err=True)
    raise Failed("; ".join(line.removeprefix("btpipe: ").removeprefix("error: ") for line in lines), code)


@dataclass
class _Run:
    """The command's run while it goes: its event loop and task, and whether
    :func:`stop_run` cancelled it."""

    loop: asyncio.AbstractEventLoop
    task: asyncio.Task[Any]
    stopped: bool = False


_running: list[_Run] = []


def stop_run() -> bool:
    """Stop the command's run as Ctrl-C does where the event loop handles Ctrl-C: cancel it,
    so it saves its state and releases what it holds on the way out. False when no run is
    going (the caller then raises KeyboardInterrupt). For a signal handler."""
    if not _running:
        return False
    run = _running[-1]
    run.stopped = True
    run.loop.call_soon_threadsafe(run.task.cancel)
    return True


def run_async(fn: Callable[[], Awaitable[T]], *, resumable: bool = True) -> T:
    """Run a coroutine, turning btpipe errors into one line and an exit code; ``resumable``:
    the command keeps state a re-run resumes from (a read-only one starts again). An interrupt
    that lands once the work is done (while the event loop, a worker pool or a local Ray shuts
    down) does not undo it: the result stands, and a job's state, already removed as complete,
    is not claimed saved."""
    finished: list[T] = []
    stopped: list[_Run] = []

    async def run() -> T:
        task = asyncio.current_task()
        assert task is not None
        _running.append(_Run(asyncio.get_running_loop(), task))
        try:
            result = await fn()
        finally:
            stopped.append(_running.pop())
        finished.append(result)
        return result

    try:
        try:
            return anyio.run(run)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        except asyncio.CancelledError:
            if not any(run.stopped for run in stopped):  # not cancelled by stop_run: not ours to explain
                raise
            raise KeyboardInterrupt from None
    except BtpipeError as exc:
        fail(error_lines(exc), exc.exit_code)
    except KeyboardInterrupt:
        if finished:
            return finished[0]
        if resumable:
            fail(["btpipe: interrupted; state saved, re-run the same command to resume"], EXIT_INTERRUPTED)
        fail(["btpipe: interrupted; it keeps no state: re-run the command to start again"], EXIT_INTERRUPTED)


async def with_client(settings: ClientSettings, body: Callable[[BraintrustClient], Awaitable[T]]) -> T:
    from pipeline.api.client import BraintrustClient

    async with BraintrustClient(settings) as client:
        return await body(client)


#: Whether this command line printed a JSON document on stdout yet.
_json_printed = False


def emit_json(data: Any) -> None:
    global _json_printed
    _json_printed = True
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def with_progress(output: Output, body: Callable[[Progress], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """Wrap ``body`` so it counts into a fresh :class:`Progress` that ``output``'s display
    shows while it runs and once at the end. The display is chosen inside the run, so a bad
    ``$BTPIPE_PROGRESS_INTERVAL`` is one error line like any other."""

    async def run() -> T:
        progress = Progress()
        return await output.display().around(progress, lambda: body(progress))

    return run


class _WarningLines(logging.Handler):
    """The library's warnings (its ``logging`` records under ``pipeline``, such as a stale lease
    taken over) as one ``btpipe: warning:`` line each on stderr, whatever the flags."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"btpipe: warning: {record.getMessage()}", err=True)


def _show_library_warnings() -> None:
    logger = logging.getLogger("pipeline")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines(logging.WARNING))
        logger.propagate = False


#: Set, an unexpected error shows its traceback instead of one line.
TRACEBACK_VARIABLE = "BTPIPE_TRACEBACK"


class Btpipe(click.Group):
    """The command group; a usage error is one line on stderr and exit 2, like every other
    btpipe error, instead of click's usage block. Commands named in ``lazy_commands``
    (``name -> "module:attribute"``) are imported only when used."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        global _json_printed
        argv = kwargs.get("args", args[0] if args else None)
        as_json, _json_printed = self._asks_json(list(sys.argv[1:] if argv is None else argv)), False
        try:
            return self._main(*args, **kwargs)
        except Failed as exc:
            if as_json and not _json_printed:
                emit_json({"ok": False, "error": exc.error, "exit_code": exc.code})
            raise

    def _asks_json(self, argv: list[str]) -> bool:
        """Whether the command line gives ``--json`` to a command that takes it."""
        if "--json" not in argv:
            return False
        name = next((arg for arg in argv if not arg.startswith("-")), None)
        try:
            command = self.get_command(click.Context(self), name) if name else None
        except ImportError:
            return False
        return command is not None and any(param.name == "as_json" for param in command.params)

    def _main(self, *args: Any, **kwargs: Any) -> Any:
        keep_memory_flat()
        _show_library_warnings()
        try:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            fail([f"btpipe: error: {' '.join(exc.format_message().split())}{where}"], EXIT_USAGE)
        except BtpipeError as exc:  # raised while the options were turned into settings
            fail(error_lines(exc), exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # Ctrl-C before the work began
                fail(["btpipe: interrupted before it began; nothing was done"], EXIT_INTERRUPTED)
            fail(["btpipe: aborted"], EXIT_FAILED)
        except Exception as exc:  # not raised on purpose: one line all the same, never a traceback
            if os.environ.get(TRACEBACK_VARIABLE):
                raise
            detail = " ".join(str(exc).split())
            fail(
                [
                    f"btpipe: error: unexpected {type(exc).__name__}{': ' + detail if detail else ''} (an "
                    f"answer or a file btpipe did not expect, or a bug; {TRACEBACK_VARIABLE}=1 shows where)"
                ],
                EXIT_FAILED,
            )
