"""``delete`` leaves a row that stopped matching between reading its id and deleting it."""

from __future__ import annotations

from typing import Any

import anyio

from pipeline.api.btql import parse_filter
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.api.objects import ObjectRef, resolve_project, resolve_selection
from pipeline.load import delete as deleting
from pipeline.load.insert import InsertOptions
from pipeline.querylang.ast import Expr
from tests.conftest import Emulator
from tests.helpers import all_rows, insert, post, unique


def test_rows_changed_after_their_ids_were_read_are_left(emulator: Emulator) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("recheck")})
    rows = [{"id": f"r{i:02d}", "input": i, "metadata": {"status": "stale"}} for i in range(40)]
    insert(emulator.url, emulator.key, "project_logs", project["id"], rows)
    filter_expr = parse_filter("metadata.status = 'stale'")
    assert filter_expr is not None
    settings = ClientSettings(api_url=emulator.url, api_key=emulator.key)

    async def planning() -> tuple[ObjectRef, deleting.DeletePlan]:
        async with BraintrustClient(settings) as client:
            (ref,) = await resolve_selection(client, await resolve_project(client, project["name"]), "logs")
            return ref, await deleting.plan(client, ref, filter_expr)

    async def deleting_(planned: Any, expr: Expr, warnings: list[str]) -> None:
        async with BraintrustClient(settings) as client:
            await deleting.delete(client, [planned], expr, InsertOptions(), batch_rows=7, warnings=warnings)

    ref, planned = anyio.run(planning)
    assert planned.matched == 40
    # someone keeps ten of the rows after the delete read their ids (at its pinned version)
    kept = [{"id": f"r{i:02d}", "_is_merge": True, "metadata": {"status": "keep"}} for i in range(30, 40)]
    insert(emulator.url, emulator.key, "project_logs", project["id"], kept)
    warnings: list[str] = []
    anyio.run(deleting_, (ref, planned), filter_expr, warnings)

    left = all_rows(emulator.url, emulator.key, "project_logs", project["id"])
    assert sorted(left) == [f"r{i:02d}" for i in range(30, 40)]
    assert all(row["metadata"] == {"status": "keep"} for row in left.values())
    assert (planned.deleted, planned.changed, warnings) == (30, 10, [])
