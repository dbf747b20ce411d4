"""``btpipe import``: export files back into a project through the insert endpoints.

    find inputs -> destination objects (created by name when missing) -> per object, in file
    order: read a chunk (thread) -> transform + encode -> batcher -> insert pool -> ledger

Objects are read one after another through one shared pool of insert workers. The checkpoint
of an object is ``(file, position)`` of the last row of the applied prefix, plus ``rows``;
a resumed run skips the files before that file without opening them and the rows up to that
position inside it. See :mod:`pipeline.load.jobstate` for where the state file lives.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import ObjectRef, ensure_project, resolve_project
from pipeline.errors import NotFoundError, UsageError
from pipeline.load.batcher import Batcher, Item
from pipeline.load.destinations import ensure_object
from pipeline.load.inputs import InputObject, find_inputs, open_input, select_inputs
from pipeline.load.insert import ErrorLog, InsertOptions, InsertPool, Ledger, feed, request_limit
from pipeline.load.jobstate import DEFAULT_STATE_DIR, JobState
from pipeline.load.transform import SourceObject, encode_event, to_event
from pipeline.progress import Progress, Task
from pipeline.rows import ObjectType
from pipeline.sinks.storage import Storage, location
from pipeline.sources import SourceRow, iter_rows


@dataclass(frozen=True)
class LoadOptions:
    """Batching and concurrency knobs shared by import, migrate and delete."""

    batch_rows: int = 1000
    max_batch_bytes: int | None = None
    insert: InsertOptions = field(default_factory=InsertOptions)
    state_dir: str = DEFAULT_STATE_DIR
    restart: bool = False
    error_file: str | None = None


@dataclass(frozen=True)
class ImportOptions:
    input: str
    to_project: str
    objects: str | None = None
    to_object: str | None = None
    create_project: bool = False
    load: LoadOptions = LoadOptions()


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
    """What a load (import or migrate) did; ``skipped`` > 0 means exit code 1."""

    seconds: float = 0.0
    resumed: bool = False
    requests: int = 0
    retries: int = 0
    splits: int = 0
    request_limit: int = 0
    error_file: str | None = None
    state_file: str | None = None
    objects: list[ObjectResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(o.rows for o in self.objects)

    @property
    def skipped(self) -> int:
        return sum(o.skipped for o in self.objects)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows, "skipped": self.skipped}


def parse_to_object(text: str) -> tuple[ObjectType, str | None]:
    """``logs`` | ``dataset:NAME`` | ``experiment:NAME``."""
    kind, _, name = text.partition(":")
    if text in ("logs", "project_logs"):
        return "project_logs", None
    if kind == "dataset" and name:
        return "dataset", name
    if kind == "experiment" and name:
        return "experiment", name
    raise UsageError(f"--to-object: expected logs, dataset:NAME or experiment:NAME, got {text!r}")


async def destination_project(client: BraintrustClient, name: str, create: bool) -> dict[str, Any]:
    """The destination project; created only when asked, so a typo cannot scatter data."""
    try:
        return await resolve_project(client, name)
    except NotFoundError:
        if not create:
            raise NotFoundError(
                f"destination project {name!r} not found (pass --create-project to create it)"
            ) from None
    return await ensure_project(client, name)


def open_error_log(options: LoadOptions, state: JobState) -> ErrorLog | None:
    if options.insert.on_error != "skip":
        return None
    if options.error_file:
        return ErrorLog(options.error_file)
    return ErrorLog(state.location.removesuffix(".json") + ".errors.jsonl")


class LoadRun:
    """The part import and migrate share: one pool, one ledger per object, the state file."""

    def __init__(self, client: BraintrustClient, options: LoadOptions, state: JobState, progress: Progress):
        self.client = client
        self.options = options
        self.state = state
        self.progress = progress
        self.error_log = open_error_log(options, state)
        self.summary = LoadSummary(state_file=state.location)
        self.pool: InsertPool

    async def start(self) -> None:
        limit = await request_limit(self.client, self.options.max_batch_bytes)
        self.summary.request_limit = limit
        self.pool = InsertPool(
            self.client, self.options.insert, max_request_bytes=limit, error_log=self.error_log
        )
        self.summary.error_file = self.error_log.path if self.error_log else None

    def batcher(self, record: dict[str, Any], ref: ObjectRef, task: Task) -> Batcher:
        """A batcher whose ledger writes the mark into ``record`` and saves the state."""

        async def advance(ledger: Ledger, mark: Any) -> None:
            delta = ledger.rows - record["applied_this_run"]
            record["applied_this_run"] = ledger.rows
            record["rows"] += delta
            record["skipped"] = skipped_before + ledger.skipped
            task.advance(delta)
            if mark is not None:
                record["mark"] = mark
            await self.state.save()

        record["applied_this_run"] = 0
        skipped_before = record.setdefault("skipped", 0)
        ledger = Ledger(ref.label, advance)
        return Batcher(
            ref.rows_path,
            max_rows=self.options.batch_rows,
            max_bytes=self.summary.request_limit,
            ledger=ledger,
        )

    def finish(self, started: float, results: list[ObjectResult]) -> LoadSummary:
        if self.error_log is not None:
            self.error_log.close()
        stats = self.client.statistics()
        pool = self.pool.statistics()
        self.summary.seconds = round(time.monotonic() - started, 3)
        self.summary.requests = stats.requests
        self.summary.retries = stats.retries
        self.summary.splits = pool.splits
        self.summary.objects = results
        return self.summary


class ImportJob:
    def __init__(self, client: BraintrustClient, options: ImportOptions, progress: Progress) -> None:
        self.client = client
        self.options = options
        self.progress = progress

    async def run(self) -> LoadSummary:
        started = time.monotonic()
        opts = self.options
        storage, prefix = await anyio.to_thread.run_sync(open_input, opts.input)
        inputs = select_inputs(await anyio.to_thread.run_sync(find_inputs, storage, prefix), opts.objects)
        if not inputs:
            raise UsageError(f"{opts.input}: the input holds no objects to import")
        to_object = parse_to_object(opts.to_object) if opts.to_object else None
        if to_object is not None and len(inputs) > 1:
            raise UsageError(f"--to-object names one destination but the input holds {len(inputs)} objects")
        for obj in inputs:
            if obj.object_type is None and to_object is None:
                raise UsageError(
                    f"{obj.files[0]}: not in an export's object_type=/object_id= layout; pass --to-object"
                )
        identity = {
            "input": location(storage, prefix) if prefix else storage.url,
            "api_url": self.client.base_url,
            "project": opts.to_project,
            "objects": opts.objects,
            "to_object": opts.to_object,
        }
        state = JobState(opts.load.state_dir, "import", identity)
        resumed = await state.load(restart=opts.load.restart)
        project = await destination_project(self.client, opts.to_project, opts.create_project)
        run = LoadRun(self.client, opts.load, state, self.progress)
        run.summary.resumed = resumed
        await run.start()
        plans: list[tuple[InputObject, ObjectRef, bool]] = []
        id_map: dict[str, str] = {}
        for obj in inputs:
            kind = to_object[0] if to_object else obj.object_type
            assert kind is not None
            name = (to_object[1] if to_object else None) or obj.name or obj.id or "imported"
            ref, created = await ensure_object(self.client, kind, name, project, {}, id_map)
            if obj.id is not None:
                id_map[obj.id] = ref.id
            plans.append((obj, ref, created))
        results: list[ObjectResult] = []

        async def produce() -> None:
            for obj, ref, created in plans:
                record = state.objects.setdefault(
                    obj.key, {"destination": ref.id, "rows": 0, "mark": None, "done": False}
                )
                if record["destination"] != ref.id:
                    raise UsageError(
                        f"{state.location}: {obj.label} was being imported into another object; pass --restart"
                    )
                task = self.progress.add(f"{obj.label} -> {ref.label}", obj.rows)
                task.advance(record["rows"])
                if not record["done"]:
                    source = SourceObject(obj.object_type or ref.object_type, obj.id)
                    batcher = run.batcher(record, ref, task)
                    await feed(run.pool, batcher, self._chunks(storage, obj, source, record["mark"]))
                task.finish()
                results.append(ObjectResult(obj.label, ref.label, ref.id, created, 0, 0))
                await state.save()

        try:
            await run.pool.run(produce)
        finally:
            await state.save()
        for (obj, _ref, _created), result in zip(plans, results, strict=True):
            record = state.objects[obj.key]
            record["done"] = True
            result.rows = record["rows"]
            result.skipped = record.get("skipped", 0)
        summary = run.finish(started, results)
        await state.clear()
        return summary

    async def _chunks(
        self, storage: Storage, obj: InputObject, source: SourceObject, mark: list[Any] | None
    ) -> AsyncIterator[list[Item]]:
        files = obj.files
        start_file, after = 0, -1
        if mark is not None:
            if mark[0] not in files:
                raise UsageError(
                    f"{mark[0]}: in the saved state but not in the input any more; pass --restart"
                )
            start_file, after = files.index(mark[0]), int(mark[1])
        for index in range(start_file, len(files)):
            path = files[index]
            skip_to = after if index == start_file else -1
            reader = iter_rows(storage, path)
            while True:
                items = await anyio.to_thread.run_sync(_next_items, reader, source, storage, skip_to)
                if items is None:
                    break
                if items:
                    yield items


def _next_items(
    reader: Iterator[list[SourceRow]], source: SourceObject, storage: Storage, skip_to: int
) -> list[Item] | None:
    """Read one chunk and turn it into items (runs in a worker thread)."""
    chunk = next(reader, None)
    if chunk is None:
        return None
    items = []
    for row, path, position in chunk:
        if position <= skip_to:
            continue
        event = to_event(row, source)
        event_id = row.get("id")
        if not isinstance(event_id, str):
            raise UsageError(f"{location(storage, path)}:{position}: row has no string id")
        where = f"{location(storage, path)}:{position}"
        items.append(Item(encode_event(event), event_id, where, (path, position)))
    return items
