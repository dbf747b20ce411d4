"""``btpipe query``: run one BTQL or SQL query and print its rows."""

from __future__ import annotations

from typing import Any

import click
import orjson

from pipeline.api.btql import parse_text, query_pages
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.cli.common import api_options, run_async, with_client
from pipeline.common.errors import NotFoundError, UsageError


@click.command()
@api_options
@click.argument("text")
@click.option("--all", "page_all", is_flag=True, help="Follow cursors and print every page.")
@click.option("--table", is_flag=True, help="Print an aligned table instead of JSON lines.")
@click.option("--version", "version", default=None, help="Pin the query to this _xact_id.")
def query(settings: ClientSettings, text: str, page_all: bool, table: bool, version: str | None) -> None:
    """Run a BTQL or SQL query and print the rows (JSON lines, or --table)."""
    rows: list[dict[str, Any]] = []
    parsed = parse_text(text)
    if page_all and any(key in parsed for key in ("sort", "measures", "dimensions")):
        click.echo(
            "btpipe: warning: --all: a query with sort or aggregates is answered in one page, "
            "its limit capping the rows",
            err=True,
        )

    async def job(client: BraintrustClient) -> None:
        try:
            async for page in query_pages(client, parsed, page_all=page_all, version=version):
                if table:
                    rows.extend(page)
                else:
                    for row in page:
                        click.echo(orjson.dumps(row).decode())
        except NotFoundError as exc:  # the route itself: objects are named by id, and an unknown one is a 400
            raise UsageError(f"{exc} (no /btql at this API URL: check the URL's path)") from None

    run_async(lambda: with_client(settings, job), resumable=False)
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
