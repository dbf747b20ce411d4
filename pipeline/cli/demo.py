"""``make demo``: the whole pipeline against a local emulator, in well under a minute.

    1. start the emulator (a subprocess, free port, temp database, sample data)
    2. run configs/nightly-backup.toml             -> demo-output/backup (Parquet, Hive layout, with
       the project's prompts, functions, scores, tags, views, ...), and the same job for
       sample-attachments                           -> demo-output/backup-attachments (images, a PDF)
    3. insert new log rows, run the backup again    -> only the new rows are fetched
    4. run configs/migrate-project.toml             -> sample-project, then sample-attachments, copied
       to another org with their configuration and attachments, verified
    5. print rows, files and seconds, where the files are and a DuckDB query over them

The emulator is stopped whatever happens. ``--traces`` (or ``BTPIPE_DEMO_TRACES``) sets the
size of the sample; ``demo-output/`` is the demo's own scratch directory, emptied first.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import resolve_project
from pipeline.cli.common import Output, error_lines, fail, run_async, with_progress
from pipeline.common.errors import BtpipeError
from pipeline.common.progress import Progress
from pipeline.emulator.auth import DEFAULT_KEYS
from pipeline.emulator.sample import generate_traces
from pipeline.emulator.server import EmulatorStartError, spawn_emulator
from pipeline.jobs.config import ExportJobConfig, JobFile, MigrateJobConfig, load_job_file
from pipeline.jobs.runner import JobResult, run_export_job, run_migrate_job

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SAMPLE_PROJECT = "sample-project"
#: The sample's project whose rows refer to images and a PDF (kept apart from sample-project,
#: whose rows the benchmarks time).
ATTACHMENTS_PROJECT = "sample-attachments"
T = TypeVar("T")


def _key(org: str) -> str:
    return next(k.key for k in DEFAULT_KEYS if k.org == org and k.role == "owner" and not k.admin)


@contextmanager
def emulator(db: Path, traces: int) -> Iterator[str]:
    """The emulator with ``traces`` sample traces in a subprocess; a failed start is one line."""
    try:
        with spawn_emulator(db, "--sample", str(traces)) as url:
            yield url
    except EmulatorStartError as exc:
        raise click.ClickException(str(exc)) from None


def step(number: int, text: str) -> None:
    click.echo(f"[{number}/5] {text}", err=True)


@dataclass
class DemoRun:
    url: str
    out: Path
    traces: int
    progress: Progress

    def job_file(self, name: str, environ: dict[str, str], **overrides: str) -> JobFile:
        env = {"BRAINTRUST_API_URL": self.url, "BRAINTRUST_API_KEY": _key("local"), **environ}
        return load_job_file(str(CONFIGS / name), environ=env, overrides=overrides)

    async def backup(self, project: str = SAMPLE_PROJECT, out: str = "backup") -> JobResult:
        jobs = self.job_file("nightly-backup.toml", {}, out=str(self.out / out), projects=project)
        (job,) = jobs.jobs.values()
        assert isinstance(job, ExportJobConfig) and jobs.source is not None
        return await run_export_job(job, jobs.source, self.progress)

    async def insert_new_rows(self) -> int:
        jobs = self.job_file("nightly-backup.toml", {})
        assert jobs.source is not None
        events = list(generate_traces(seed=4242, n_traces=max(5, self.traces // 10)))
        task = self.progress.add("insert new log rows", len(events))
        async with BraintrustClient(jobs.source.client_settings()) as client:
            project = await resolve_project(client, SAMPLE_PROJECT)
            for start in range(0, len(events), 500):
                batch = events[start : start + 500]
                await client.post_json(f"/v1/project_logs/{project['id']}/insert", {"events": batch})
                task.advance(len(batch))
        task.finish()
        return len({e["id"] for e in events})

    async def migrate(self, project: str = SAMPLE_PROJECT) -> JobResult:
        destination = {"DEST_BRAINTRUST_API_URL": self.url, "DEST_BRAINTRUST_API_KEY": _key("other")}
        jobs = self.job_file(
            "migrate-project.toml", destination, state_dir=str(self.out / ".btpipe-state"),
            project=project, to_project=f"{project}-copy",
        )  # fmt: skip
        (job,) = jobs.jobs.values()
        assert isinstance(job, MigrateJobConfig) and jobs.source and jobs.destination
        return await run_migrate_job(job, jobs.source, jobs.destination, self.progress)


def _stage(demo: DemoRun, stage: Callable[[], Awaitable[T]]) -> T:
    """Run one step with its own progress display (live on a terminal, plain lines otherwise)."""

    async def body(progress: Progress) -> T:
        demo.progress = progress
        return await stage()

    return run_async(with_progress(Output(quiet=False, json=False), body))


def describe(result: JobResult) -> str:
    return f"{result.rows:,} rows, {result.files} files, {result.seconds:.1f}s"


@click.command()
@click.option("--traces", type=int, default=lambda: int(os.environ.get("BTPIPE_DEMO_TRACES", "2000")),
              show_default="2000 or $BTPIPE_DEMO_TRACES", help="Sample traces loaded into the emulator.")  # fmt: skip
@click.option("--out", default="demo-output", show_default=True, help="The demo's scratch directory.")
def main(traces: int, out: str) -> None:
    """Run the btpipe demo end to end against a local emulator."""
    started = time.monotonic()
    out_dir = Path(out).resolve()
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="btpipe-demo-") as tmp:
        step(1, f"starting the emulator with {traces:,} sample traces")
        with emulator(Path(tmp) / "emulator.db", traces) as url:
            demo = DemoRun(url, out_dir, traces, Progress())
            step(2, "nightly backup, first run (everything: rows, configuration, attachments)")
            first = _stage(demo, demo.backup)
            with_files = _stage(demo, lambda: demo.backup(ATTACHMENTS_PROJECT, "backup-attachments"))
            step(3, "inserting new log rows, then the nightly backup again (only what is new)")
            inserted = _stage(demo, demo.insert_new_rows)
            second = _stage(demo, demo.backup)
            step(4, f"migrating {SAMPLE_PROJECT} and {ATTACHMENTS_PROJECT} to another org and verifying")
            migrated = _stage(demo, demo.migrate)
            migrated_files = _stage(demo, lambda: demo.migrate(ATTACHMENTS_PROJECT))
            step(5, "done")
    verify = "identical" if migrated.ok and migrated_files.ok else "DIFFERENCES (see above)"
    backup = out_dir / "backup"
    config = sum(1 for f in backup.glob("_config/kind=*/run=*/*.jsonl") for _ in f.open())
    attachments = [f for f in (out_dir / "backup-attachments").glob("_attachments/sha256=*") if f.is_file()]
    click.echo("btpipe demo summary")
    click.echo(f"  backup run 1:  {describe(first)}, {config} configuration objects")
    click.echo(
        f"  attachments:   {describe(with_files)}; {len(attachments)} attachment files "
        f"({sum(f.stat().st_size for f in attachments):,} bytes)"
    )
    click.echo(f"  new log rows:  {inserted:,} inserted")
    click.echo(f"  backup run 2:  {describe(second)} (only the new rows)")
    click.echo(
        f"  migrate:       {migrated.rows + migrated_files.rows:,} rows, configuration and attachments in "
        f"{migrated.seconds + migrated_files.seconds:.1f}s; verify: {verify}"
    )
    click.echo(f"  total:         {time.monotonic() - started:.1f}s")
    click.echo(f"  files:         {backup}")
    click.echo(
        '  look at them:  duckdb -c "SELECT object_type, count(*) FROM read_parquet('
        f"'{backup}/object_type=*/*/*/*.parquet', hive_partitioning = true, union_by_name = true) GROUP BY 1\""
    )
    for result in (first, with_files, second, migrated, migrated_files):
        for warning in result.warnings:
            click.echo(f"btpipe: warning: {warning}", err=True)
    if not (migrated.ok and migrated_files.ok):
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except BtpipeError as exc:  # raised outside run_async, e.g. by a job file
        fail(error_lines(exc), exc.exit_code)
