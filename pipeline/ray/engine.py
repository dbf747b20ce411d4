"""``--engine ray``: the ranges of an export and the objects of an import as Ray tasks.

The driver (the ``btpipe`` process) does all it does with the local engine: it holds the
output root's or the state file's lease, plans, keeps the state, writes the manifest. Only
the reading and writing move: an export range runs as a task that pages the range under the
run's snapshot into its part files (:meth:`pipeline.export.runner.ExportJob.read_range`), an
import object as a task that reads its files in order into the insert endpoints (the import's
batcher, ledger and insert pool). Each task is a Ray streaming generator that yields every
checkpoint as it is reached, so the driver saves the state exactly as the local engine does,
and a killed driver resumes from it the same way. A task lost with its worker or node is run
again from the newest checkpoint, up to :data:`TASK_ATTEMPTS` times; files it published
after that checkpoint are written again under the same names, events keep their ids.
"""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import anyio
import ray

from pipeline.api.client import ClientSettings
from pipeline.api.objects import ObjectRef
from pipeline.common.errors import UsageError
from pipeline.common.lease import Guard
from pipeline.common.manifest import FileInfo
from pipeline.common.progress import Progress, Task
from pipeline.common.state import ObjectProgress, ObjectState, RangeState, RunState
from pipeline.common.storage import open_storage
from pipeline.export.runner import ExportJob
from pipeline.load.attachments import AttachmentCopier, ExportedAttachments
from pipeline.load.importer import ImportJob, object_runs
from pipeline.load.insert import InsertOptions, InsertPool
from pipeline.load.ordered import feed_runs
from pipeline.load.run import object_batcher
from pipeline.ray import cluster
from pipeline.ray.budget import request_budget
from pipeline.sources.inputs import InputObject

T = TypeVar("T")

#: Runs of one task lost with its worker or node (not failed by an error of its own).
TASK_ATTEMPTS = 3
#: The CPU a range or object task reserves: it mostly waits on the API, so a node runs
#: several per core (``--workers`` bounds how many the driver keeps in flight).
TASK_CPUS = 0.25


@dataclass(frozen=True)
class ObjectPlan:
    """What an import task needs besides its object: where the input is, how to batch and
    insert, and how to copy attachments as the driver would (the destination project, the
    attachments copied before, source key -> destination key), and the objects the import
    copies (source id -> destination id), for the rows' ``origin``."""

    input_url: str
    insert: InsertOptions
    batch_rows: int
    request_limit: int
    project: dict[str, str]
    mapping: dict[str, str]
    attachment_limit: int
    attachment_workers: int
    copies: dict[str, str]


@dataclass(frozen=True)
class RangeCheckpoint:
    """Files an export range task published, holding every page up to ``cursor``."""

    files: list[FileInfo]
    cursor: str | None
    done: bool
    #: Attachment keys the task stored, and left out, since its last checkpoint.
    attachments: list[str]
    skipped_attachments: list[str]


def _stream(body: Callable[[Callable[[T], Awaitable[None]]], Awaitable[None]]) -> Iterator[T]:
    """Run ``body(report)`` on an event loop of this task and yield what it reports, in order,
    as it reports it; an error of ``body`` is raised after what it reported before."""
    send, receive = anyio.create_memory_object_stream[T](1)

    async def run() -> None:
        async with send:
            await body(send.send)

    with cluster.portal() as loop:
        future = loop.start_task_soon(run)
        while True:
            try:
                item = loop.call(receive.receive)
            except anyio.EndOfStream:
                break
            yield item
        future.result()


@ray.remote(num_returns="streaming", max_retries=0, num_cpus=TASK_CPUS)
def _export_range(
    settings: ClientSettings,
    api_key_env: str,
    budget: Any,
    options: Any,
    guard: Guard,
    run: RunState,
    obj: ObjectState,
    rng: RangeState,
    org_id: str,
) -> Iterator[RangeCheckpoint]:
    reported = [len(run.attachments), len(run.skipped_attachments)]

    async def body(report: Callable[[RangeCheckpoint], Awaitable[None]]) -> None:
        async def on_checkpoint(
            _rng: RangeState, files: list[FileInfo], cursor: str | None, done: bool
        ) -> None:
            keys, skipped = run.attachments[reported[0] :], run.skipped_attachments[reported[1] :]
            reported[:] = [len(run.attachments), len(run.skipped_attachments)]
            await report(RangeCheckpoint(files, cursor, done, keys, skipped))

        async with cluster.worker_client(settings, api_key_env, budget) as client:
            job = ExportJob(client, options, Progress(), on_checkpoint=on_checkpoint)
            await job.read_range(guard, run, obj, rng, org_id)

    yield from _stream(body)


@ray.remote(num_returns="streaming", max_retries=0, num_cpus=TASK_CPUS)
def _import_object(
    settings: ClientSettings,
    api_key_env: str,
    budget: Any,
    plan: ObjectPlan,
    obj: InputObject,
    ref: ObjectRef,
    record: ObjectProgress,
) -> Iterator[tuple[ObjectProgress, dict[str, str]]]:
    async def body(report: Callable[[tuple[ObjectProgress, dict[str, str]]], Awaitable[None]]) -> None:
        storage = await anyio.to_thread.run_sync(open_storage, plan.input_url)
        async with cluster.worker_client(settings, api_key_env, budget) as client:
            pool = InsertPool(client, plan.insert, max_request_bytes=plan.request_limit)
            copier = AttachmentCopier(
                ExportedAttachments(storage, plan.attachment_limit), client, plan.project,
                mapping=dict(plan.mapping), workers=plan.attachment_workers,
            )  # fmt: skip

            async def save() -> None:
                await report((copy.copy(record), dict(copier.mapping)))

            batcher = object_batcher(ref, record, plan.batch_rows, plan.request_limit, save=save)
            runs = object_runs(storage, obj, ref, record.position, copier, plan.copies)
            await pool.run(partial(feed_runs, pool, batcher, runs))

    yield from _stream(body)


async def _follow(submit: Callable[[], Any], take: Callable[[Any], Awaitable[None]]) -> None:
    """Run the streaming task ``submit()`` makes, handing each item to ``take``; a task lost
    with its worker is submitted again (``submit`` starts from the newest checkpoint), an
    error of the task itself is raised as it is (:func:`pipeline.ray.cluster.awaited`)."""
    for attempt in range(1, TASK_ATTEMPTS + 1):
        try:
            async for ref in submit():
                await take(await cluster.awaited(ref))
            return
        except ray.exceptions.RayTaskError:
            raise
        except ray.exceptions.RayError:
            if attempt == TASK_ATTEMPTS:
                raise


class RayRanges:
    """The export's ranges as Ray tasks (:class:`pipeline.export.runner.RangeRunner`)."""

    def __init__(self, api_key_env: str, budget: Any) -> None:
        self.api_key_env = api_key_env
        self.budget = budget

    async def __call__(
        self, job: ExportJob, run: RunState, obj: ObjectState, rng: RangeState, task: Task
    ) -> None:
        options = replace(job.options, out=job.storage.url, workers=1, encoders=0)
        bare = replace(run, objects=[])  # the task needs the run's id, not every object of it

        def submit() -> Any:
            return _export_range.remote(
                cluster.worker_settings(job.client.settings), self.api_key_env, self.budget,
                options, job.guard, bare, obj, rng, job.org_id,
            )  # fmt: skip

        async def take(point: RangeCheckpoint) -> None:
            job.add_attachments(run, point.attachments, point.skipped_attachments)
            await job.checkpoint(rng, point.files, point.cursor, done=point.done)
            task.advance(sum(f.rows for f in point.files), sum(f.bytes for f in point.files))

        await _follow(submit, take)


class RayObjects:
    """The import's objects as Ray tasks (:class:`pipeline.load.importer.ObjectLoader`)."""

    def __init__(self, api_key_env: str, budget: Any) -> None:
        self.api_key_env = api_key_env
        self.budget = budget

    async def __call__(
        self,
        job: ImportJob,
        obj: InputObject,
        ref: ObjectRef,
        record: ObjectProgress,
        copies: Mapping[str, str],
        save: Callable[[ObjectProgress, dict[str, str]], Awaitable[None]],
    ) -> None:
        load = job.options.load
        if load.insert.on_error == "skip":
            raise UsageError("--on-error skip: not with --engine ray (the error file is this host's)")
        newest = [record]
        copier = job.load_run.attachments

        def submit() -> Any:
            plan = ObjectPlan(
                job.storage.url, load.insert, load.batch_rows, job.request_limit,
                {"id": copier.project_id, "org_id": copier.org_id}, dict(copier.mapping),
                load.attachment_limit, load.attachment_workers, dict(copies),
            )  # fmt: skip
            return _import_object.remote(
                cluster.worker_settings(job.client.settings), self.api_key_env, self.budget,
                plan, obj, ref, newest[0],
            )  # fmt: skip

        async def take(point: tuple[ObjectProgress, dict[str, str]]) -> None:
            newest[0] = point[0]
            await save(*point)

        await _follow(submit, take)


@asynccontextmanager
async def ray_engine(
    settings: ClientSettings,
    *,
    address: str | None,
    request_rate: float,
    api_key_env: str = "BRAINTRUST_API_KEY",
) -> AsyncIterator[tuple[str, Any]]:
    """Ray for one command: joined at ``address``, or a local one started (and stopped at the
    end); yields the name of the key's variable and the cluster's request budget. A local
    Ray's workers inherit this process's environment, so the key given as a flag is put
    there under ``api_key_env``; a cluster's nodes must have it set already."""
    started = not ray.is_initialized()
    if started and address is None and os.environ.get(api_key_env) != settings.api_key:
        os.environ[api_key_env] = settings.api_key
    cluster.start(address)  # in the main thread, where Ray sets its signal handlers
    budget = request_budget(request_rate)
    try:
        yield api_key_env, budget
    finally:
        ray.kill(budget)
        if started:
            await anyio.to_thread.run_sync(ray.shutdown)
