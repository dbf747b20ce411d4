"""The ``btpipe`` command line: parse flags, build a job, run it, print the summary.

Each command is a few lines; the work lives in the library. Library errors become one line on
stderr and the exit code documented in the README (see :mod:`pipeline.common.errors`).
"""

from __future__ import annotations

from typing import Any

import click
import orjson

from pipeline import __version__
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.cli.common import (
    Btpipe,
    Output,
    api_options,
    emit_json,
    output_options,
    run_async,
    with_client,
    with_progress,
)
from pipeline.common.progress import Progress

#: Commands that live with their subsystem, imported only when invoked (keeps start-up fast).
LAZY_COMMANDS = {
    "delete": "pipeline.cli.load:delete_command",
    "emulator": "pipeline.cli.emulator:emulator",
    "import": "pipeline.cli.load:import_command",
    "migrate": "pipeline.cli.load:migrate_command",
    "run": "pipeline.cli.jobs:run",
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


@main.command()
@api_options
@output_options
@click.option("--project", required=True, help="Project name or id to export from.")
@click.option(
    "--objects",
    default="logs,datasets,experiments",
    show_default=True,
    help="Comma list: logs, datasets, experiments, dataset:NAME, experiment:NAME.",
)
@click.option(
    "--out", required=True, help="Output root: a directory, s3://bucket/prefix or gs://bucket/prefix."
)
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default="parquet", show_default=True,
              help="File format.")  # fmt: skip
@click.option("--compression", type=click.Choice(["none", "gzip", "zstd"]), default=None,
              help="JSONL: none (default), gzip or zstd. Parquet: zstd (default), gzip or none.")  # fmt: skip
@click.option(
    "--filter", "filter_text", default=None, help="BTQL filter, e.g. \"metadata.orgName = 'qawolf'\"."
)
@click.option("--shape", type=click.Choice(["spans", "traces", "summary"]), default="spans", show_default=True,
              help="Row shape: spans, whole traces with a matching span, or one summary row per trace.")  # fmt: skip
@click.option(
    "--incremental", is_flag=True, help="Only rows written since the last completed run into --out."
)
@click.option("--restart", is_flag=True, help="Discard an unfinished run in --out instead of resuming it.")
@click.option("--workers", default=8, show_default=True, help="Ranges paged at the same time.")
@click.option(
    "--ranges-per-object", default=8, show_default=True, help="Most ranges one object is split into."
)
@click.option("--min-rows-per-range", default=5_000, show_default=True,
              help="Split an object only when each range gets at least this many rows.")  # fmt: skip
@click.option("--page-limit", default=1000, show_default=True, help="Rows per /btql page (1..1000).")
@click.option("--prefetch", default=1, show_default=True, help="Pages buffered per range (bounds memory).")
@click.option("--encoders", default=1, show_default=True,
              help="Parquet: worker processes encoding pages (0: a thread of this process). "
                   "JSONL: threads writing pages at once.")  # fmt: skip
@click.option("--row-group-rows", default=100_000, show_default=True, help="Most Parquet rows per row group.")
@click.option("--row-group-mb", default=4, show_default=True,
              help="Close a Parquet row group at this many MB of data (bounds writer memory).")  # fmt: skip
@click.option(
    "--file-rows", default=1_000_000, show_default=True, help="Start a new file after this many rows."
)
@click.option(
    "--file-mb", default=256, show_default=True, help="Start a new file after this many MB of JSON."
)
def export(
    settings: ClientSettings,
    quiet: bool,
    as_json: bool,
    project: str,
    objects: str,
    out: str,
    fmt: str,
    compression: str | None,
    filter_text: str | None,
    shape: str,
    incremental: bool,
    restart: bool,
    workers: int,
    ranges_per_object: int,
    min_rows_per_range: int,
    page_limit: int,
    prefetch: int,
    encoders: int,
    row_group_rows: int,
    row_group_mb: int,
    file_rows: int,
    file_mb: int,
) -> None:
    """Export project logs, datasets and experiments to Parquet or JSONL files."""
    from pipeline.export.runner import ExportJob, ExportOptions

    if not 1 <= page_limit <= 1000:
        raise click.BadParameter("must be between 1 and 1000", param_hint="--page-limit")
    output = Output(quiet, as_json)
    options = ExportOptions(
        project=project,
        out=out,
        objects=objects,
        format=fmt,
        compression=None if compression == "none" else compression,
        filter=filter_text,
        shape=shape,
        incremental=incremental,
        restart=restart,
        workers=max(1, workers),
        ranges_per_object=max(1, ranges_per_object),
        min_rows_per_range=max(1, min_rows_per_range),
        page_limit=page_limit,
        prefetch=max(1, prefetch),
        encoders=max(0, encoders),
        row_group_rows=max(1, row_group_rows),
        row_group_mb=max(1, row_group_mb),
        file_rows=max(1, file_rows),
        file_bytes=max(1, file_mb) * 2**20,
    )

    async def body(progress: Progress) -> Any:
        return await with_client(settings, lambda client: ExportJob(client, options, progress).run())

    summary = run_async(with_progress(output, body))
    if as_json:
        emit_json(summary.to_json())
    else:
        output.say(
            f"exported {summary.rows:,} rows from {len(summary.objects)} objects in {summary.seconds:.1f}s "
            f"({summary.retries} retries) -> {summary.out}  manifest {summary.manifest}"
        )


@main.command()
@api_options
@click.argument("text")
@click.option("--all", "page_all", is_flag=True, help="Follow cursors and print every page.")
@click.option("--table", is_flag=True, help="Print an aligned table instead of JSON lines.")
@click.option("--version", "version", default=None, help="Pin the query to this _xact_id.")
def query(
    settings: ClientSettings,
    text: str,
    page_all: bool,
    table: bool,
    version: str | None,
) -> None:
    """Run a BTQL or SQL query and print the rows (JSON lines, or --table)."""
    from pipeline.api.btql import query_pages

    rows: list[dict[str, Any]] = []

    async def job(client: BraintrustClient) -> None:
        async for page in query_pages(client, text, page_all=page_all, version=version):
            if table:
                rows.extend(page)
            else:
                for row in page:
                    click.echo(orjson.dumps(row).decode())

    run_async(lambda: with_client(settings, job))
    if table:
        click.echo(format_table(rows))


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows as an aligned text table; nested values shown as compact JSON."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)

    def cell(value: Any) -> str:
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [min(60, max(len(c), *(len(r[i]) for r in cells))) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v[:w].ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
