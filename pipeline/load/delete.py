"""``btpipe delete``: find the rows a filter matches and delete them with ``_object_delete``.

The ids are read through the export pager under one pinned snapshot version, so deleting
while paging cannot shift the pages; delete events (``{"id": ..., "_object_delete": true}``)
go through the same batcher and insert pool as an import. Rows change while a delete runs:
before each batch of ids is deleted, the filter is asked again about those ids at the current
state (``filter AND id IN [...]``), and an id that no longer matches is left alone (counted in
``changed``). A server that refuses that question (400) or cannot answer it in time (504, or
no answer within the retries) is deleted from as read, with a warning, once. ``plan`` (the ``--dry-run``) only
counts and samples ids. There is no resume state: re-running the same command finds whatever
still matches, which is exactly what is left to do.

``traces``: whole traces go, every span of each trace one of whose spans the filter matches
(listed in the ``traces`` shape; a filter on root spans' fields would leave their children).
Each trace is asked again once (``filter AND root_span_id IN [...]``) and, still matching,
goes with every span it has then (``root_span_id IN [...]``, as the SDKs fetch a trace), so a
span written into it meanwhile is not left without its root.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from pipeline.api.btql import Pager, build_query
from pipeline.api.client import BraintrustClient
from pipeline.api.objects import ObjectRef
from pipeline.api.snapshot import pin_read
from pipeline.common import jsoncodec
from pipeline.common.checkpoint import Ledger
from pipeline.common.errors import ApiError, TransientApiError
from pipeline.common.progress import Progress, Task
from pipeline.common.state import ObjectProgress
from pipeline.load.batcher import Batcher, Item
from pipeline.load.insert import InsertOptions, InsertPool, feed, request_limit
from pipeline.querylang.ast import Expr, all_of, binary, ident, literal

SAMPLE_IDS = 10
#: Answers to the second question that mean the server will not answer it: refused (400), or
#: too slow to answer (504) where an id list is no index to it.
_WILL_NOT_SAY = frozenset({400, 504})


@dataclass
class DeletePlan:
    label: str
    object_id: str
    version: str | None
    #: Counted when planned (None: the server could not count them, a scan too big); once the
    #: delete ran, the ids it read as matching, which is deleted plus changed. The two differ
    #: when the read was not pinned (the object's newest write was a delete) and rows were
    #: written meanwhile.
    matched: int | None
    sample_ids: list[str] = field(default_factory=list)
    deleted: int = 0
    #: Ids read as matching that no longer matched when their page was deleted: left alone.
    changed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _id_query(ref: ObjectRef, filter_expr: Expr, *, traces: bool = False) -> dict[str, Any]:
    """The ids of the rows ``filter_expr`` matches, and of the other spans of their traces
    (``traces``), with their trace's root span id."""
    return build_query(
        ref.object_type, ref.id, filter_expr=filter_expr, shape="traces" if traces else "spans",
        select=[{"alias": name, "expr": ident(name)} for name in ("id", "root_span_id")],
    )  # fmt: skip


def _ids(raw: bytes) -> list[tuple[str, str | None]]:
    """Each row's id and trace (root span id)."""
    return [(str(row["id"]), row.get("root_span_id")) for row in jsoncodec.loads_lines(raw)]


async def plan(
    client: BraintrustClient, ref: ObjectRef, filter_expr: Expr, *, traces: bool = False
) -> DeletePlan:
    """How many rows of ``ref`` match (with ``traces``, the spans of the traces matching), a
    sample of their ids, and the version pinned."""
    query = _id_query(ref, filter_expr, traces=traces)
    snap = await pin_read(client, query)
    result = DeletePlan(ref.label, ref.id, snap.version, snap.rows)
    if snap.rows != 0:
        pager = Pager(client, query, version=snap.version, max_limit=SAMPLE_IDS, limit=SAMPLE_IDS)
        page = await pager.next_page()
        result.sample_ids = [row_id for row_id, _ in _ids(page.raw)][:SAMPLE_IDS] if page else []
    return result


async def delete(
    client: BraintrustClient,
    refs: list[tuple[ObjectRef, DeletePlan]],
    filter_expr: Expr,
    options: InsertOptions,
    *,
    batch_rows: int = 1000,
    max_batch_bytes: int | None = None,
    progress: Progress | None = None,
    warnings: list[str] | None = None,
    traces: bool = False,
) -> None:
    """Delete every row each plan matched (at its pinned version) and still matches, each
    object a task of ``progress``; fills ``plan.deleted`` and ``plan.changed``, also when it
    stops part way (then ``deleted`` counts every batch the server confirmed; those sent as
    it stopped, at most ``workers``, may have been applied too). ``warnings`` gets a line when the server would not
    say which ids still match."""
    progress = progress if progress is not None else Progress()
    limit = await request_limit(client, max_batch_bytes)
    pool = InsertPool(client, options, max_request_bytes=limit)
    ledgers: list[tuple[DeletePlan, Ledger, Task]] = []
    recheck = _Recheck(warnings if warnings is not None else [])

    async def produce() -> None:
        for ref, planned in refs:
            if planned.matched == 0:
                continue
            task = progress.add(planned.label, planned.matched)
            applied = _Applied(task)
            ledger = Ledger(ObjectProgress(destination=ref.id), on_rows=applied.advance)
            ledgers.append((planned, ledger, task))
            batcher = Batcher(ref.rows_path, max_rows=batch_rows, max_bytes=limit, ledger=ledger)
            items = _delete_items(client, ref, filter_expr, planned, recheck, batch_rows, traces, applied)
            await feed(pool, batcher, items, whole_chunks=True)

    try:
        await pool.run(produce)
    finally:  # stopped too (Ctrl-C, an error): the counts say what was done before it stopped
        for planned, ledger, task in ledgers:
            planned.deleted = ledger.confirmed
            planned.matched = planned.deleted + planned.changed
            task.finish()


class _Applied:
    """The deletes the server applied in order so far, which a trace's last deletes wait for."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.rows = 0
        self._more = anyio.Event()

    def advance(self, rows: int) -> None:
        self.task.advance(rows)
        self.rows += rows
        self._more.set()
        self._more = anyio.Event()

    async def reach(self, rows: int) -> None:
        while self.rows < rows:
            await self._more.wait()


class _Recheck:
    """Asks the filter again about ids read as matching; stops asking, with a warning, on a
    server that refuses the question."""

    def __init__(self, warnings: list[str]) -> None:
        self.warnings = warnings
        self.refused = False

    async def still_matching(
        self, client: BraintrustClient, ref: ObjectRef, filter_expr: Expr, ids: list[str], of: str = "id"
    ) -> set[str] | None:
        """The values of ``ids`` (of the field ``of``: a row's id, or its trace's root span id)
        of rows the filter matches now; None when the server will not say."""
        rows = await self.matching_rows(client, ref, filter_expr, ids, of)
        return None if rows is None else {row_id if of == "id" else str(root) for row_id, root in rows}

    async def matching_rows(
        self, client: BraintrustClient, ref: ObjectRef, filter_expr: Expr, values: list[str], of: str
    ) -> list[tuple[str, str | None]] | None:
        """The rows (id, root span id) the filter matches now among those whose ``of`` is one
        of ``values``; None when the server will not say."""
        if self.refused or not values:
            return None
        check = all_of(filter_expr, binary("in", ident(of), literal(values)))
        assert check is not None
        pager = Pager(client, _id_query(ref, check), version=None)  # the current state
        found: list[tuple[str, str | None]] = []
        try:
            async for page in pager.pages():
                found += _ids(page.raw)
        except ApiError as exc:  # a TransientApiError: the retries ran out, on 504s or not
            if exc.status not in _WILL_NOT_SAY and not isinstance(exc, TransientApiError):
                raise
            self.refused = True
            self.warnings.append(
                "the server would not check the rows again before deleting them "
                f"(filter AND {of} IN [...]: {exc}); rows changed while the delete ran were deleted as read"
            )
            return None
        return found


async def _delete_items(
    client: BraintrustClient,
    ref: ObjectRef,
    filter_expr: Expr,
    planned: DeletePlan,
    recheck: _Recheck,
    batch_rows: int,
    traces: bool,
    applied: _Applied,
) -> AsyncIterator[list[Item]]:
    """Delete events for the rows read as matching, a batch at a time: each batch is asked
    again just before it goes to the workers, and the next is asked only once this one is sent
    or waits for one (at most ``workers`` batches wait). A chunk marked ``last`` (a trace's
    spans the filter matches) waits until every delete before it was applied, so a stop
    leaves each trace findable by the filter again: whole, or with its matching spans."""
    pager = Pager(client, _id_query(ref, filter_expr, traces=traces), version=planned.version)
    batches = _trace_batches if traces else _span_batches
    sent = 0
    async for batch, changed, last in batches(client, ref, filter_expr, pager, recheck, max(1, batch_rows)):
        planned.changed += changed
        if last and batch:
            await applied.reach(sent)
        sent += len(batch)
        yield [
            Item(jsoncodec.dumps({"id": row_id, "_object_delete": True}), row_id, f"{ref.label} id {row_id}")
            for row_id in batch
        ]


async def _span_batches(
    client: BraintrustClient, ref: ObjectRef, filter_expr: Expr, pager: Pager, recheck: _Recheck, size: int
) -> AsyncIterator[tuple[list[str], int, bool]]:
    """The ids to delete, ``size`` at a time, each batch asked again by id; with how many of
    its ids match no more."""
    async for page in pager.pages():
        rows = _ids(page.raw)
        for start in range(0, len(rows), size):
            ids = [row_id for row_id, _ in rows[start : start + size]]
            still = await recheck.still_matching(client, ref, filter_expr, ids)
            batch = ids if still is None else [row_id for row_id in ids if row_id in still]
            yield batch, len(ids) - len(batch), False


async def _trace_batches(
    client: BraintrustClient, ref: ObjectRef, filter_expr: Expr, pager: Pager, recheck: _Recheck, size: int
) -> AsyncIterator[tuple[list[str], int, bool]]:
    """Whole traces, each once, as they are now: the pinned listing names the traces that
    matched; those that still match (asked ``size`` at a time) go with every span they have
    now, spans written into them since too (``root_span_id IN [...]``, as the SDKs fetch a
    trace), the spans the filter matches last (or, where the server will not say which, the
    root spans), and their other spans in the listing are passed over; the spans of one that
    matches no more count as changed."""
    done: set[str] = set()
    dropped: set[str] = set()
    async for page in pager.pages():
        rows = _ids(page.raw)
        lone = [row_id for row_id, root in rows if root is None]  # no trace to go by: as spans
        if lone:
            still = await recheck.still_matching(client, ref, filter_expr, lone)
            kept = lone if still is None else [row_id for row_id in lone if row_id in still]
            yield kept, len(lone) - len(kept), False
        passed = sum(1 for _, root in rows if root in dropped)
        if passed:
            yield [], passed, False
        roots = list(
            dict.fromkeys(root for _, root in rows if root is not None and root not in done | dropped)
        )
        for start in range(0, len(roots), size):
            chunk = roots[start : start + size]
            matching = await recheck.matching_rows(client, ref, filter_expr, chunk, of="root_span_id")
            still = None if matching is None else {str(root) for _, root in matching}
            alive = chunk if still is None else [root for root in chunk if root in still]
            done.update(alive)
            dropped.update(root for root in chunk if root not in alive)
            changed = sum(1 for _, root in rows if root in chunk and root not in alive)
            spans = await _spans_now(client, ref, alive)
            anchors = (
                {row_id for row_id, is_root in spans if is_root}
                if matching is None
                else {i for i, _ in matching}
            )
            yield [row_id for row_id, _ in spans if row_id not in anchors], changed, False
            yield [row_id for row_id, _ in spans if row_id in anchors], 0, True


async def _spans_now(client: BraintrustClient, ref: ObjectRef, roots: list[str]) -> list[tuple[str, bool]]:
    """Every span the traces ``roots`` have now: its id, and whether it is a root span."""
    if not roots:
        return []
    query = build_query(
        ref.object_type, ref.id, filter_expr=binary("in", ident("root_span_id"), literal(roots)),
        select=[{"alias": name, "expr": ident(name)} for name in ("id", "is_root")],
    )  # fmt: skip
    pages = Pager(client, query, version=None).pages()
    return [
        (str(row["id"]), row.get("is_root") is True)
        async for page in pages
        for row in jsoncodec.loads_lines(page.raw)
    ]
