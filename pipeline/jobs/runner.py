"""Run the jobs of a job file: exports (with full-run rotation and retention) and migrations.

A scheduled export job runs one :class:`~pipeline.export.runner.ExportJob` per project into
the same output root, then prunes runs beyond ``keep_runs`` (:mod:`pipeline.jobs.retention`).
Everything the next run needs (state, manifests) lives in the output root, so a cron job on a
fresh machine pointed at the same ``s3://`` prefix carries on where the last run stopped.
A dataset or experiment deleted at the source while a run is unfinished does not stop the job
night after night: the run records it as gone, with a warning, and finishes the rest
(:mod:`pipeline.export.gone`). ``restart`` discards the unfinished runs of the jobs (and a
migrate job's saved state) and starts them afresh.

The job holds the output root's lease (:mod:`pipeline.common.lease`) from before its first
export until retention is done, so a second ``btpipe run`` or an ad-hoc ``btpipe export`` into
the same root waits (``wait_lease`` seconds) or stops, naming the holder, instead of
interleaving its files with this run's or pruning runs under it. A migrate job's state file
has its own lease (:mod:`pipeline.common.jobstate`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

import anyio

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import resolve_project
from pipeline.common.defaults import WAIT_LEASE
from pipeline.common.errors import BtpipeError, UsageError
from pipeline.common.lease import ROOT_LEASE, guarded, hold
from pipeline.common.progress import Progress
from pipeline.common.state import CorruptState, export_store
from pipeline.common.storage import Storage, no_empty_root_left, open_storage
from pipeline.export.runner import ExportJob, ExportSummary
from pipeline.jobs import retention
from pipeline.jobs.config import Connection, ExportJobConfig, JobConfig, JobFile, MigrateJobConfig
from pipeline.load.migrate import MigrateJob
from pipeline.verify import VerifyJob

T = TypeVar("T")


@dataclass
class JobResult:
    """What one job did, for the summary line and ``--json``."""

    name: str
    kind: str
    rows: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    out: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    pruned_runs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: False when the job ran but left something undone (skipped events, a verify difference).
    ok: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _incremental_for(storage: Storage, project_id: str, job: ExportJobConfig, restart: bool) -> bool:
    """Incremental unless ``full_every`` says this run re-bases; an unfinished run keeps its mode
    (unless it is discarded: ``restart``)."""
    if not job.incremental:
        return False
    if not restart:  # a state it cannot read is the export's to refuse (or, restarted, discard)
        with contextlib.suppress(CorruptState):
            saved = await anyio.to_thread.run_sync(export_store(storage, project_id).load)
            if saved is not None and saved.run is not None:
                return saved.run.incremental
    runs = await anyio.to_thread.run_sync(retention.project_runs, storage, project_id)
    scope = retention.job_scope(job)
    return not retention.full_run_due([r for r in runs if r.scope == scope], job.full_every)


async def _prune(storage: Storage, project_id: str, job: ExportJobConfig, result: JobResult) -> None:
    if job.keep_runs is None:
        return
    runs = await anyio.to_thread.run_sync(retention.project_runs, storage, project_id)
    plan = retention.plan_retention(runs, job.keep_runs, retention.job_scope(job), job.full_every)
    if plan.warning:
        result.warnings.append(f"job.{job.name}: {plan.warning}")
    await anyio.to_thread.run_sync(retention.prune_runs, storage, plan.prune)
    result.pruned_runs.extend(r.run_id for r in plan.prune)


def _add_export(result: JobResult, summary: ExportSummary) -> None:
    result.rows += summary.rows
    result.files += sum(o.files for o in summary.objects)
    result.bytes += sum(o.bytes for o in summary.objects)
    result.runs.append(summary.to_json())
    result.warnings.extend(
        f"job.{result.name}: {gone} was deleted at the source; recorded as gone in run {summary.run_id}"
        for gone in summary.gone
    )


async def run_export_job(
    job: ExportJobConfig,
    source: Connection,
    progress: Progress,
    *,
    wait_lease: float = WAIT_LEASE.default,
    restart: bool = False,
) -> JobResult:
    """Export every project of ``job`` into its output root, then apply retention, holding the
    root's lease throughout (waiting up to ``wait_lease`` seconds for it)."""
    started = time.monotonic()
    result = JobResult(name=job.name, kind=job.kind, out=job.out)
    storage = await anyio.to_thread.run_sync(open_storage, job.out)
    result.out = storage.url
    async with BraintrustClient(source.client_settings()) as client:
        projects = [await resolve_project(client, name) for name in job.projects]  # before any output
        with no_empty_root_left(storage):
            await _export_projects(client, storage, job, projects, progress, result, wait_lease, restart)
    result.seconds = round(time.monotonic() - started, 3)
    return result


async def _export_projects(
    client: BraintrustClient,
    storage: Storage,
    job: ExportJobConfig,
    projects: list[dict[str, Any]],
    progress: Progress,
    result: JobResult,
    wait_lease: float,
    restart: bool,
) -> None:
    async with hold(storage, ROOT_LEASE, command="run", wait=wait_lease) as lease:
        storage = guarded(storage, lease)  # retention deletes only while the lease is ours
        for project in projects:
            incremental = await _incremental_for(storage, project["id"], job, restart)
            options = replace(job.export_options(project["id"], incremental=incremental), restart=restart)
            summary = await ExportJob(client, options, progress, lease=lease).run()
            _add_export(result, summary)
            await _prune(storage, project["id"], job, result)


async def run_migrate_job(
    job: MigrateJobConfig,
    source: Connection,
    destination: Connection,
    progress: Progress,
    *,
    wait_lease: float = WAIT_LEASE.default,
    restart: bool = False,
) -> JobResult:
    """Copy ``job.project`` to ``job.to_project`` and, with ``verify``, compare the two.

    What ``btpipe migrate`` exits 1 for (:meth:`LoadSummary.failures`) or a verify difference
    leaves ``ok`` false (exit code 1); its warnings go with the job's.
    """
    started = time.monotonic()
    result = JobResult(name=job.name, kind=job.kind)
    async with (
        BraintrustClient(source.client_settings(name_side=True)) as src,
        BraintrustClient(destination.client_settings(name_side=True)) as dst,
    ):
        options = job.migrate_options()
        options = replace(options, load=replace(options.load, wait_lease=wait_lease, restart=restart))
        summary = await MigrateJob(src, dst, options, progress).run()
        result.rows = summary.rows
        result.details["migrate"] = summary.to_json()
        result.warnings += [f"job.{job.name}: {line}" for line in summary.warnings]
        failures = summary.failures()
        if failures:
            result.ok = False
            result.warnings += [f"job.{job.name}: {line}" for line in failures]
        if job.verify:
            diffs = await VerifyJob(dst, job.to_project, ",".join(job.objects), progress).against_project(
                src, job.project
            )
            result.details["verify"] = [d.to_json() for d in diffs]
            result.warnings.extend(f"job.{job.name}: {d.describe()}" for d in diffs if not d.ok)
            result.ok = result.ok and all(d.ok for d in diffs)
    result.seconds = round(time.monotonic() - started, 3)
    return result


async def run_job(
    jobs: JobFile,
    job: JobConfig,
    progress: Progress,
    *,
    wait_lease: float = WAIT_LEASE.default,
    restart: bool = False,
) -> JobResult:
    if jobs.source is None:
        raise UsageError(f"{jobs.path}: job.{job.name} has no [source] connection")
    if isinstance(job, ExportJobConfig):
        return await run_export_job(job, jobs.source, progress, wait_lease=wait_lease, restart=restart)
    if jobs.destination is None:
        raise UsageError(f"{jobs.path}: job.{job.name} has no [destination] connection")
    return await run_migrate_job(
        job, jobs.source, jobs.destination, progress, wait_lease=wait_lease, restart=restart
    )


class JobFailed(BtpipeError):
    """A job of a file failed: its error, named by the job, with the error's exit code."""

    def __init__(self, name: str, error: BtpipeError) -> None:
        super().__init__(f"job {name}: {error}")
        self.name = name
        self.error = error
        self.exit_code = error.exit_code


async def run_jobs(
    jobs: JobFile,
    progress: Progress,
    *,
    wait_lease: float = WAIT_LEASE.default,
    restart: bool = False,
    done: list[JobResult] | None = None,
) -> list[JobResult]:
    """Every job of ``jobs`` in file order; the first failure stops the rest (``JobFailed``),
    the jobs before it having appended their results to ``done``. Each waits up to
    ``wait_lease`` seconds for a lease another run holds (its output root, its state file);
    ``restart`` discards each job's unfinished run instead of resuming it."""
    results = done if done is not None else []
    for job in jobs.jobs.values():
        try:
            results.append(await run_job(jobs, job, progress, wait_lease=wait_lease, restart=restart))
        except BtpipeError as exc:
            raise JobFailed(job.name, exc) from exc
    return results
