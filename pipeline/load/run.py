"""What import and migrate share: their options, their summary, and :class:`LoadRun`, which
opens a load (state file, destination project, insert pool), makes the per-object batchers
whose ledgers checkpoint each object's progress into the state, and closes it (counts,
summary, state deleted).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import ObjectRef, ensure_project, resolve_project
from pipeline.common import defaults
from pipeline.common.checkpoint import Ledger
from pipeline.common.errors import NotFoundError
from pipeline.common.jobstate import JobState
from pipeline.common.progress import Progress, Task
from pipeline.common.state import ObjectProgress
from pipeline.load.acls import AclOutcome
from pipeline.load.attachments import AttachmentCopier, Source
from pipeline.load.batcher import Batcher
from pipeline.load.config import ConfigCount, ConfigOutcome
from pipeline.load.errorlog import ErrorLog
from pipeline.load.insert import InsertOptions, InsertPool, request_limit


@dataclass(frozen=True)
class LoadOptions:
    """Batching, concurrency and resume knobs shared by import and migrate."""

    batch_rows: int = defaults.BATCH_ROWS.default
    max_batch_bytes: int | None = defaults.MAX_BATCH_BYTES.default
    insert: InsertOptions = field(default_factory=InsertOptions)
    state_dir: str = defaults.STATE_DIR.default
    restart: bool = False
    error_file: str | None = defaults.ERROR_FILE.default
    wait_lease: float = defaults.WAIT_LEASE.default
    #: Write into an experiment or dataset the destination already has under the same name.
    into_existing: bool = defaults.INTO_EXISTING.default
    #: Configuration objects written at once (:mod:`pipeline.load.config`).
    config_workers: int = defaults.CONFIG_WORKERS.default
    max_attachment_mb: int = defaults.MAX_ATTACHMENT_MB.default
    attachment_workers: int = defaults.ATTACHMENT_WORKERS.default

    @property
    def attachment_limit(self) -> int:
        return self.max_attachment_mb * defaults.MB


@dataclass
class ObjectResult:
    source: str
    destination: str
    destination_id: str
    created: bool
    rows: int
    skipped: int


@dataclass
class LoadSummary:
    """What a load (import or migrate) did; any of :meth:`failures` means exit code 1."""

    seconds: float = 0.0
    resumed: bool = False
    requests: int = 0
    retries: int = 0
    splits: int = 0
    overflowed: int = 0  # events over the request limit written through the overflow route
    #: Comments given to the rows written (``/logs3`` comment rows); None where the objects were
    #: loaded elsewhere (Ray tasks), which copy them without counting here.
    comments: int | None = 0
    #: Comments too big for one request, recorded in the error file instead (exit code 1).
    comments_skipped: int = 0
    request_limit: int = 0
    error_file: str | None = None
    state_file: str | None = None
    objects: list[ObjectResult] = field(default_factory=list)
    #: Input files that differ from their manifest; the objects holding them were not loaded.
    damaged: list[str] = field(default_factory=list)
    #: What the load could not carry over as it was (a reference, a dataset version), one line each.
    warnings: list[str] = field(default_factory=list)
    #: Configuration objects per kind: created, updated, unchanged (:mod:`pipeline.load.config`).
    config: list[ConfigCount] = field(default_factory=list)
    #: Configuration objects not copied because a reference they hold could not be remapped
    #: (exit code 1, as for skipped events).
    broken: list[str] = field(default_factory=list)
    #: Earlier versions of prompts written before their current one (history kept).
    config_versions: int = 0
    #: What ``--acls`` copied (:mod:`pipeline.load.acls`); None without it.
    acls: AclOutcome | None = None
    #: Attachments ``uploaded`` (``bytes``), and ``present``: found uploaded by an earlier run.
    attachments: dict[str, int] = field(default_factory=dict)
    #: Objects copied naming an attachment whose bytes could not be (``--on-error skip``).
    uncarried: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(o.rows for o in self.objects)

    @property
    def skipped(self) -> int:
        return sum(o.skipped for o in self.objects)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows, "skipped": self.skipped}

    def failures(self) -> list[str]:
        """Why the load did not carry everything over, one line each (exit code 1): events
        and comments recorded in the error file, damaged inputs, configuration not copied."""
        lines = []
        if self.skipped:
            lines.append(f"{self.skipped:,} events skipped (recorded in {self.error_file})")
        if self.comments_skipped:
            lines.append(
                f"{self.comments_skipped:,} comments too big to send (recorded in {self.error_file})"
            )
        lines += [f"not imported: {damaged}" for damaged in self.damaged]
        lines += [f"not copied: {broken}" for broken in self.broken]
        lines += [f"attachment not copied: {line}" for line in self.uncarried]
        return lines

    def add_config(self, outcome: ConfigOutcome) -> None:
        """What :class:`~pipeline.load.config.ConfigCopy` did: counts, and its lines (code
        functions skipped and kinds not served as warnings, broken references apart)."""
        self.config = outcome.counts
        self.config_versions = outcome.versions
        self.broken = outcome.broken
        self.warnings += outcome.skipped
        self.warnings += [f"{kind}: not served by the deployment; not copied" for kind in outcome.unserved]


async def destination_project(
    client: BraintrustClient, name: str, create: bool, description: str | None = None
) -> dict[str, Any]:
    """The destination project; created only when asked (with ``description``, the source
    project's), so a typo cannot scatter data."""
    found = await existing_destination(client, name, create)
    return found if found is not None else await ensure_project(client, name, description)


async def existing_destination(client: BraintrustClient, name: str, create: bool) -> dict[str, Any] | None:
    """The destination project if it exists; None when it does not and may be created
    (``create``), NotFoundError when it may not."""
    try:
        return await resolve_project(client, name)
    except NotFoundError:
        if not create:
            raise NotFoundError(
                f"destination project {name!r} not found (pass --create-project to create it)"
            ) from None
    return None


def open_error_log(options: LoadOptions, state: JobState) -> ErrorLog | None:
    if options.insert.on_error != "skip":
        return None
    if options.error_file:
        return ErrorLog(options.error_file)
    return ErrorLog(state.location.removesuffix(".json") + ".errors.jsonl")


def object_batcher(
    ref: ObjectRef,
    progress: ObjectProgress,
    batch_rows: int,
    request_limit: int,
    *,
    save: Callable[[], Awaitable[None]],
    on_rows: Callable[[int], object] | None = None,
) -> Batcher:
    """A batcher into ``ref`` of requests of at most ``batch_rows`` events and
    ``request_limit`` bytes, whose ledger advances ``progress`` and calls ``save`` each time
    (in this process, or in a Ray task reporting to its driver)."""
    ledger = Ledger(progress, save=save, on_rows=on_rows)
    return Batcher(ref.rows_path, max_rows=batch_rows, max_bytes=request_limit, ledger=ledger)


class LoadRun:
    """The part import and migrate share: one pool, one ledger per object, the state file."""

    def __init__(self, client: BraintrustClient, options: LoadOptions, state: JobState, progress: Progress):
        self.client = client
        self.options = options
        self.state = state
        self.progress = progress
        progress.watch_retries(client)
        self.error_log = open_error_log(options, state)
        self.summary = LoadSummary(state_file=state.location)
        self.pool: InsertPool
        self.attachments: AttachmentCopier

    @classmethod
    async def begin(
        cls,
        client: BraintrustClient,
        options: LoadOptions,
        progress: Progress,
        *,
        job: str,
        source: dict[str, Any],
        to_project: str,
        create_project: bool,
        exits: AsyncExitStack,
        attachments: Source,
        description: str | None = None,
        check: Callable[[JobState], Awaitable[None]] | None = None,
    ) -> tuple[LoadRun, dict[str, Any]]:
        """The opening every load shares: take the lease of the state of the ``job`` run
        identified by ``source`` (what is read, and which objects) and the destination, held
        until ``exits`` closes; load (or, with ``restart``, discard) that state; find the
        destination project (created only when ``create_project``, with ``description``), start
        the insert pool;
        attachments the rows refer to are read from ``attachments``. ``check`` looks at the
        input once the state is known, before the project is found or created: an input it
        refuses leaves nothing behind. Returns the run and the project."""
        identity = {**source, "api_url": client.base_url, "project": to_project}
        state = JobState(options.state_dir, job, identity)
        await exits.enter_async_context(state.held(wait=options.wait_lease))
        resumed = await state.load(restart=options.restart)
        project = await existing_destination(client, to_project, create_project)
        if check is not None:
            await check(state)
        if project is None:
            project = await ensure_project(client, to_project, description)
        run = cls(client, options, state, progress)
        run.attachments = AttachmentCopier(
            attachments, client, project, mapping=state.attachments, workers=options.attachment_workers,
            skip=options.insert.on_error == "skip",
        )  # fmt: skip
        run.summary.resumed = resumed
        await run.start()
        return run, project

    async def start(self) -> None:
        limit = await request_limit(self.client, self.options.max_batch_bytes)
        self.summary.request_limit = limit
        self.pool = InsertPool(
            self.client, self.options.insert, max_request_bytes=limit, error_log=self.error_log
        )
        self.summary.error_file = self.error_log.path if self.error_log else None

    def batcher(self, progress: ObjectProgress, ref: ObjectRef, task: Task) -> Batcher:
        """A batcher into ``ref`` whose ledger advances ``progress`` and saves the state."""
        return object_batcher(
            ref, progress, self.options.batch_rows, self.summary.request_limit,
            save=self.state.save, on_rows=task.advance,
        )  # fmt: skip

    async def complete(
        self,
        produce: Callable[[], Awaitable[None]],
        started: float,
        keys: list[str],
        results: list[ObjectResult],
        finish: Callable[[LoadSummary], Awaitable[None]] | None = None,
    ) -> LoadSummary:
        """Run ``produce`` through the pool, saving the state whatever happens; then take each
        result's counts from its progress record (``keys[i]`` is the record of ``results[i]``),
        run ``finish`` (what follows the rows, such as linking dataset versions: stopped there,
        a re-run finds every row written and does it again) and delete the state file, since a
        completed job starts afresh next time."""
        try:
            await self.pool.run(produce)
        finally:
            with anyio.CancelScope(shield=True):  # Ctrl-C too: what the ledgers hold is saved
                await self.state.save()
        for key, result in zip(keys, results, strict=True):
            progress = self.state.objects[key]
            result.rows = progress.rows
            result.skipped = progress.skipped
        if self.error_log is not None:
            self.error_log.close()
        stats = self.client.statistics()
        self.summary.seconds = round(time.monotonic() - started, 3)
        self.summary.requests = stats.requests
        self.summary.retries = stats.retries
        self.summary.splits = self.pool.statistics().splits
        self.summary.overflowed = self.pool.statistics().overflowed
        self.summary.comments = self.pool.statistics().comments
        self.summary.comments_skipped = self.pool.statistics().comments_skipped
        self.summary.objects = results
        self.summary.attachments = asdict(self.attachments.counts)
        self.summary.uncarried = self.attachments.uncarried
        if finish is not None:
            await finish(self.summary)
        await self.state.clear()
        return self.summary
