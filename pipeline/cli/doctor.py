"""``btpipe doctor``: check a deployment before a migration or a first backup.

The checks live in :mod:`pipeline.doctor`; this prints the report (one line per check, or the
whole report as JSON with ``--json``; nothing but a failure's error line with ``--quiet``) and
exits 0 when btpipe can work there, else with the failure's code and its reason in one line.
"""

from __future__ import annotations

import sys

import click

from pipeline.api.client import ClientSettings
from pipeline.cli.common import api_options, emit_json, output_options, run_async


@click.command("doctor")
@api_options
@output_options
@click.option("--project", default=None, help="Also list this project's objects and read its logs.")
@click.option(
    "--write-test",
    default=None,
    metavar="PROJECT",
    help="Also write one row to this project's logs, read it back pinned, delete it and confirm it is gone.",
)
def doctor(
    settings: ClientSettings, quiet: bool, as_json: bool, project: str | None, write_test: str | None
) -> None:
    """Check a deployment: key, role, limits, read patterns and what btpipe will do there."""
    from pipeline.doctor import examine

    report = run_async(lambda: examine(settings, project=project, write_test=write_test), resumable=False)
    if as_json:
        emit_json(report.to_json())
    elif not quiet:
        click.echo("\n".join(report.lines()))
    if report.error is not None:
        click.echo(f"btpipe: error: {report.error}", err=True)
        sys.exit(report.error.exit_code)
