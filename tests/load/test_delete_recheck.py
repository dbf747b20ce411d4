"""``delete`` leaves a row that stopped matching between reading its id and deleting it."""

from __future__ import annotations

from typing import Any

import anyio
import orjson
import pytest
from aiohttp import ClientSession, web

from pipeline.api.btql import parse_filter
from pipeline.api.client import BraintrustClient, ClientSettings, RetryPolicy
from pipeline.api.objects import ObjectRef, resolve_project, resolve_selection
from pipeline.load import delete as deleting
from pipeline.load.insert import InsertOptions
from pipeline.querylang.ast import Expr
from tests.conftest import Emulator
from tests.helpers import all_rows, insert, post, unique


def _stale_logs(emulator: Emulator, name: str) -> tuple[dict[str, Any], Expr, ClientSettings]:
    """A project with 40 log rows the filter ``metadata.status = 'stale'`` matches."""
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique(name)})
    rows = [{"id": f"r{i:02d}", "input": i, "metadata": {"status": "stale"}} for i in range(40)]
    insert(emulator.url, emulator.key, "project_logs", project["id"], rows)
    filter_expr = parse_filter("metadata.status = 'stale'")
    assert filter_expr is not None
    return project, filter_expr, ClientSettings(api_url=emulator.url, api_key=emulator.key)


def _planned(
    settings: ClientSettings, project: dict[str, Any], filter_expr: Expr
) -> tuple[ObjectRef, deleting.DeletePlan]:
    """The delete plan of the project's logs."""

    async def planning() -> tuple[ObjectRef, deleting.DeletePlan]:
        async with BraintrustClient(settings) as client:
            (ref,) = await resolve_selection(client, await resolve_project(client, project["name"]), "logs")
            return ref, await deleting.plan(client, ref, filter_expr)

    return anyio.run(planning)


def test_rows_changed_after_their_ids_were_read_are_left(emulator: Emulator) -> None:
    project, filter_expr, settings = _stale_logs(emulator, "recheck")

    async def deleting_(planned: Any, expr: Expr, warnings: list[str]) -> None:
        async with BraintrustClient(settings) as client:
            await deleting.delete(client, [planned], expr, InsertOptions(), batch_rows=7, warnings=warnings)

    ref, planned = _planned(settings, project, filter_expr)
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


def _asks_in(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("op") == "in" or any(_asks_in(v) for v in node.values())
    return isinstance(node, list) and any(_asks_in(v) for v in node)


def _proxy(upstream: str, status: int) -> web.Application:
    """The emulator behind a server that answers ``status`` to every ``/btql`` query whose
    filter has an ``in``, as a deployment without it (400) or too slow for it (504) would."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == "/btql" and _asks_in(orjson.loads(body).get("query", {}).get("filter")):
            return web.Response(status=status, text="not this query")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        drop = ("content-length", "transfer-encoding", "connection")
        async with (
            ClientSession(auto_decompress=False) as session,
            session.request(request.method, upstream + request.path_qs, data=body, headers=headers) as answer,
        ):
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in drop}
            return web.Response(status=answer.status, body=await answer.read(), headers=kept)

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("status", [400, 504])
def test_a_server_that_will_not_check_again_is_deleted_from_as_read(emulator: Emulator, status: int) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("no-recheck")})
    rows = [
        {"id": f"r{i:02d}", "input": i, "metadata": {"status": "stale" if i % 2 else "fresh"}}
        for i in range(20)
    ]
    insert(emulator.url, emulator.key, "project_logs", project["id"], rows)
    filter_expr = parse_filter("metadata.status = 'stale'")
    assert filter_expr is not None
    warnings: list[str] = []
    planned: list[deleting.DeletePlan] = []

    async def run() -> None:
        runner = web.AppRunner(_proxy(emulator.url, status))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        fast = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
        settings = ClientSettings(api_url=f"http://127.0.0.1:{port}", api_key=emulator.key, retry=fast)
        try:
            async with BraintrustClient(settings) as client:
                (ref,) = await resolve_selection(
                    client, await resolve_project(client, project["name"]), "logs"
                )
                plan = await deleting.plan(client, ref, filter_expr)
                planned.append(plan)
                await deleting.delete(client, [(ref, plan)], filter_expr, InsertOptions(), warnings=warnings)
        finally:
            await runner.cleanup()

    anyio.run(run)
    left = all_rows(emulator.url, emulator.key, "project_logs", project["id"])
    assert sorted(left) == [f"r{i:02d}" for i in range(0, 20, 2)]
    assert (planned[0].deleted, planned[0].changed) == (10, 0)
    (warning,) = warnings
    assert warning.startswith("the server would not check the rows again before deleting them")


def test_the_rows_a_delete_reports_matched_are_those_it_read(emulator: Emulator) -> None:
    """A delete whose object's newest write was a delete reads without a version, so rows
    written after it counted are read too: what it reports matched is what it read, and
    matched is deleted plus changed."""
    project, filter_expr, settings = _stale_logs(emulator, "recount")
    insert(emulator.url, emulator.key, "project_logs", project["id"], [{"id": "r00", "_object_delete": True}])

    async def deleting_(planned: Any) -> None:
        async with BraintrustClient(settings) as client:
            await deleting.delete(client, [planned], filter_expr, InsertOptions(), batch_rows=7)

    ref, planned = _planned(settings, project, filter_expr)
    assert (planned.version, planned.matched) == (None, 39)
    later = [{"id": f"n{i}", "input": i, "metadata": {"status": "stale"}} for i in range(5)]
    insert(emulator.url, emulator.key, "project_logs", project["id"], later)
    anyio.run(deleting_, (ref, planned))
    assert all_rows(emulator.url, emulator.key, "project_logs", project["id"]) == {}
    assert (planned.matched, planned.deleted, planned.changed) == (44, 44, 0)


def test_each_batch_is_asked_again_just_before_it_is_deleted(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With batches smaller than a page, a row that stops matching while the page's earlier
    batches are deleted is still left: the question is asked per batch, not per page."""
    project, filter_expr, settings = _stale_logs(emulator, "per-batch")
    ref, planned = _planned(settings, project, filter_expr)
    asked = deleting._Recheck.still_matching
    calls: list[int] = []

    async def asked_then_kept(self: Any, *args: Any) -> Any:
        found = await asked(self, *args)
        calls.append(len(args[-1]))
        if len(calls) == 1:  # someone keeps r39 while the first batches are deleted
            kept = [{"id": "r39", "_is_merge": True, "metadata": {"status": "keep"}}]
            await anyio.to_thread.run_sync(
                insert, emulator.url, emulator.key, "project_logs", project["id"], kept
            )
        return found

    monkeypatch.setattr(deleting._Recheck, "still_matching", asked_then_kept)

    async def deleting_() -> None:
        async with BraintrustClient(settings) as client:
            await deleting.delete(client, [(ref, planned)], filter_expr, InsertOptions(), batch_rows=7)

    anyio.run(deleting_)
    left = all_rows(emulator.url, emulator.key, "project_logs", project["id"])
    assert sorted(left) == ["r39"] and left["r39"]["metadata"] == {"status": "keep"}
    assert (planned.deleted, planned.changed, calls) == (39, 1, [7, 7, 7, 7, 7, 5])


def test_a_batch_goes_to_the_workers_before_the_next_is_asked_about(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The question about a batch is its last before its delete: the batch is handed to the
    workers before the next batch is asked about (a full batch once waited in the batcher
    for the next one's first id, so a row changed meanwhile was deleted anyway)."""
    from pipeline.load.insert import InsertPool

    project, filter_expr, settings = _stale_logs(emulator, "handed-over")
    ref, planned = _planned(settings, project, filter_expr)
    order: list[tuple[str, tuple[str, ...]]] = []
    asked, submit = deleting._Recheck.still_matching, InsertPool.submit

    async def logged_ask(self: Any, *args: Any) -> Any:
        order.append(("ask", tuple(args[-1])))
        return await asked(self, *args)

    async def logged_submit(self: Any, batch: Any) -> None:
        order.append(("send", tuple(item.id for item in batch.items)))
        await submit(self, batch)

    monkeypatch.setattr(deleting._Recheck, "still_matching", logged_ask)
    monkeypatch.setattr(InsertPool, "submit", logged_submit)

    async def deleting_() -> None:
        async with BraintrustClient(settings) as client:
            await deleting.delete(
                client, [(ref, planned)], filter_expr, InsertOptions(workers=1), batch_rows=16
            )

    anyio.run(deleting_)
    ids = sorted(f"r{i:02d}" for i in range(40))
    batches = [tuple(ids[i : i + 16]) for i in range(0, 40, 16)]
    assert order == [(step, b) for b in batches for step in ("ask", "send")]
