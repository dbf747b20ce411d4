"""``btpipe run CONFIG`` and ``btpipe validate CONFIG``: job files from cron, Kubernetes, Airflow."""

from __future__ import annotations

import sys

import click

from pipeline.cli.common import (
    Failed,
    Output,
    emit_json,
    error_lines,
    fail,
    output_options,
    run_async,
    with_progress,
)
from pipeline.cli.options import setting_option
from pipeline.common.defaults import WAIT_LEASE
from pipeline.common.errors import EXIT_FAILED, EXIT_USAGE
from pipeline.common.progress import Progress
from pipeline.jobs.config import ConfigError, JobFile, load_job_file
from pipeline.jobs.runner import JobFailed, JobResult, run_jobs


def _overrides(sets: tuple[str, ...], out: str | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        pairs[key.strip()] = value
    if out is not None:
        pairs["out"] = out
    return pairs


def _load(config: str, only: tuple[str, ...], overrides: dict[str, str]) -> JobFile:
    try:
        return load_job_file(config, only=only, overrides=overrides)
    except ConfigError as exc:
        fail(error_lines(exc), EXIT_USAGE)


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--job", "jobs", multiple=True, metavar="NAME", help="Run only this job (repeatable).")
@click.option("--out", default=None, help="Output root for export jobs (overrides the file and BTPIPE_OUT).")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a job key (or source.KEY / destination.KEY) for this run.",
)
@setting_option(WAIT_LEASE)
@click.option("--restart", is_flag=True,
              help="Discard the unfinished run of each job (its files too) and start it afresh.")  # fmt: skip
@output_options
def run(
    config: str,
    jobs: tuple[str, ...],
    out: str | None,
    sets: tuple[str, ...],
    wait_lease: float,
    restart: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Run the jobs of a TOML job file (all of them, or those named by --job)."""
    job_file = _load(config, jobs, _overrides(sets, out))
    output = Output(quiet, as_json)
    done: list[JobResult] = []
    failed: list[JobFailed] = []

    async def jobs_in_order(progress: Progress) -> None:
        try:
            await run_jobs(job_file, progress, wait_lease=wait_lease, restart=restart, done=done)
        except JobFailed as exc:  # reported after the jobs done before it
            failed.append(exc)

    try:
        run_async(with_progress(output, jobs_in_order))
    except Failed as exc:  # interrupted: the jobs done before it still count, and are listed
        if as_json:
            running = next((name for name in job_file.jobs if name not in {r.name for r in done}), None)
            emit_json([*(r.to_json() for r in done), {"name": running, "ok": False, "error": exc.error,
                                                       "exit_code": exc.code}])  # fmt: skip
        else:
            _report(output, done)
        raise
    if as_json:  # the failed job too, after the jobs done before it
        stopped = [
            {"name": f.name, "ok": False, "error": str(f.error), "exit_code": f.exit_code} for f in failed
        ]
        emit_json([*(r.to_json() for r in done), *stopped])
    else:
        _report(output, done)
    if failed:
        for line in error_lines(failed[0]):
            click.echo(line, err=True)
        sys.exit(failed[0].exit_code)
    if not all(r.ok for r in done):
        sys.exit(EXIT_FAILED)


def _report(output: Output, results: list[JobResult]) -> None:
    for result in results:
        for warning in result.warnings:
            output.warn(warning)
        line = f"job {result.name}: {result.rows:,} rows, {result.files} files in {result.seconds:.1f}s"
        if result.pruned_runs:
            line += f", pruned {len(result.pruned_runs)} old runs"
        output.say(f"{line} -> {result.out}" if result.out else line)


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Check with this override applied.")
def validate(config: str, sets: tuple[str, ...]) -> None:
    """Check a job file: unknown keys, wrong types, missing environment variables (exit 2)."""
    job_file = _load(config, (), _overrides(sets, None))
    click.echo(f"{config}: ok ({len(job_file.jobs)} jobs: {', '.join(job_file.jobs)})")
