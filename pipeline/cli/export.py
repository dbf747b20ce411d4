"""``btpipe export``: project logs, datasets and experiments to Parquet or JSONL files.

The flags with a default are those of :mod:`pipeline.common.defaults`; the work is
:class:`pipeline.export.runner.ExportJob`'s.
"""

from __future__ import annotations

from typing import Any

import click

from pipeline.api.client import ClientSettings
from pipeline.cli.common import (
    Output,
    api_options,
    emit_json,
    output_options,
    run_async,
    with_client,
    with_progress,
)
from pipeline.cli.options import setting_options
from pipeline.common.defaults import (
    COMPRESSION,
    ENCODERS,
    EXPORT_WORKERS,
    FILE_MB,
    FILE_ROWS,
    FILTER,
    FORMAT,
    INCREMENTAL,
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
@setting_options(EXPORT_WORKERS, RANGES_PER_OBJECT, MIN_ROWS_PER_RANGE, PAGE_LIMIT, PREFETCH, ENCODERS,
                 ROW_GROUP_ROWS, ROW_GROUP_MB, FILE_ROWS, FILE_MB, WAIT_LEASE)  # fmt: skip
def export(settings: ClientSettings, quiet: bool, as_json: bool, **kw: Any) -> None:
    """Export project logs, datasets and experiments to Parquet or JSONL files."""
    output = Output(quiet, as_json)
    compression, file_mb = kw.pop("compression"), kw.pop("file_mb")
    options = ExportOptions(**kw, compression=compression,
                            file_bytes=file_mb * MB)  # fmt: skip

    async def body(progress: Progress) -> Any:
        return await with_client(settings, lambda client: ExportJob(client, options, progress).run())

    summary = run_async(with_progress(output, body))
    for damaged in summary.repaired:
        output.warn(f"{damaged}; its range was exported again")
    for gone in summary.gone:
        output.warn(f"{gone} was deleted at the source; recorded as gone in run {summary.run_id}")
    if as_json:
        emit_json(summary.to_json())
    else:
        output.say(
            f"exported {summary.rows:,} rows from {len(summary.objects)} objects in {summary.seconds:.1f}s "
            f"({summary.retries} retries) -> {summary.out}  manifest {summary.manifest}"
        )
