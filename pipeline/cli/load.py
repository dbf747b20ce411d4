"""Click commands for the import side: ``import``, ``migrate``, ``delete``, ``verify``.

Each command builds a job from its options and runs it; the logic lives in
:mod:`pipeline.load` and :mod:`pipeline.verify`. A second destination's key is never a
command-line value: ``--to-api-key-env VAR`` names the environment variable holding it.
Exit codes are those of :mod:`pipeline.common.errors`; ``import`` and ``migrate`` exit 1 when
events were skipped (``--on-error skip``) or files left out (``--skip-damaged``), ``verify``
exits 1 on any difference.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import click

from pipeline.api.client import BraintrustClient, ClientSettings, check_endpoint
from pipeline.cli.common import (
    Output,
    api_options,
    emit_json,
    engine_options,
    load_options,
    output_options,
    ray_engine,
    run_async,
    to_options,
    with_client,
    with_progress,
)
from pipeline.cli.options import setting_option, setting_options
from pipeline.common.defaults import (
    ACLS,
    BATCH_ROWS,
    DELETE_OBJECTS,
    INTO_EXISTING,
    LOAD_WORKERS,
    MAP_USERS,
    MB,
    OBJECTS,
    PAGE_LIMIT,
)
from pipeline.common.errors import EXIT_FAILED, AuthError, UsageError, variable_name
from pipeline.common.progress import Progress
from pipeline.common.selection import config_selection
from pipeline.load.insert import InsertOptions
from pipeline.load.run import LoadOptions

if TYPE_CHECKING:
    from pipeline.api.objects import ObjectRef
    from pipeline.querylang.ast import Expr


def _load_opts(kw: dict[str, Any]) -> LoadOptions:
    """The :func:`~pipeline.cli.common.load_options` flags as the library's ``LoadOptions``."""
    return LoadOptions(
        batch_rows=kw["batch_rows"],
        max_batch_bytes=kw["max_batch_bytes"],
        insert=InsertOptions(
            workers=kw["workers"], max_bytes_in_flight=kw["max_inflight_mb"] * MB, on_error=kw["on_error"]
        ),
        state_dir=kw["state_dir"],
        restart=kw["restart"],
        error_file=kw["error_file"],
        wait_lease=kw["wait_lease"],
        into_existing=kw["into_existing"],
        config_workers=kw["config_workers"],
        max_attachment_mb=kw["max_attachment_mb"],
        attachment_workers=kw["attachment_workers"],
    )


def _source_settings(kw: dict[str, Any]) -> ClientSettings:
    """The API options of a two-sided command, naming their side in every error."""
    source: ClientSettings = kw["settings"]
    return replace(source, side="source")


def _destination_settings(kw: dict[str, Any], source: ClientSettings) -> ClientSettings:
    """The ``--to-`` side: its own URL and key (from ``--to-api-key-env``), else the source's,
    and only its own ``--to-impersonate``: the source's user may not exist at the destination,
    and acting as it there would write under an identity nobody asked for."""
    env = kw["to_api_key_env"]
    key = source.api_key
    if env:
        key = os.environ.get(env, "")
        if not key:
            raise AuthError(
                f"destination: environment variable {variable_name(env)} (--to-api-key-env) is not set"
            )
    check_endpoint(kw["to_api_url"] or source.api_url, key, url_name="destination: --to-api-url",
                   key_name=f"destination: the key in {variable_name(env)}" if env else "the API key")  # fmt: skip
    return replace(
        source,
        api_url=kw["to_api_url"] or source.api_url,
        api_key=key,
        impersonate_user=kw["to_impersonate"],
        side="destination",
    )


def _report_load(output: Output, summary: Any, verb: str) -> None:
    if output.json:
        emit_json(summary.to_json())
    else:
        for obj in summary.objects:
            output.say(f"  {obj.source} -> {obj.destination}: {obj.rows:,} rows" + (
                f", {obj.skipped:,} skipped" if obj.skipped else "") + (" (created)" if obj.created else ""))  # fmt: skip
        if summary.acls is not None:
            acls = summary.acls
            output.say(f"  ACLs: {acls.granted:,} granted, {acls.groups_created:,} groups and "
                       f"{acls.roles_created:,} roles created")  # fmt: skip
        for count in (c for c in summary.config if c.created or c.updated or c.unchanged):
            output.say(f"  {count.kind}: {count.created:,} created, {count.updated:,} updated, "
                       f"{count.unchanged:,} unchanged")  # fmt: skip
        if summary.config_versions:
            output.say(f"  {summary.config_versions:,} earlier prompt versions replayed")
        output.say(f"{verb} {summary.rows:,} rows in {summary.seconds:.1f}s ({summary.retries} retries)")
        if summary.comments:
            output.say(f"comments: {summary.comments:,} given to the rows written")
        if summary.comments_skipped:
            output.say(
                f"{summary.comments_skipped:,} comments too big to send were recorded in {summary.error_file}"
            )
        attached = summary.attachments
        if attached.get("uploaded") or attached.get("present"):
            output.say(f"attachments: {attached['uploaded']:,} uploaded ({attached['bytes']:,} bytes), "
                       f"{attached['present']:,} already at the destination")  # fmt: skip
        if summary.skipped:
            output.say(f"{summary.skipped:,} skipped events were recorded in {summary.error_file}")
        for damaged in summary.damaged:
            output.warn(f"not imported: {damaged}")
        for warning in summary.warnings:
            output.warn(warning)
        for broken in summary.broken:
            output.warn(f"not copied: {broken}")
        for line in summary.uncarried:
            output.warn(f"attachment not copied: {line}")
    if summary.failures():
        sys.exit(EXIT_FAILED)


@click.command("import")
@api_options
@output_options
@load_options
@click.option("--in", "input_path", required=True,
              help="Export root, a run manifest (_manifests/<run>.json), a directory or a file.")  # fmt: skip
@click.option("--to-project", required=True, help="Destination project name or id.")
@click.option("--objects", default=None,
              help="Only these input objects: logs, datasets, dataset:NAME, ..., prompts, functions, ... or config")  # fmt: skip
@click.option(
    "--to-object", default=None, help="Destination for a single-object input: logs, dataset:NAME, ..."
)
@click.option("--skip-damaged", is_flag=True,
              help="Import the objects whose files match their manifest, list the files that do not "
                   "(changed, cut short or missing) and exit 1; without it such a file stops the "
                   "import before any row is sent.")  # fmt: skip
@click.option("--from-project", default=None, metavar="NAME_OR_ID",
              help="Import only this source project's objects (needed when --in holds several).")  # fmt: skip
@setting_option(INTO_EXISTING)
@click.option("--until", default=None, metavar="RUN",
              help="Restore an export root as of this run (a run id under _manifests/): later runs "
                   "are not read. For a Delta table (--in ROOT/delta/TYPE): a table version.")  # fmt: skip
@engine_options
def import_command(**kw: Any) -> None:
    """Insert exported JSONL or Parquet files, or a Delta table, into a project (resumable)."""
    from pipeline.load.importer import ImportJob, ImportOptions

    output = Output(kw["quiet"], kw["as_json"])
    options = ImportOptions(
        input=kw["input_path"], to_project=kw["to_project"], objects=kw["objects"],
        to_object=kw["to_object"], create_project=kw["create_project"], skip_damaged=kw["skip_damaged"],
        until=kw["until"],
        from_project=kw["from_project"], load=_load_opts(kw),
    )  # fmt: skip

    async def body(progress: Progress) -> Any:
        async with ray_engine(kw["settings"], kw) as ray:
            objects = None if ray is None else ray[0].RayObjects(ray[1], ray[2])
            return await with_client(
                kw["settings"], lambda c: ImportJob(c, options, progress, objects=objects).run()
            )

    _report_load(output, run_async(with_progress(output, body)), "imported")


@click.command("migrate")
@api_options
@output_options
@load_options
@to_options
@click.option("--from-project", required=True, help="Source project name or id.")
@click.option("--to-project", required=True, help="Destination project name or id.")
@setting_options(OBJECTS, PAGE_LIMIT, INTO_EXISTING, ACLS, MAP_USERS)
def migrate_command(**kw: Any) -> None:
    """Copy logs, datasets, experiments and configuration to another project, org or API URL (resumable)."""
    from pipeline.load.migrate import MigrateJob, MigrateOptions

    output = Output(kw["quiet"], kw["as_json"])
    options = MigrateOptions(
        from_project=kw["from_project"], to_project=kw["to_project"], objects=kw["objects"],
        create_project=kw["create_project"], page_limit=kw["page_limit"], acls=kw["acls"],
        map_users=kw["map_users"], load=_load_opts(kw),
    )  # fmt: skip
    if kw["map_users"] and not kw["acls"]:
        raise click.UsageError("--map-users goes with --acls")
    source = _source_settings(kw)

    async def body(progress: Progress) -> Any:
        destination = _destination_settings(kw, source)
        async with BraintrustClient(source) as src, BraintrustClient(destination) as dst:
            return await MigrateJob(src, dst, options, progress).run()

    _report_load(output, run_async(with_progress(output, body)), "migrated")


@click.command("delete")
@api_options
@output_options
@click.option("--project", required=True, help="Project name or id.")
@setting_options(DELETE_OBJECTS)
@click.option("--filter", "filter_text", required=True, help="BTQL filter selecting the rows to delete.")
@click.option(
    "--traces",
    is_flag=True,
    help="Delete whole traces: every span of each trace one of whose spans the filter matches "
    "(without it, only the matching spans go, and a filter on root spans leaves their children).",
)
@click.option("--dry-run", is_flag=True, help="Only count the matching rows and show a sample of ids.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@setting_option(LOAD_WORKERS, help="Delete requests in flight at once")
@setting_option(BATCH_ROWS, help="Most deletes per request")
def delete_command(**kw: Any) -> None:
    """Delete the rows a filter matches (asks first unless --yes)."""
    from pipeline.api.btql import parse_filter
    from pipeline.api.objects import resolve_project, resolve_selection
    from pipeline.load import delete as deleting

    output = Output(kw["quiet"], kw["as_json"])

    if config_selection(kw["objects"]):
        raise UsageError("--objects: delete removes rows; configuration kinds (prompts, ...) are not rows")

    async def planned(
        client: BraintrustClient,
    ) -> tuple[Expr, list[tuple[ObjectRef, deleting.DeletePlan]], bool]:
        """The matching rows of each object, shown, and whether to delete them (asked first)."""
        filter_expr = parse_filter(kw["filter_text"])
        if filter_expr is None:
            raise UsageError("--filter: an empty filter would match every row; name the rows to delete")
        project = await resolve_project(client, kw["project"])
        refs = await resolve_selection(client, project, kw["objects"])
        plans = [(ref, await deleting.plan(client, ref, filter_expr, traces=kw["traces"])) for ref in refs]
        counts = [p.matched for _, p in plans]
        total = None if None in counts else sum(c or 0 for c in counts)
        for _, p in plans:
            output.say(
                f"{p.label}: {'an uncounted number of' if p.matched is None else format(p.matched, ',')} matching rows"
                + (f" (e.g. {', '.join(p.sample_ids)})" if p.sample_ids else "")
            )
        if kw["dry_run"] or total == 0:
            return filter_expr, plans, False
        if not kw["yes"]:
            if not sys.stdin.isatty():
                raise UsageError(f"refusing to delete {_rows(total)} without --yes (stdin is not a terminal)")
            if not await anyio.to_thread.run_sync(lambda: click.confirm(f"Delete {_rows(total)}?", err=True)):
                raise UsageError("cancelled; nothing was deleted")
        return filter_expr, plans, True

    # The question is asked before the progress display starts, which would draw over it.
    # delete keeps no state: a re-run finds what still matches, which is what is left to do
    filter_expr, plans, go = run_async(lambda: with_client(kw["settings"], planned), resumable=False)
    warnings: list[str] = []
    plans_only = [p for _, p in plans]

    def summary(stopped: SystemExit | None) -> None:
        """What was deleted; ``stopped``: how the run ended part way (with --json, the summary
        carries its error and exit code, as the one document on stdout)."""
        deleted, changed = sum(p.deleted for p in plans_only), sum(p.changed for p in plans_only)
        if kw["as_json"]:
            ended = (
                {}
                if stopped is None
                else {"error": getattr(stopped, "error", None), "exit_code": stopped.code}
            )
            emit_json({"dry_run": kw["dry_run"], "stopped": stopped is not None, **ended,
                       "objects": [p.to_json() for p in plans_only], "matched": None if any(p.matched is None for p in plans_only) else sum(p.matched or 0 for p in plans_only),
                       "deleted": deleted, "changed": changed, "warnings": warnings})  # fmt: skip
        elif stopped:  # whatever the flags: rows are gone, and the user must know how many
            click.echo(f"btpipe: {deleted:,} rows were deleted before it stopped (and perhaps the "
                       "batches sent as it stopped); what still matches is left", err=True)  # fmt: skip
        elif not kw["dry_run"]:
            output.say(f"deleted {deleted:,} rows" + (
                f"; {changed:,} no longer matched when their turn came and were left" if changed else ""))  # fmt: skip

    if go:
        try:
            run_async(with_progress(output, lambda progress: with_client(kw["settings"], lambda c: deleting.delete(
                c, plans, filter_expr, InsertOptions(workers=kw["workers"]), batch_rows=kw["batch_rows"],
                progress=progress, warnings=warnings, traces=kw["traces"],
            ))), resumable=False)  # fmt: skip
        except SystemExit as stopped:  # interrupted or failed: its line is out; then what was deleted
            summary(stopped)
            for warning in warnings:
                output.warn(warning)
            raise
    summary(None)
    for warning in warnings:
        output.warn(warning)


@click.command("verify")
@api_options
@output_options
@to_options
@click.option("--in", "input_path", default=None, help="Source: an export root, manifest, directory or file.")
@click.option("--project", default=None, help="Source: a project name or id on --api-url.")
@setting_option(
    OBJECTS,
    help="Objects to compare: logs, datasets, experiments, dataset:NAME, experiment:NAME, "
    "prompts, functions, project_scores, project_tags, views, span_iframes, automations, settings or config",
)
@click.option("--to-project", required=True, help="Destination project name or id.")
@click.option("--to-object", default=None,
              help="With --in naming one file outside an export's layout: the object it holds "
                   "(logs, dataset:NAME or experiment:NAME).")  # fmt: skip
def verify_command(**kw: Any) -> None:
    """Compare a source (project or export files) with a destination project, row by row."""
    from pipeline.verify import VerifyJob

    if (kw["input_path"] is None) == (kw["project"] is None):
        raise click.UsageError("give exactly one source: --in PATH or --project NAME")
    if kw["to_object"] is not None and kw["input_path"] is None:
        raise click.UsageError("--to-object goes with --in")
    source = _source_settings(kw)

    async def body(progress: Progress) -> Any:
        destination = _destination_settings(kw, source)
        async with BraintrustClient(destination) as dst:
            job = VerifyJob(dst, kw["to_project"], kw["objects"], progress)
            if kw["input_path"] is not None:
                return await job.against_files(kw["input_path"], kw["to_object"])
            async with BraintrustClient(source) as src:
                return await job.against_project(src, kw["project"])

    diffs = run_async(with_progress(Output(kw["quiet"], kw["as_json"]), body), resumable=False)
    if kw["as_json"]:
        emit_json({"ok": all(d.ok for d in diffs), "objects": [d.to_json() for d in diffs]})
    else:
        for diff in diffs:
            click.echo(diff.describe())
    if not all(d.ok for d in diffs):
        sys.exit(EXIT_FAILED)


def _rows(count: int | None) -> str:
    return "the matching rows (the server could not count them)" if count is None else f"{count:,} rows"
