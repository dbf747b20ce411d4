"""The export stage: plan a snapshot, page every range concurrently, publish files, checkpoint.

    plan:   resolve objects -> preflight (row count, version) -> split into _xact_id ranges
    run:    per range, a fetcher task pages /btql into a small bounded stream; a writer drains
            it into a sink in a worker thread; every published file advances the checkpoint
    finish: manifest, watermarks for --incremental, the unfinished run cleared

A dry run (``ExportJob.dry_run``) plans through the same code but reads no page and writes
nothing (:mod:`pipeline.export.dryrun`).

Ranges run at most ``workers`` at a time, and one page budget (:mod:`pipeline.export.budget`)
bounds the pages held in memory across them, so memory stays flat whatever the size of the
project. The runner decides where every file ends (``file_rows``, ``file_bytes``); the sinks
only write what they are given and publish a file when told.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from pipeline.api.btql import Page, Pager, build_query, parse_filter
from pipeline.api.capabilities import PROVEN_ONLY, Capabilities, capabilities
from pipeline.api.client import BraintrustClient
from pipeline.api.objects import ObjectRef, resolve_project, resolve_selection
from pipeline.api.snapshot import (
    Range,
    RangeField,
    Since,
    count_now_and_at,
    plan_ranges,
    since_expr,
    take_snapshot,
)
from pipeline.common import defaults, jsoncodec, layout
from pipeline.common.attachments import manifest_section
from pipeline.common.chains import FULL_SCOPE, Scope, format_refusal, incremental_refusal
from pipeline.common.clock import seconds_since_start
from pipeline.common.errors import BtpipeError, UsageError, first_error
from pipeline.common.integrity import find_damage
from pipeline.common.lease import ROOT_LEASE, Guard, GuardedStorage, Lease, guarded, hold, with_guard
from pipeline.common.manifest import FileInfo, Manifest, ObjectManifest, list_manifests, write_manifest
from pipeline.common.progress import Progress, Task
from pipeline.common.rows import ObjectType
from pipeline.common.selection import config_selection, parse_selection
from pipeline.common.state import (
    CorruptState,
    ExportState,
    ObjectState,
    RangeState,
    RunState,
    StateStore,
    Watermark,
    export_store,
)
from pipeline.common.storage import Retries, Storage, no_empty_root_left, open_storage
from pipeline.export.attachments import AttachmentExport
from pipeline.export.budget import PageBudget, Slot
from pipeline.export.config import export_config
from pipeline.export.dryrun import ExportPlan, describe
from pipeline.export.gone import deleted_at_source, drop_files, gone_label, may_be_gone
from pipeline.querylang.ast import Expr, all_of, from_object
from pipeline.sinks.base import Sink
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.workers import WorkerPool, parquet_sink

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pipeline.export.tombstones import IdSet

JsonlCompression = Literal["gzip", "zstd"] | None


class IncompleteExport(BtpipeError):
    """The rows written differ from the rows the snapshot holds: the run proved nothing."""


@dataclass(frozen=True)
class ExportOptions:
    project: str
    out: str
    objects: str = defaults.OBJECTS.default
    format: str = defaults.FORMAT.default
    compression: str | None = (
        defaults.COMPRESSION.default
    )  # None: zstd for parquet, none for jsonl; "none": none
    filter: str | None = defaults.FILTER.default
    shape: str = defaults.SHAPE.default
    incremental: bool = defaults.INCREMENTAL.default
    restart: bool = False
    workers: int | None = defaults.EXPORT_WORKERS.default  # None: range_workers says
    ranges_per_object: int | None = defaults.RANGES_PER_OBJECT.default  # None: as many as range_workers
    min_rows_per_range: int = defaults.MIN_ROWS_PER_RANGE.default
    page_limit: int = defaults.PAGE_LIMIT.default
    prefetch: int = defaults.PREFETCH.default
    encoders: int = defaults.ENCODERS.default
    file_rows: int = defaults.FILE_ROWS.default
    file_bytes: int = defaults.FILE_MB.default * defaults.MB
    row_group_rows: int = defaults.ROW_GROUP_ROWS.default
    row_group_mb: int = defaults.ROW_GROUP_MB.default
    wait_lease: float = defaults.WAIT_LEASE.default
    attachments: str = defaults.ATTACHMENTS.default
    max_attachment_mb: int = defaults.MAX_ATTACHMENT_MB.default
    attachment_workers: int = defaults.ATTACHMENT_WORKERS.default

    @property
    def file_compression(self) -> str:
        """The compression the data files get: ``compression``, else zstd for Parquet and none
        for JSONL (Delta stages its runs as Parquet)."""
        return self.compression or ("none" if self.format == "jsonl" else "zstd")

    @property
    def range_workers(self) -> int:
        """Ranges paged at once: ``workers``, else the default (see ``defaults``)."""
        return self.workers if self.workers is not None else defaults.RANGE_WORKERS

    @property
    def range_split(self) -> int:
        """Most ranges one object is split into: ``ranges_per_object``, else ``range_workers``."""
        return self.ranges_per_object if self.ranges_per_object is not None else self.range_workers

    def run_key(self) -> dict[str, Any]:
        """What must match for an unfinished run to be resumed by this invocation."""
        return {
            "objects": self.objects,
            "format": self.format,
            "compression": self.compression,
            "filter": self.filter,
            "shape": self.shape,
            "incremental": self.incremental,
        }


@dataclass
class ObjectSummary:
    label: str
    object_type: str
    id: str
    rows: int
    expected_rows: int | None  # None: the server could not count the snapshot
    files: int
    bytes: int
    version: str | None


@dataclass
class ExportSummary:
    run_id: str
    out: str
    manifest: str
    resumed: bool
    seconds: float
    requests: int
    retries: int
    objects: list[ObjectSummary] = field(default_factory=list)
    first_row_seconds: float | None = None  # process start to the first page written
    #: Files of the resumed run found missing or changed; their ranges were read again.
    repaired: list[str] = field(default_factory=list)
    #: Objects deleted at the source during the run: it holds none of their rows.
    gone: list[str] = field(default_factory=list)
    #: Configuration objects written, per kind (:mod:`pipeline.export.config`).
    config: dict[str, int] = field(default_factory=dict)
    #: Configuration kinds asked for that the deployment does not serve.
    config_unserved: list[str] = field(default_factory=list)
    #: Attachments the run's rows refer to (``count``, ``bytes``), those it downloaded
    #: (``downloaded``, ``downloaded_bytes``; the rest were in the root already) and those
    #: ``--attachments skip`` left out (``skipped``).
    attachments: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(o.rows for o in self.objects)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows}


@dataclass
class _HeldPage:
    """A fetched page and the budget slot it holds until its sink has written it;
    ``ends_file``: the range's current file ends after this page."""

    page: Page
    slot: Slot
    ends_file: bool = False


class _FileEnds:
    """Where one range's files end: after ``max_rows`` rows exactly, or after the page that
    takes the file's JSON to ``max_bytes``.

    The next page is asked for no more rows than the file has ``room`` for, so a file never
    ends inside a page: every file boundary is a page's cursor, and so also a checkpoint.
    """

    def __init__(self, max_rows: int, max_bytes: int) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._rows = self._bytes = 0

    @property
    def room(self) -> int:
        """Rows the current file takes before it ends."""
        return self.max_rows - self._rows

    def ends_after(self, page: Page) -> bool:
        """Count ``page`` into the current file; True when the file ends after it."""
        self._rows += page.rows
        self._bytes += len(page.raw)
        if self._rows < self.max_rows and self._bytes < self.max_bytes:
            return False
        self._rows = self._bytes = 0
        return True


@contextmanager
def _releasing(receive: MemoryObjectReceiveStream[_HeldPage]) -> Iterator[None]:
    """Close ``receive`` on the way out, first giving back the slots of the pages still
    queued in it (a writer that stopped early leaves them there)."""
    try:
        yield
    finally:
        while True:  # no await until closed: nothing more can be queued meanwhile
            try:
                receive.receive_nowait().slot.release()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        receive.close()


async def _exit_in_thread(
    sink: Sink, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
) -> bool:
    """Leave ``sink``'s ``with`` block in a worker thread (closing or aborting may wait on a
    worker process or on fsync), shielded so that a cancelled range still aborts its file."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(sink.__exit__, exc_type, exc, tb)
    return False


def _shows_newer_deletes(obj: ObjectState) -> bool:
    """Whether ``obj``, read pinned without a count at its version, wrote more rows than were
    counted just after the version was found (see ``ExportJob._read_again_where_deleted``)."""
    counted = obj.estimate if obj.pinned and obj.expected_rows is None else None
    return counted is not None and obj.rows > counted


#: Called with each range's files as they are published (see ``ExportJob.read_range``).
OnCheckpoint = Callable[[RangeState, list[FileInfo], str | None, bool], Awaitable[None]]


class RangeRunner(Protocol):
    """Runs one range of a run somewhere else than in this process (``pipeline.ray`` runs it
    as a task of a Ray cluster): it reads the range from its checkpoint and calls
    ``job.checkpoint`` for the files published, in order, as the local engine does."""

    async def __call__(
        self, job: ExportJob, run: RunState, obj: ObjectState, rng: RangeState, task: Task
    ) -> None: ...


def range_pager(
    client: BraintrustClient,
    options: ExportOptions,
    user_filter: Expr | None,
    obj: ObjectState,
    rng: RangeState,
) -> Pager:
    """The pager of one range of ``obj``, from its checkpointed cursor, under the object's
    snapshot: the reads of ``btpipe export`` and of ``pipeline.ray``'s datasource alike."""
    query = build_query(
        obj.object_type,
        obj.id,
        filter_expr=all_of(
            user_filter,
            since_expr(obj.since_field, obj.since),
            Range(cast(RangeField, rng.by), rng.low, rng.high).expr(),
        ),
        shape=options.shape,
    )
    return Pager(
        client,
        query,
        version=obj.version if obj.pinned else None,
        cursor=rng.cursor,
        max_limit=options.page_limit,
        limit=options.page_limit,
    )


async def plan_export(client: BraintrustClient, options: ExportOptions) -> tuple[dict[str, Any], RunState]:
    """The project and the run ``btpipe export`` would plan for ``options`` (objects,
    snapshots, ranges), with no output root: for readers that page the ranges themselves
    (``pipeline.ray``'s datasource). Without a root there is no watermark, so it is a full read."""
    job = ExportJob(client, replace(options, incremental=False), Progress())
    project = await resolve_project(client, options.project)
    job.state = ExportState(project_id=project["id"])
    job._project_name = project["name"]
    return project, await job._plan(project, read_ahead=False)


def _watermark_key(obj: ObjectState | ObjectRef, options: ExportOptions) -> str:
    """Where an incremental run of ``obj`` continues from. Delta runs keep a chain of their
    own: a table holds only what Delta runs applied, so the first one reads everything."""
    key: list[str] = [obj.object_type, obj.id, options.shape, options.filter or ""]
    if options.format == "delta":
        key.append("delta")
    return orjson.dumps(key).decode()


class ExportJob:
    """One ``btpipe export`` run against one project, holding the output root's lease
    (:mod:`pipeline.common.lease`) throughout, or within the one ``lease`` its caller holds."""

    def __init__(
        self,
        client: BraintrustClient,
        options: ExportOptions,
        progress: Progress,
        *,
        lease: Lease | None = None,
        ranges: RangeRunner | None = None,
        on_checkpoint: OnCheckpoint | None = None,
    ) -> None:
        if options.format not in ("parquet", "jsonl", "delta"):
            raise UsageError(f"--format: expected parquet, jsonl or delta, got {options.format!r}")
        if options.shape not in ("spans", "traces", "summary"):
            raise UsageError(f"--shape: expected spans, traces or summary, got {options.shape!r}")
        unfit = format_refusal(options.format, options.shape)
        if unfit:
            raise UsageError(f"--shape {options.shape}: {unfit}")
        refusal = incremental_refusal(Scope(options.shape, options.filter or ""))
        if options.incremental and refusal:
            raise UsageError(f"--incremental: {refusal}")
        self.client = client
        self.options = options
        self.progress = progress
        self.lease = lease
        self._ranges = ranges  # None: ranges are read in this process
        self._on_checkpoint = on_checkpoint  # set where a range is read for a job elsewhere
        progress.watch_retries(client)
        self.user_filter: Expr | None = parse_filter(options.filter)
        self._state_lock = anyio.Lock()
        # Parquet encoding is CPU work in Python: it runs in ``encoders`` worker processes
        # (each kept busy with a second page in flight), so the event loop keeps the GIL for
        # fetching. JSONL only copies bytes, in as many threads. Publishing a file (mostly
        # fsync) is not limited by this, so ranges finishing together overlap.
        self._workers: WorkerPool | None = None
        self._in_workers = options.format != "jsonl" and options.encoders > 0
        self._encoders = anyio.CapacityLimiter(max(1, options.encoders * (2 if self._in_workers else 1)))
        # Pages held in memory across all ranges: one fetch in flight per range plus one page
        # per encoder slot. Without it each range would also hold a fetched page waiting for
        # its writer and one in its buffer while the encoders are the bottleneck, which is
        # twice the memory for no more speed.
        self._page_budget = PageBudget(options.range_workers + int(self._encoders.total_tokens))
        self._first_row_seconds: float | None = None
        self._repaired: list[str] = []  # files of a resumed run found damaged (_check_published)
        self._first_pages: dict[tuple[str, int], tuple[Pager, _HeldPage | None]] = {}  # read while planning
        # By object key, the ids each object whose deletes newer than its version were seen
        # held as this process started reading it (pipeline.export.tombstones), under _ids_dir.
        self._ids_at_start: dict[str, IdSet] = {}
        self._ids_dir: tempfile.TemporaryDirectory[str] | None = None
        self._ids_taken = itertools.count()
        self.storage: Storage
        self._lease_check: Callable[[], None]  # before a write outside the storage (a Delta commit)
        self._guard: Guard  # the lease, as the encoder processes check it before publishing
        self.store: StateStore[ExportState]
        self.state: ExportState
        self._project_name: str
        self._project: dict[str, Any]
        self._config_kinds = config_selection(options.objects)
        self._config: dict[str, int] = {}
        self._config_unserved: list[str] = []
        self._attachments: AttachmentExport

    async def run(self) -> ExportSummary:
        started = time.monotonic()
        retries = await self._open_storage()
        with no_empty_root_left(self.storage):
            return await self._run_in(retries, started)

    async def _run_in(self, retries: Retries, started: float) -> ExportSummary:
        if self._in_workers:
            # started now, so the workers import pyarrow while the export plans
            self._workers = await anyio.to_thread.run_sync(
                partial(WorkerPool, retries=retries), self.options.encoders, self.storage.url
            )
        try:
            return await self._run(started)
        finally:
            for _, first in self._first_pages.values():  # read while planning, never used
                if first is not None:
                    first.slot.release()
            for ids in self._ids_at_start.values():
                ids.close()
            if self._ids_dir is not None:
                self._ids_dir.cleanup()
            if self._workers is not None:
                await anyio.to_thread.run_sync(self._workers.close)

    async def dry_run(self) -> ExportPlan:
        """The plan of the run :meth:`run` would do (:mod:`pipeline.export.dryrun`), by the same
        planning, written nowhere: no lease, state, manifest, file or temp file, and no page read.
        An unfinished run in the output root is shown resumed, not planned again; one of other
        options is refused as :meth:`run` refuses it."""
        await self._open_storage()
        project = await self._load_state()
        unfinished = self.state.run
        resume = unfinished is not None and self._resumes(unfinished)
        run = unfinished if unfinished is not None and resume else await self._plan(project, read_ahead=False)
        return describe(
            run,
            self.storage,
            project_name=self._project_name,
            project_id=self.state.project_id,
            file_format=self.options.format,
            compression=self.options.file_compression,
            resume=resume,
            discards=None if unfinished is None or resume else unfinished.run_id,
            previous={obj.key: self._previous_run(obj) for obj in run.objects},
            requests=self.client.statistics().requests,
        )

    async def _open_storage(self) -> Retries:
        """Open the output root (nothing is written to it yet); the storage retries as the
        client does, which bounds them too."""
        retry = self.client.settings.retry
        retries = Retries(retry.max_attempts, retry.max_delay)
        self.storage = await anyio.to_thread.run_sync(
            partial(open_storage, retries=retries), self.options.out
        )
        return retries

    async def _run(self, started: float) -> ExportSummary:
        """The run under the root's lease, taken before the state is read and released after
        the manifest is published; every publish and deletion checks it first."""
        async with AsyncExitStack() as stack:
            lease = self.lease
            if lease is None:
                root = hold(self.storage, ROOT_LEASE, command="export", wait=self.options.wait_lease)
                lease = await stack.enter_async_context(root)
            self.storage, self._guard = guarded(self.storage, lease), lease.guard
            self._lease_check = lease.check
            return await self._run_held(started)

    async def _run_held(self, started: float) -> ExportSummary:
        project = await self._load_state()
        # A file in _manifests/ that is no manifest makes every later reader of the root (runs,
        # import, an incremental run) refuse it: refused now, before a run is added to it.
        await anyio.to_thread.run_sync(list_manifests, self.storage)
        resumed = await self._adopt_unfinished_run()
        if self.state.run is None:
            self.state.run = await self._plan(project, read_ahead=self._ranges is None)
            await self._save()
        else:
            await self._plan_again_where_ids_were_lost(project, self.state.run)
        run = self.state.run
        await anyio.to_thread.run_sync(self.storage.cleanup_temp, "")
        opts = self.options
        self.org_id = str(project.get("org_id") or "")
        self._attachments = AttachmentExport(
            self.client, self.storage, self.org_id,
            download=opts.attachments == "download", limit=opts.max_attachment_mb * defaults.MB,
            workers=opts.attachment_workers, keys=run.attachments, skipped=run.skipped_attachments,
        )  # fmt: skip
        async with anyio.create_task_group() as tg:
            for obj in run.objects:
                tg.start_soon(self._take_ids_at_start, obj)
            await self._run_ranges(run)
        if again := await self._read_again_where_deleted(run):
            await self._run_ranges(run, again)
        await self._drop_gone(run)
        manifest, attached = await self._finish(run)
        stats = self.client.statistics()
        return ExportSummary(
            run_id=run.run_id,
            out=self.storage.url,
            manifest=manifest,
            resumed=resumed,
            seconds=round(time.monotonic() - started, 3),
            requests=stats.requests,
            retries=stats.retries,
            first_row_seconds=self._first_row_seconds,
            repaired=self._repaired,
            gone=[gone_label(obj) for obj in run.objects if obj.gone],
            config=self._config,
            config_unserved=self._config_unserved,
            attachments={
                **{name: attached[name] for name in ("count", "bytes", "skipped")},
                "downloaded": self._attachments.downloaded,
                "downloaded_bytes": self._attachments.downloaded_bytes,
            },
            objects=[
                ObjectSummary(
                    label=obj.name if obj.object_type == "project_logs" else f"{obj.object_type}:{obj.name}",
                    object_type=obj.object_type,
                    id=obj.id,
                    rows=obj.rows,
                    expected_rows=obj.expected_rows,
                    files=sum(len(r.files) for r in obj.ranges),
                    bytes=sum(f.bytes for r in obj.ranges for f in r.files),
                    version=obj.version if obj.pinned else None,
                )
                for obj in run.objects
            ],
        )

    # -- planning -------------------------------------------------------------------------

    async def _load_state(self) -> dict[str, Any]:
        """The project, and its export state under the output root (only read here)."""
        project = await resolve_project(self.client, self.options.project)
        self.store = export_store(self.storage, project["id"])
        try:
            loaded = await anyio.to_thread.run_sync(self.store.load)
        except CorruptState as exc:
            if not self.options.restart:
                raise UsageError(
                    f"{exc}; pass --restart to discard it (the run then reads every row)"
                ) from None
            log.warning("%s: discarded (--restart), with its watermarks: this run reads every row", exc)
            loaded = None
        self.state = loaded or ExportState(project_id=project["id"])
        self._project_name = project["name"]
        self._project = project
        return project

    def _resumes(self, run: RunState) -> bool:
        """Whether this invocation resumes the unfinished ``run`` (else ``--restart`` discards
        it); one that used other options is refused unless ``--restart``."""
        if self.options.restart:
            return False
        if run.options != self.options.run_key():
            raise UsageError(
                f"{self.storage.url}: an unfinished export (run {run.run_id}) used other options; "
                "re-run with the same options to resume it, or pass --restart to discard it"
            )
        return True

    async def _adopt_unfinished_run(self) -> bool:
        run = self.state.run
        if run is None:
            return False
        if self._resumes(run):
            await self._check_published(run)
            return True
        for obj in run.objects:  # every file of the run, those published after its last save too
            await anyio.to_thread.run_sync(drop_files, self.storage, obj, run.run_id)
        self.state.run = None
        await self._save()
        return False

    async def _check_published(self, run: RunState) -> None:
        """Before resuming, check every file the state says was published (exists, size,
        sha256). A range with a file missing or changed since is read again from its start,
        rather than the run finishing with a hole or a manifest entry that lies: its files are
        deleted, its checkpoint reset, and it publishes them anew. That is safe because the
        range reads again at the object's pinned version (an unpinned object has one range,
        which reads afresh), so each row still lands once, and its part numbers restart at 0."""
        for obj in run.objects:
            for rng in obj.ranges:
                damaged = await find_damage(self.storage, rng.files)
                if not damaged:
                    continue
                directory = layout.object_dir(obj.object_type, obj.id, run.run_id)
                prefix = f"{directory}/{layout.range_prefix(rng.index)}-"
                for path in await anyio.to_thread.run_sync(self.storage.list_files, prefix):
                    await anyio.to_thread.run_sync(self._delete_if_there, path)
                rng.cursor, rng.next_part, rng.rows, rng.done, rng.files = None, 0, 0, False, []
                await self._save()
                self._repaired.extend(str(d) for d in damaged)

    def _delete_if_there(self, relpath: str) -> None:
        try:
            self.storage.delete(relpath)
        except FileNotFoundError:
            pass

    async def _plan(self, project: dict[str, Any], *, read_ahead: bool = True) -> RunState:
        """Plan a new run: the selected objects, each snapshot and split into ranges;
        ``read_ahead``: read each range's first page meanwhile (a dry run reads none)."""
        started = datetime.now(UTC).isoformat()  # before the snapshots: what they read is no older
        found: dict[str, Capabilities] = {}
        probed = anyio.Event()

        async def probe() -> None:
            found["caps"] = await capabilities(self.client, from_object("project_logs", project["id"]))
            probed.set()

        async def caps() -> Capabilities:
            await probed.wait()
            return found["caps"]

        limiter = anyio.CapacityLimiter(self.options.range_workers)
        planned: dict[int, ObjectState] = {}

        async def plan_one(i: int, ref: ObjectRef) -> None:
            async with limiter:
                planned[i] = await self._plan_object(ref, caps, read_ahead=read_ahead)

        # The probe rides along with the listing and the snapshots: planning costs one round
        # trip of /btql before the first pages are asked for.
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(probe)
                refs = await resolve_selection(self.client, project, self.options.objects)
                if not refs and not self._config_kinds:
                    raise UsageError(
                        f"--objects {self.options.objects!r} selects nothing in project {project['name']!r}"
                    )
                await self._refuse_partial_new_tables(refs)
                for i, ref in enumerate(refs):
                    tg.start_soon(plan_one, i, ref)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        return RunState(
            run_id=layout.new_run_id(),
            started_at=started,
            options=self.options.run_key(),
            objects=[planned[i] for i in range(len(refs))],
        )

    async def _refuse_partial_new_tables(self, refs: list[ObjectRef]) -> None:
        """With ``--format delta``, a run reading part of the rows (``--filter``, ``--shape
        traces``, or ``--incremental`` after an earlier run: the table gone since) cannot
        create a table: refused before anything is read, so no unfinished run is left (an
        incremental run with no earlier one reads everything)."""
        opts = self.options
        if opts.format != "delta":
            return
        from pipeline.sinks.delta import refuse_partial_new_table

        partial_by = "--filter" if opts.filter else f"--shape {opts.shape}" if opts.shape != "spans" else None
        for object_type in dict.fromkeys(ref.object_type for ref in refs):
            since = opts.incremental and any(
                self.state.watermark(_watermark_key(ref, opts))
                for ref in refs
                if ref.object_type == object_type
            )
            by = partial_by or ("--incremental" if since else None)
            if by is not None:
                await anyio.to_thread.run_sync(refuse_partial_new_table, self.storage, object_type, by)

    async def _plan_object(
        self, ref: ObjectRef, probed: Callable[[], Awaitable[Capabilities]], *, read_ahead: bool
    ) -> ObjectState:
        """Snapshot the object and split it into ranges (one round trip, beside the probe),
        then, ``read_ahead``, read each range's first page while the server counts the
        snapshot's rows, where it can."""
        opts = self.options
        mark = self.state.watermark(_watermark_key(ref, opts)) if opts.incremental else None
        since = Since() if mark is None else Since(mark.version, mark.key)
        source = from_object(ref.object_type, ref.id, shape=opts.shape)

        async def by_created() -> bool:
            return not (await probed()).xact_filters

        # The estimate only sizes the ranges: it selects after the last run by the proven key.
        estimated = all_of(self.user_filter, since.expr(PROVEN_ONLY))
        snap = await take_snapshot(self.client, source, estimated, by_created=by_created)
        caps = await probed()
        since_field, since_value = since.bound(caps)
        selected = all_of(self.user_filter, since.expr(caps))
        nothing_new = snap.version is None or (
            since.version is not None and int(snap.version) <= int(since.version)
        )
        ranges: list[Range] = []
        if not nothing_new:
            # Whole traces must come from one cursor, or a trace could straddle two ranges.
            if opts.shape != "spans":
                wanted = 1
            elif snap.estimate is None:
                wanted = opts.range_split
            else:
                wanted = max(1, snap.estimate // opts.min_rows_per_range)
            ranges = plan_ranges(snap, min(opts.range_split, wanted), caps, since)
        obj = ObjectState(
            object_type=ref.object_type,
            id=ref.id,
            name=ref.name,
            project_id=ref.project_id,
            version=snap.version if snap.version is not None else since.version,
            expected_rows=0 if not ranges else None,
            since=since_value,
            since_field=since_field,
            newest_key=snap.newest_key if snap.newest_key is not None else since.key,
            estimate=snap.estimate,
            ranges=[RangeState(index=i, low=r.low, high=r.high, by=r.by) for i, r in enumerate(ranges)],
            info={} if ref.object_type == "project_logs" else ref.info,
        )
        counts: tuple[int | None, int | None] = (obj.estimate, None)
        whole: tuple[int | None, int | None] = (None, None)

        async def count_whole() -> None:
            # The tombstone pass reads every id of the object at the version, so a delete of a
            # row older than the last run, which neither count of the rows since shows, must be
            # seen in the whole object's counts (pipeline.export.tombstones).
            nonlocal whole
            assert obj.version is not None
            whole = await count_now_and_at(
                self.client, source, None, obj.version, at_version=caps.count_at_version
            )

        # An incremental read of spans counts its whole object too.
        whole_counted = (
            bool(obj.ranges) and obj.version is not None and since_value is not None and opts.shape == "spans"
        )
        async with anyio.create_task_group() as tg:
            if read_ahead:
                for rng in obj.ranges:
                    tg.start_soon(self._read_first_page, obj, rng)
            if whole_counted:
                tg.start_soon(count_whole)
            if obj.ranges and obj.version is not None:
                counts = await count_now_and_at(
                    self.client, source, selected, obj.version, at_version=caps.count_at_version
                )
        # Rows now, counted after the version was found: what a read whose count at the version
        # is unknown is checked against once written (_read_again_where_deleted).
        obj.estimate, at = counts
        obj.live_rows = whole[0]
        if at is not None:
            obj.expected_rows = at
        # Rows now not counted (a busy server timed the count out): deletes newer than the
        # version cannot be ruled out, nor seen once the rows are read; taken as there. Where the
        # rows since the last run were counted but the whole object was not (a big object, a
        # small increment), a delete of an older row is as unknown.
        uncounted = (
            bool(obj.ranges)
            and obj.version is not None
            and (obj.estimate is None or (whole_counted and whole[0] is None))
        )
        if uncounted:
            log.warning(
                "%s: the server could not count its rows (it timed the count out); deletes newer than the "
                "snapshot cannot be ruled out, so it is read %s",
                ref.label,
                "with its deletes recorded"
                if self._records_tombstones(obj)
                else "at its current state, as one range",
            )
        if uncounted or any(
            now is not None and then is not None and now < then for now, then in (counts, whole)
        ):
            if self._records_tombstones(obj):
                obj.newer_deletes = True  # its tombstones record them (pipeline.export.tombstones)
            else:
                self._read_unpinned(obj)
        return obj

    async def _plan_again_where_ids_were_lost(self, project: dict[str, Any], run: RunState) -> None:
        """Plan again, from scratch, each object of a resumed run whose ids at its start an
        earlier process took or was to take (``_take_ids_at_start``): they were not kept, and
        ids taken now would miss a row deleted after the version and written again before now.
        Its files go; the new plan reads it at a new version."""
        if self.options.format == "delta":
            return  # the stopped run may have committed its tables: they hold the plan it had
        stale = [i for i, obj in enumerate(run.objects) if self._needs_ids_at_start(obj) and not obj.gone]
        if not stale:
            return
        probed = await capabilities(self.client, from_object("project_logs", project["id"]))

        async def caps() -> Capabilities:
            return probed

        for i in stale:
            obj = run.objects[i]
            await anyio.to_thread.run_sync(drop_files, self.storage, obj, run.run_id)
            ref = ObjectRef(cast(ObjectType, obj.object_type), obj.id, obj.name, obj.project_id, obj.info)
            try:
                run.objects[i] = await self._plan_object(ref, caps, read_ahead=False)
            except Exception as exc:
                if not await self._gone(obj, exc):  # deleted at the source since: nothing to read
                    raise
            await self._save()

    def _needs_ids_at_start(self, obj: ObjectState) -> bool:
        """Whether the run takes ``obj``'s ids as it starts reading it (``_take_ids_at_start``)."""
        return self._records_tombstones(obj) and obj.newer_deletes and obj.pinned and bool(obj.ranges)

    async def _take_ids_at_start(self, obj: ObjectState) -> None:
        """The ids of an object read pinned whose deletes newer than its version were seen
        while planning, taken as its read starts: a row deleted after the version and written
        again during the run is then a tombstone, not a row with its content of before the
        delete (pipeline.export.tombstones)."""
        if not self._needs_ids_at_start(obj) or obj.gone or obj.key in self._ids_at_start:
            return
        from pipeline.export.tombstones import live_ids

        if self._ids_dir is None:
            self._ids_dir = tempfile.TemporaryDirectory(prefix="btpipe-ids-")
        directory = f"{self._ids_dir.name}/{next(self._ids_taken)}"  # numbered before any await
        self._ids_at_start[obj.key] = await live_ids(self.client, obj, directory)

    def _records_tombstones(self, obj: ObjectState) -> bool:
        """Whether the run records ``obj``'s deletes (an incremental read of the spans shape).
        Such an object is read pinned even when deletes newer than its version exist: the rows
        read there that are deleted by the end of the run are tombstones, and an unpinned read
        would start at a moment no id pass can be taken at."""
        return obj.since is not None and self.options.shape == "spans"

    def _read_unpinned(self, obj: ObjectState) -> None:
        """The newest writes were deletes: they leave no visible row, so the version of the
        newest row predates them and a read pinned there would bring the deleted rows back.
        Such an object is read as one range without a version, which the server pins at the
        first page (the walkthrough's read); its first pages, read pinned, are dropped, and
        its row count is not known."""
        for rng in obj.ranges:
            read = self._first_pages.pop((obj.id, rng.index), None)
            if read is not None and read[1] is not None:
                read[1].slot.release()
        obj.pinned = False
        obj.expected_rows = None
        obj.ranges = [RangeState(index=0, low=None, high=None, by=obj.ranges[0].by)]

    async def _read_first_page(self, obj: ObjectState, rng: RangeState) -> None:
        """Read the range's first page while the plan is finished, if the page budget has room
        (planning never waits for it); the range starts with it."""
        slot = self._page_budget.try_acquire()
        if slot is None:
            return
        pager = self._pager(obj, rng)
        # a range starts a new file, so its first page may fill one
        self._first_pages[(obj.id, rng.index)] = (
            pager,
            await self._fetch_into(pager, slot, self.options.file_rows),
        )

    def _pager(self, obj: ObjectState, rng: RangeState) -> Pager:
        """The pager of one range, from its checkpointed cursor."""
        return range_pager(self.client, self.options, self.user_filter, obj, rng)

    # -- running --------------------------------------------------------------------------

    async def _read_again_where_deleted(self, run: RunState) -> list[ObjectState]:
        """The objects read pinned that wrote more rows than were there just after their
        version was found, set to be read again without a version: only deletes newer than
        the version make that so (see ``_read_unpinned``). A server that counts at a version
        shows this while planning; elsewhere it shows only now. Their files go first. An object
        whose run records its deletes keeps its read: its tombstones record them."""
        shown = [obj for obj in run.objects if _shows_newer_deletes(obj)]
        again = [obj for obj in shown if not self._records_tombstones(obj)]
        for obj in shown:
            obj.newer_deletes = True
        for obj in again:
            for info in [f for rng in obj.ranges for f in rng.files]:
                await anyio.to_thread.run_sync(self._delete_if_there, info.path)
            self._read_unpinned(obj)
        if shown:
            await self._save()
        return again

    async def _run_ranges(self, run: RunState, objects: list[ObjectState] | None = None) -> None:
        limiter = anyio.CapacityLimiter(self.options.range_workers)
        starts: list[tuple[ObjectState, RangeState, Task, list[int]]] = []
        for obj in run.objects if objects is None else objects:
            task = self.progress.add(
                obj.name if obj.object_type == "project_logs" else f"{obj.object_type}:{obj.name}",
                obj.expected_rows if obj.expected_rows is not None else obj.estimate,
                done=obj.rows,
            )
            pending = [r for r in obj.ranges if not r.done]
            if not pending:
                task.finish()
            remaining = [len(pending)]
            starts.extend((obj, rng, task, remaining) for rng in pending)
        # The ranges holding a page read while planning take the limiter (first come, first
        # served) first: one waiting for it would keep a slot of the page budget from the
        # ranges running, which could all be waiting for a slot.
        starts.sort(key=lambda s: (s[0].id, s[1].index) not in self._first_pages)
        async with anyio.create_task_group() as tg:
            for obj, rng, task, remaining in starts:
                tg.start_soon(self._run_range, run, obj, rng, task, limiter, remaining)

    async def _run_range(
        self,
        run: RunState,
        obj: ObjectState,
        rng: RangeState,
        task: Task,
        limiter: anyio.CapacityLimiter,
        remaining: list[int],
    ) -> None:
        try:
            async with limiter:
                if obj.gone:
                    return
                if self._ranges is not None:
                    await self._ranges(self, run, obj, rng, task)
                else:
                    await self._read_range(run, obj, rng, task)
        except Exception as exc:
            if not await self._gone(obj, exc):
                raise
        remaining[0] -= 1
        if remaining[0] == 0:
            task.finish()

    async def _read_range(self, run: RunState, obj: ObjectState, rng: RangeState, task: Task) -> None:
        """Page one range into its files, checkpointing each: a fetcher and a writer joined by
        a stream of at most ``prefetch`` pages."""
        read = self._first_pages.pop((obj.id, rng.index), None)
        pager, first = read if read is not None else (self._pager(obj, rng), None)
        # The fetcher owns the first page; only its slot stays here. A page referred to for the
        # whole range would stay in memory beyond the page budget long after it was written.
        slot = None if first is None else first.slot
        del read
        send, receive = anyio.create_memory_object_stream[_HeldPage](self.options.prefetch)
        try:
            with _releasing(receive):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._fetch, pager, send, first)
                    del first
                    await self._write(run, obj, rng, receive, task)
        finally:
            if slot is not None:  # a no-op unless the fetcher was cancelled before it ran
                slot.release()

    @property
    def guard(self) -> Guard:
        """The lease the run holds, as the processes publishing its files check it."""
        return self._guard

    async def read_range(
        self, guard: Guard, run: RunState, obj: ObjectState, rng: RangeState, org_id: str
    ) -> None:
        """Read one range of ``run`` for a job whose driver runs elsewhere (a task of
        ``pipeline.ray``): its files go to the output root, each publish checking the
        driver's lease ``guard``, and each checkpoint goes to ``on_checkpoint`` rather than to
        a state file, which the driver alone writes. The sink runs in this process; the
        attachments the pages refer to are stored as the driver would, their keys added to
        ``run``'s lists (the caller reports them with the checkpoints)."""
        if self._on_checkpoint is None:
            raise RuntimeError("read_range needs an on_checkpoint")
        await self._open_storage()
        storage = self.storage
        self.storage, self._guard = GuardedStorage(storage, partial(guard.verify, storage)), guard
        opts = self.options
        self._attachments = AttachmentExport(
            self.client, self.storage, org_id,
            download=opts.attachments == "download", limit=opts.max_attachment_mb * defaults.MB,
            workers=opts.attachment_workers, keys=run.attachments, skipped=run.skipped_attachments,
        )  # fmt: skip
        task = self.progress.add(obj.name, None)
        await self._read_range(run, obj, rng, task)

    async def _gone(self, obj: ObjectState, exc: Exception) -> bool:
        """Whether ``exc``, raised reading ``obj``, says the object was deleted at the source
        (asked once of the REST API); if so it is marked gone and its reads stop
        (:mod:`pipeline.export.gone`)."""
        if not may_be_gone(exc):
            return False
        if not obj.gone:
            if not await deleted_at_source(self.client, obj):
                return False
            obj.gone = True
            await self._save()
        return True

    async def _drop_gone(self, run: RunState) -> None:
        """Delete what the run wrote of the objects found gone: it holds none of their rows."""
        for obj in run.objects:
            if obj.gone:
                await anyio.to_thread.run_sync(drop_files, self.storage, obj, run.run_id)
        if any(obj.gone for obj in run.objects):
            await self._save()

    async def _fetch(
        self, pager: Pager, send: MemoryObjectSendStream[_HeldPage], first: _HeldPage | None
    ) -> None:
        """Fetch pages into ``send``, after ``first`` (read while planning), each marked with
        whether its file ends after it. A page holds a slot of the page budget until it is
        written; one this task still holds when it stops (failed, cancelled) it gives back."""
        ends = _FileEnds(self.options.file_rows, self.options.file_bytes)
        held, first = first, None  # once sent, the page is the writer's alone
        try:
            async with send:
                if held is None:
                    held = await self._fetch_next(pager, ends.room)
                while held is not None:
                    short = held.page.rows < min(pager.limit, ends.room)  # most likely the last
                    held.ends_file = ends.ends_after(held.page)
                    if short:
                        held = await self._send_and_fetch(send, held, pager, ends.room)
                    else:
                        await send.send(held)
                        held = None
                        held = await self._fetch_next(pager, ends.room)
        finally:
            # Not sent; or sent just as this task failed: then the writer releases it too, and
            # only the first release counts.
            if held is not None:
                held.slot.release()

    async def _fetch_next(self, pager: Pager, at_most: int) -> _HeldPage | None:
        """The next page of at most ``at_most`` rows, once the budget has a slot for it."""
        return await self._fetch_into(pager, await self._page_budget.acquire(), at_most)

    async def _fetch_into(self, pager: Pager, slot: Slot, at_most: int) -> _HeldPage | None:
        """The next page of at most ``at_most`` rows, holding ``slot``; the slot is given back
        unless a page comes."""
        page = None
        try:
            page = await pager.next_page(at_most)
        finally:
            if page is None:
                slot.release()
        return None if page is None else _HeldPage(page, slot)

    async def _send_and_fetch(
        self, send: MemoryObjectSendStream[_HeldPage], held: _HeldPage, pager: Pager, at_most: int
    ) -> _HeldPage | None:
        """Send ``held`` and meanwhile ask for the next page. At a range's end that request,
        normally answered with no rows, would otherwise wait for the encoders to take
        ``held``, which with no latency left the ranges' last requests to the very end. A
        page it does return waits for a budget slot before it goes on."""
        fetched: list[Page | None] = []

        async def fetch() -> None:
            fetched.append(await pager.next_page(at_most))

        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            await send.send(held)
        following = fetched[0]
        return None if following is None else _HeldPage(following, await self._page_budget.acquire())

    def _open_sink(self, run: RunState, obj: ObjectState, rng: RangeState) -> Sink:
        directory = layout.object_dir(obj.object_type, obj.id, run.run_id)
        prefix = layout.range_prefix(rng.index)
        if self.options.format == "jsonl":
            return JsonlSink(
                self.storage,
                directory,
                prefix=prefix,
                first_part=rng.next_part,
                compression=cast(
                    JsonlCompression,
                    None if self.options.file_compression == "none" else self.options.file_compression,
                ),
            )
        factory = partial(
            parquet_sink,
            directory=directory,
            object_type=cast(ObjectType, obj.object_type),
            prefix=prefix,
            first_part=rng.next_part,
            compression=self.options.file_compression,
            row_group_rows=self.options.row_group_rows,
            row_group_bytes=self.options.row_group_mb * 2**20,
            stored=self.options.format == "delta",
        )
        if self._workers is None:
            return factory(self.storage)
        return self._workers.open(partial(with_guard, factory, self._guard))

    async def _write(
        self,
        run: RunState,
        obj: ObjectState,
        rng: RangeState,
        receive: MemoryObjectReceiveStream[_HeldPage],
        task: Task,
    ) -> None:
        """Drain pages into the sink, publishing a file where the fetcher marked its end; each
        published file moves the checkpoint forward."""
        sink = await anyio.to_thread.run_sync(self._open_sink, run, obj, rng)
        cursor = rng.cursor
        async with AsyncExitStack() as stack:
            stack.push_async_exit(partial(_exit_in_thread, sink))  # on failure: abort the open file
            async for held in receive:
                page, ends_file = held.page, held.ends_file
                with held.slot:
                    await anyio.to_thread.run_sync(
                        sink.write_page, page.raw, page.rows, limiter=self._encoders
                    )
                    await self._attachments.take(page.raw)
                # The page's bytes go with its slot: held until the next page comes, they would
                # be one page per range beyond the page budget.
                del held
                cursor, rows, size = page.cursor, page.rows, len(page.raw)
                del page
                if self._first_row_seconds is None:
                    self._first_row_seconds = seconds_since_start()
                task.advance(rows, size)
                if ends_file:
                    published = await anyio.to_thread.run_sync(sink.flush)
                    await self._published(rng, published, cursor, done=False)
            published = await anyio.to_thread.run_sync(sink.close)
            await self._published(rng, published, cursor, done=True)

    async def _published(
        self, rng: RangeState, published: list[FileInfo], cursor: str | None, *, done: bool
    ) -> None:
        if self._on_checkpoint is not None:
            await self._on_checkpoint(rng, published, cursor, done)
        else:
            await self.checkpoint(rng, published, cursor, done=done)

    @staticmethod
    def add_attachments(run: RunState, keys: list[str], skipped: list[str]) -> None:
        """Attachment keys a range read elsewhere stored (``keys``) or left out (``skipped``),
        into ``run``'s lists, which the manifest is written from; each key once."""
        for found, into in ((keys, run.attachments), (skipped, run.skipped_attachments)):
            have = set(into)
            for key in found:
                if key not in have:
                    have.add(key)
                    into.append(key)

    async def checkpoint(
        self, rng: RangeState, published: list[FileInfo], cursor: str | None, *, done: bool
    ) -> None:
        """Record ``published`` files of ``rng``, which hold every page up to ``cursor``, in
        the state file."""
        async with self._state_lock:
            rng.advance(published, cursor, done=done)
            await self._save_locked()

    async def _save(self) -> None:
        async with self._state_lock:
            await self._save_locked()

    async def _save_locked(self) -> None:
        await self.store.save_async(self.state)

    # -- finishing ------------------------------------------------------------------------

    async def _finish(self, run: RunState) -> tuple[str, dict[str, Any]]:
        for obj in run.objects:
            if not obj.gone and obj.expected_rows is not None and obj.rows != obj.expected_rows:
                label = obj.name if obj.object_type == "project_logs" else f"{obj.object_type}:{obj.name}"
                raise IncompleteExport(
                    f"{label}: wrote {obj.rows:,} rows but the snapshot at version {obj.version} holds "
                    f"{obj.expected_rows:,}; nothing was published for this run (pass --restart to "
                    "read it again)"
                )
        scope = Scope(self.options.shape, self.options.filter or "")
        previous = {obj.key: self._previous_run(obj) for obj in run.objects}
        # imported here: the id pass reads files through pyarrow, which a run that records no
        # tombstones (a full run, JSONL) never needs in this process
        from pipeline.export.tombstones import record_tombstones

        tombstones = await record_tombstones(
            self.client, self.storage, run.run_id, [obj for obj in run.objects if not obj.gone],
            scope=scope, previous=previous, workers=self.options.range_workers, start=self._ids_at_start,
            # a Delta run may have committed this object's rows before it stopped: it fails instead
            gone=None if self.options.format == "delta" else self._gone,
        )  # fmt: skip
        await self._drop_gone(run)  # an object found deleted at the source by its pass
        tables = await self._commit_tables(run, scope, tombstones)
        config, found = await export_config(
            self.client, self.storage, self._project, self._config_kinds, run.run_id
        )
        # Attachments the objects themselves refer to (a dataset's metadata, a prompt's), not
        # only their rows: a restore uploads them as it recreates the objects.
        held: list[Any] = [obj.info for obj in run.objects if not obj.gone]
        held += [*found.objects.values(), *found.versions.values()]
        await self._attachments.take(await anyio.to_thread.run_sync(jsoncodec.dumps, held))
        entries = await anyio.to_thread.run_sync(self._attachments.entries)
        attached = manifest_section(entries, len(run.skipped_attachments))
        manifest = Manifest(
            run_id=run.run_id,
            attachments=attached,
            started_at=run.started_at,
            finished_at=datetime.now(UTC).isoformat(),
            api_url=self.client.base_url,
            format=self.options.format,
            query=self.user_filter,
            options={**run.options, "project_id": self.state.project_id, "project_name": self._project_name},
            tables=tables,
            objects=tuple(
                ObjectManifest(
                    object_type=obj.object_type,
                    object_id=obj.id,
                    name=obj.name,
                    project_id=obj.project_id,
                    snapshot_version=obj.version,
                    since_version=obj.since,
                    rows_expected=obj.expected_rows,
                    rows_written=obj.rows,
                    files=tuple(f for r in obj.ranges for f in r.files),
                    complete=obj.since is None and scope == FULL_SCOPE and not obj.gone,
                    previous_run=previous[obj.key],
                    tombstones=tombstones.get(obj.key),
                    info=obj.info,
                    gone=obj.gone,
                )
                for obj in run.objects
            ),
        )
        self._config = {entry.kind: entry.objects for entry in config}
        self._config_unserved = found.unserved
        manifest = replace(manifest, config=config)
        path = await anyio.to_thread.run_sync(write_manifest, self.storage, manifest)
        async with self._state_lock:
            for obj in run.objects:
                if obj.gone:
                    self.state.watermarks.pop(_watermark_key(obj, self.options), None)
                elif obj.version is not None:
                    key = _watermark_key(obj, self.options)
                    self.state.watermarks[key] = Watermark(obj.version, run.run_id, obj.newest_key)
            self.state.run = None
            await self._save_locked()
        return path, attached

    async def _commit_tables(
        self, run: RunState, scope: Scope, tombstones: dict[str, FileInfo]
    ) -> dict[str, int]:
        """``--format delta``: the run applied to its Delta tables, one commit per table
        (:mod:`pipeline.sinks.delta`), once its files and tombstones are out and before its
        manifest; the version of each table after it. Other formats: nothing."""
        if self.options.format != "delta":
            return {}
        from pipeline.sinks.delta import StagedObject, commit_run  # deltalake loads only here

        staged = [
            StagedObject(
                object_type=cast(ObjectType, obj.object_type),
                object_id=obj.id,
                files=tuple(f.path for r in obj.ranges for f in r.files),
                tombstones=tombstones[obj.key].path if obj.key in tombstones else None,
                complete=obj.since is None and scope == FULL_SCOPE,
            )
            for obj in run.objects
            if not obj.gone
        ]
        # Every dataset (experiment) of the project listed: one the table holds and the run did
        # not list was deleted at the source.
        listed: dict[ObjectType, str] = {
            s.object_type: self.state.project_id
            for s in parse_selection(self.options.objects)
            if s.name is None and s.object_type != "project_logs"
        }
        return await anyio.to_thread.run_sync(
            commit_run, self.storage, run.run_id, staged, self._lease_check, listed
        )

    def _previous_run(self, obj: ObjectState) -> str | None:
        """The run that read ``obj`` last in this run's scope: the one an incremental read
        continues (its watermark, which this run replaces only once its manifest is out)."""
        mark = self.state.watermark(_watermark_key(obj, self.options))
        return None if mark is None else mark.run_id
