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


def _id_query(ref: ObjectRef, filter_expr: Expr, *, traces: bool = False, of: str = "id") -> dict[str, Any]:
    """The ids (``of``: or another field) of the rows ``filter_expr`` matches, and of the other
    spans of their traces (``traces``), with their trace's root span id."""
    fields = [of, "root_span_id"] if of != "root_span_id" else [of]
    return build_query(
        ref.object_type, ref.id, filter_expr=filter_expr, shape="traces" if traces else "spans",
        select=[{"alias": name, "expr": ident(name)} for name in fields],
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
    read: dict[str, int] = {}

    async def produce() -> None:
        for ref, planned in refs:
            if planned.matched == 0:
                continue
            task = progress.add(planned.label, planned.matched)
            ledger = Ledger(ObjectProgress(destination=ref.id), on_rows=task.advance)
            ledgers.append((planned, ledger, task))
            batcher = Batcher(ref.rows_path, max_rows=batch_rows, max_bytes=limit, ledger=ledger)
            items = _delete_items(client, ref, filter_expr, planned, recheck, read, batch_rows, traces)
            await feed(pool, batcher, items, whole_chunks=True)

    try:
        await pool.run(produce)
    finally:  # stopped too (Ctrl-C, an error): the counts say what was done before it stopped
        for planned, ledger, task in ledgers:
            planned.deleted = ledger.confirmed
            planned.matched = read.get(planned.object_id, 0)
            task.finish()


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
        if self.refused or not ids:
            return None
        check = all_of(filter_expr, binary("in", ident(of), literal(ids)))
        assert check is not None
        pager = Pager(client, _id_query(ref, check, of=of), version=None)  # the current state
        found: set[str] = set()
        try:
            async for page in pager.pages():
                found.update(str(row[of]) for row in jsoncodec.loads_lines(page.raw))
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
    read: dict[str, int],
    batch_rows: int,
    traces: bool,
) -> AsyncIterator[list[Item]]:
    """Delete events for the rows read as matching (``read`` counts those deleted or left as
    changed, per object), a batch at a time: each batch is asked again just before it goes to
    the workers, and the next is asked only once this one is sent or waits for one (at most
    ``workers`` batches wait)."""
    pager = Pager(client, _id_query(ref, filter_expr, traces=traces), version=planned.version)
    batches = _trace_batches if traces else _span_batches
    async for batch, changed in batches(client, ref, filter_expr, pager, recheck, max(1, batch_rows)):
        planned.changed += changed
        read[planned.object_id] = read.get(planned.object_id, 0) + len(batch) + changed
        yield [
            Item(jsoncodec.dumps({"id": row_id, "_object_delete": True}), row_id, f"{ref.label} id {row_id}")
            for row_id in batch
        ]


async def _span_batches(
    client: BraintrustClient, ref: ObjectRef, filter_expr: Expr, pager: Pager, recheck: _Recheck, size: int
) -> AsyncIterator[tuple[list[str], int]]:
    """The ids to delete, ``size`` at a time, each batch asked again by id; with how many of
    its ids match no more."""
    async for page in pager.pages():
        rows = _ids(page.raw)
        for start in range(0, len(rows), size):
            ids = [row_id for row_id, _ in rows[start : start + size]]
            still = await recheck.still_matching(client, ref, filter_expr, ids)
            batch = ids if still is None else [row_id for row_id in ids if row_id in still]
            yield batch, len(ids) - len(batch)


async def _trace_batches(
    client: BraintrustClient, ref: ObjectRef, filter_expr: Expr, pager: Pager, recheck: _Recheck, size: int
) -> AsyncIterator[tuple[list[str], int]]:
    """Whole traces, each once, as they are now: the pinned listing names the traces that
    matched; those that still match (asked ``size`` at a time) go with every span they have
    now, spans written into them since too (``root_span_id IN [...]``, as the SDKs fetch a
    trace), and their other spans in the listing are passed over; the spans of one that
    matches no more count as changed."""
    done: set[str] = set()
    dropped: set[str] = set()
    async for page in pager.pages():
        rows = _ids(page.raw)
        lone = [row_id for row_id, root in rows if root is None]  # no trace to go by: as spans
        if lone:
            still = await recheck.still_matching(client, ref, filter_expr, lone)
            kept = lone if still is None else [row_id for row_id in lone if row_id in still]
            yield kept, len(lone) - len(kept)
        passed = sum(1 for _, root in rows if root in dropped)
        if passed:
            yield [], passed
        roots = list(
            dict.fromkeys(root for _, root in rows if root is not None and root not in done | dropped)
        )
        for start in range(0, len(roots), size):
            chunk = roots[start : start + size]
            still = await recheck.still_matching(client, ref, filter_expr, chunk, of="root_span_id")
            alive = chunk if still is None else [root for root in chunk if root in still]
            done.update(alive)
            dropped.update(root for root in chunk if root not in alive)
            changed = sum(1 for _, root in rows if root in chunk and root not in alive)
            yield await _spans_now(client, ref, alive), changed


async def _spans_now(client: BraintrustClient, ref: ObjectRef, roots: list[str]) -> list[str]:
    """The ids of every span the traces ``roots`` have now."""
    if not roots:
        return []
    query = _id_query(ref, binary("in", ident("root_span_id"), literal(roots)))
    return [
        row_id async for page in Pager(client, query, version=None).pages() for row_id, _ in _ids(page.raw)
    ]
