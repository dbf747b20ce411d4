"""``btpipe runs ROOT``: the runs of an export root, oldest first, as a table or ``--json``.

The listing is :func:`pipeline.jobs.runs.list_runs`'s; this prints it. A root with no runs is
one line and exit 0; a path that is not an export root one error line and exit 2.
"""

from __future__ import annotations

import click

from pipeline.cli.common import emit_json
from pipeline.cli.display import size
from pipeline.jobs.runs import RunSummary, list_runs, open_root, root_name

_COLUMNS = ("RUN", "KIND", "SCOPE", "VERSIONS", "ROWS", "FILES", "BYTES", "STATUS")
_NUMERIC = frozenset({"ROWS", "FILES", "BYTES"})


@click.command("runs")
@click.argument("root")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the runs as a JSON list, each object's detail and exact bytes.",
)
def runs(root: str, as_json: bool) -> None:
    """List the runs of an export root, oldest first, and their status.

    ROOT is what export --out or a job's out named: a directory, s3://bucket/prefix or
    gs://bucket/prefix. Runs are in the order restores read them (by the snapshot versions
    they read, not by a clock). Per run: its id, full or incremental, scope (objects, shape,
    filter), snapshot version(s), rows, files, bytes, and status: complete, unfinished (the
    next export with the same options resumes it) or pruned (by a job's keep_runs).
    """
    storage = open_root(root)
    found = list_runs(storage)
    if as_json:
        emit_json([run.to_json() for run in found])
    elif not found:
        click.echo(f"{root_name(storage)}: no runs yet")
    else:
        click.echo(format_runs(found))


def format_runs(found: list[RunSummary]) -> str:
    """The runs as an aligned table; a PROJECT column when they read more than one project."""
    several = len({run.project_id or run.project_name for run in found}) > 1
    columns = ("RUN", "PROJECT", *_COLUMNS[1:]) if several else _COLUMNS
    rows = [_cells(run, several) for run in found]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells: tuple[str, ...]) -> str:
        aligned = (
            cell.rjust(width) if name in _NUMERIC else cell.ljust(width)
            for name, cell, width in zip(columns, cells, widths, strict=True)
        )
        return "  ".join(aligned).rstrip()

    return "\n".join([line(columns), *(line(r) for r in rows)])


def _cells(run: RunSummary, with_project: bool) -> tuple[str, ...]:
    project = (run.project_name or run.project_id or "-",) if with_project else ()
    counts = (f"{run.rows:,}", f"{run.files:,}", size(run.bytes))
    return (run.run_id, *project, run.kind, run.scope, run.versions, *counts, run.status)
