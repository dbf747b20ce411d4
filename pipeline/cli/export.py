"""``btpipe export``: project logs, datasets and experiments to Parquet or JSONL files.

The flags with a default are those of :mod:`pipeline.common.defaults`; the work is
:class:`pipeline.export.runner.ExportJob`'s. ``--dry-run`` prints the job's plan instead
(:mod:`pipeline.export.dryrun`), as text or ``--json``, on stdout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pipeline.api.client import ClientSettings
from pipeline.cli.common import (
    Output,
    api_options,
    emit_json,
    engine_options,
    output_options,
    ray_engine,
    run_async,
    with_client,
    with_progress,
)
from pipeline.cli.options import setting_options
from pipeline.common.defaults import (
    ATTACHMENT_WORKERS,
    ATTACHMENTS,
    COMPRESSION,
    DRY_RUN,
    ENCODERS,
    EXPORT_WORKERS,
    FILE_MB,
    FILE_ROWS,
    FILTER,
    FORMAT,
    INCREMENTAL,
    MAX_ATTACHMENT_MB,
    MB,
    MIN_ROWS_PER_RANGE,
    OBJECTS,
    PAGE_LIMIT,
    PREFETCH,
    RANGES_PER_OBJECT,
    ROW_GROUP_MB,
    ROW_GROUP_ROWS,
    SHAPE,
    WAIT_LEASE,
)
from pipeline.common.progress import Progress
from pipeline.export.runner import ExportJob, ExportOptions

if TYPE_CHECKING:
    from pipeline.export.dryrun import ExportPlan, PlannedObject, PlannedRange


@click.command()
@api_options
@output_options
@click.option("--project", required=True, help="Project name or id to export from.")
@setting_options(OBJECTS)
@click.option(
    "--out", required=True, help="Output root: a directory, s3://bucket/prefix or gs://bucket/prefix."
)
@setting_options(FORMAT, COMPRESSION, FILTER, SHAPE, INCREMENTAL)
@click.option("--restart", is_flag=True, help="Discard an unfinished run in --out instead of resuming it.")
@setting_options(DRY_RUN)
@setting_options(EXPORT_WORKERS, RANGES_PER_OBJECT, MIN_ROWS_PER_RANGE, PAGE_LIMIT, PREFETCH, ENCODERS,
                 ROW_GROUP_ROWS, ROW_GROUP_MB, FILE_ROWS, FILE_MB, WAIT_LEASE)  # fmt: skip
@setting_options(ATTACHMENTS, MAX_ATTACHMENT_MB, ATTACHMENT_WORKERS)
@engine_options
def export(settings: ClientSettings, quiet: bool, as_json: bool, **kw: Any) -> None:
    """Export project logs, datasets, experiments and configuration to Parquet or JSONL files."""
    output = Output(quiet, as_json)
    compression, file_mb, dry_run = kw.pop("compression"), kw.pop("file_mb"), kw.pop("dry_run")
    engine = {name: kw.pop(name) for name in ("engine", "ray_address", "ray_request_rate")}
    options = ExportOptions(**kw, compression=compression,
                            file_bytes=file_mb * MB)  # fmt: skip
    if dry_run:
        plan = run_async(
            lambda: with_client(settings, lambda c: ExportJob(c, options, Progress()).dry_run()),
            resumable=False,
        )
        if as_json:
            emit_json(plan.to_json())
        else:
            click.echo("\n".join(_plan_lines(plan)))
        return

    async def body(progress: Progress) -> Any:
        async with ray_engine(settings, dict(engine)) as ray:
            ranges = None if ray is None else ray[0].RayRanges(ray[1], ray[2])
            return await with_client(
                settings, lambda client: ExportJob(client, options, progress, ranges=ranges).run()
            )

    summary = run_async(with_progress(output, body))
    for damaged in summary.repaired:
        output.warn(f"{damaged}; its range was exported again")
    for gone in summary.gone:
        output.warn(f"{gone} was deleted at the source; recorded as gone in run {summary.run_id}")
    for kind in summary.config_unserved:
        output.warn(f"{kind}: not served by this deployment (its list route answers 404); not exported")
    if as_json:
        emit_json(summary.to_json())
    else:
        counts = ", ".join(f"{count:,} {kind}" for kind, count in summary.config.items() if count)
        if counts:
            output.say(f"configuration: {counts}")
        output.say(
            f"exported {summary.rows:,} rows from {len(summary.objects)} objects in {summary.seconds:.1f}s "
            f"({summary.retries} retries) -> {summary.out}  manifest {summary.manifest}"
        )
        attached = summary.attachments
        if attached.get("count") or attached.get("skipped"):
            output.say(
                f"attachments: {attached['count']:,} ({attached['bytes']:,} bytes), "
                f"{attached['downloaded']:,} downloaded, {attached['skipped']:,} skipped (--attachments skip)"
            )


def _plan_lines(plan: ExportPlan) -> list[str]:
    """The plan of ``export --dry-run`` as a person reads it."""
    scope = f"shape {plan.shape}" + (f", filter {plan.filter!r}" if plan.filter else "")
    if plan.resume:
        run = f"would resume the unfinished run {plan.run_id} (same options)"
    elif plan.discards is not None:
        run = f"would discard the unfinished run {plan.discards} (--restart) and start a new run"
    else:
        run = "would start a new " + ("incremental " if plan.incremental else "") + "run"
    lines = [
        f"dry run: nothing was written to {plan.out}",
        f"project {plan.project_name} ({plan.project_id}): {plan.format} files, "
        f"compression {plan.compression}, {scope}",
        f"{run}; manifest {plan.manifest}",
    ]
    for obj in plan.objects:
        lines.extend(_object_lines(obj))
    total = "an unknown number of" if plan.rows is None else f"{plan.rows:,}"
    objects = f"{len(plan.objects)} object{'' if len(plan.objects) == 1 else 's'}"
    lines.append(
        f"{total} rows ({'exact' if plan.rows_exact else 'estimate'}) from {objects}; "
        f"{plan.requests} requests sent, no page read"
    )
    return lines


def _object_lines(obj: PlannedObject) -> list[str]:
    if obj.gone:
        return [f"{obj.label}: deleted at the source; the run records it as gone"]
    if obj.rows is None:
        rows = "rows unknown (the server could not count them)"
    elif obj.rows_exact:
        rows = f"{obj.rows:,} rows (exact)"
    else:
        rows = f"about {obj.rows:,} rows (estimate)"
    if obj.rows_written:
        rows += f", {obj.rows_written:,} written so far"
    if not obj.pinned:
        rows += ", read without a version (its newest writes were deletes)"
    elif obj.version is not None:
        rows += f" at version {obj.version}"
    lines = [f"{obj.label}: {rows}, {len(obj.ranges)} range{'' if len(obj.ranges) == 1 else 's'}"]
    if obj.since is not None:
        lines.append(
            f"  reads rows after {obj.since_field} {obj.since} (read up to there by run {obj.previous_run})"
        )
    if not obj.ranges:
        lines.append("  nothing new to read: no data file is written")
    lines.extend(f"  {_bounds(rng)}{'  (done)' if rng.done else ''} -> {rng.files}" for rng in obj.ranges)
    return lines


def _bounds(rng: PlannedRange) -> str:
    """A range as the comparisons that select its rows."""
    lower, upper = ("<", "<=") if rng.by == "_xact_id" else ("<=", "<")
    if rng.low is None and rng.high is None:
        return f"every {rng.by}"
    text = rng.by if rng.low is None else f"{rng.low} {lower} {rng.by}"
    return text if rng.high is None else f"{text} {upper} {rng.high}"
