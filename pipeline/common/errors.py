"""Exceptions btpipe raises on purpose, and the exit code each maps to.

    BtpipeError                 exit 1   the job ran but could not do all it was asked
    ├── UsageError              exit 2   bad flags, bad config, bad filter, bad input file
    ├── AuthError               exit 3   missing or wrong API key, permission refused
    ├── NotFoundError           exit 4   a project, dataset or experiment that does not exist
    ├── InterruptedRun          exit 5   stopped part way; state saved, re-run to resume
    ├── LeaseHeld               exit 6   another run holds the output root or state file
    ├── LeaseLost               exit 1   another run took this run's lease over; it stopped
    ├── DamagedFileError        exit 1   a file differs from its manifest entry
    └── ApiError                exit 1   the server refused a request we cannot retry
        └── TransientApiError   exit 1   retries ran out on a transient failure

Low-level failures (aiohttp, OSError, pyarrow) are translated into these where they are
caught, so a user sees one line that names the problem and where, never a traceback.
Messages must never contain an API key: build them from names, ids and paths only.
"""

from __future__ import annotations

import re

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def variable_name(name: str) -> str:
    """An environment variable's name as a message may show it: a name a variable can have is
    shown, anything else (the key itself, given where its variable's name belongs) is not."""
    if _VARIABLE_NAME.fullmatch(name):
        return name
    return "(not a variable name: is it the key itself? give the name of the variable holding it)"


EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_INTERRUPTED = 5
EXIT_BUSY = 6


class BtpipeError(Exception):
    """Base class; ``exit_code`` tells the CLI how to exit."""

    exit_code = EXIT_FAILED


class UsageError(BtpipeError):
    """The user asked for something malformed: a flag, a config key, a filter, an input file."""

    exit_code = EXIT_USAGE


class AuthError(BtpipeError):
    """The server rejected the credentials (401) or the permission (403)."""

    exit_code = EXIT_AUTH


class NotFoundError(BtpipeError):
    """A named project, dataset or experiment does not exist (or is not visible to this key)."""

    exit_code = EXIT_NOT_FOUND


class InterruptedRun(BtpipeError):
    """The run stopped part way; its state file lets the next run resume."""

    exit_code = EXIT_INTERRUPTED


class DamagedFileError(BtpipeError):
    """A file differs from what its manifest says was written: changed, cut short or missing."""


class AttachmentTooLarge(BtpipeError):
    """An attachment over ``--max-attachment-mb``: the run stopped before publishing what refers to it."""


class AttachmentUnavailable(BtpipeError):
    """An attachment a row refers to cannot be read where it should be (its upload failed or
    is not done, or the key is unknown there)."""


class LeaseHeld(BtpipeError):
    """Another run holds the lease of the output root or state file; this one did nothing."""

    exit_code = EXIT_BUSY


class LeaseLost(BtpipeError):
    """Another run took this run's lease over (it judged this one dead): nothing more was published."""


class ApiError(BtpipeError):
    """The server answered with an error status we will not retry."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientApiError(ApiError):
    """A retryable failure (429, 5xx, connection error) that outlasted the retry budget."""


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error a task group stopped for, so the user sees one line rather than a group.

    A btpipe error wins over the cancellations and follow-on failures it caused.
    """
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return next((e for e in leaves if isinstance(e, BtpipeError)), leaves[0])
