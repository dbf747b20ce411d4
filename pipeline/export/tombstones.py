"""Tombstones: the ids an incremental run finds gone since the run before it.

An incremental run reads only the rows written since the previous run, and a delete leaves no
row to read. So, once its rows are read, every object the run read incrementally gets an
id-only pass: each id of the whole object (no filter, no ``since``) is read and struck off the
ids the chain so far holds (its base's files, then each later run's files and tombstones, in
order). The ids left are gone from the source; they are written, sorted, to one small file

    _tombstones/object_type=<type>/object_id=<id>/run=<run id>/tombstones.jsonl   {"id": ...} a line

which the manifest lists like a data file (rows, bytes, SHA-256). A restore deletes them right
after the run's rows (:mod:`pipeline.load.ordered`); a warehouse load can do the same.

The version the pass reads at: the object's snapshot version, where the run's rows were read
(an incremental run reads pinned even when deletes newer than the version exist), so that rows
and tombstones describe the same moment. Deletes newer than the version (an old row deleted
after the newest insert, which leaves the newest row's version behind) are seen while planning
(fewer rows now than at the version), once the rows are read (more rows than counted just after
the version was found) or by this pass (more ids at the version than the whole object held just
after it was found, ``live_rows``). Then a tombstone is an id gone at the version, or gone when
the run started reading the object (:func:`live_ids`, taken beside the read when the deletes
were seen while planning; else the pass reads the current state), among the chain's ids and
the rows the run read. So a row read at the version and deleted before the run is not brought
back, nor a row deleted before the version or before the run and written again since with
its content of before that delete (the next run holds its new version). When the run read none
of the object's rows (nothing newer than the last run), or read them unpinned (a run planned
by an earlier version of btpipe), the pass reads the current state. A row written meanwhile is
never taken for deleted: a changed row moves to a later page, it does not leave the read.

Only reads of the spans shape record tombstones (their ids are the rows'); a full read needs
none, its files being the object's complete id set. Memory stays flat whatever the size of
the object: the ids go into a SQLite file in a temporary directory, never a set in memory.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import closing
from itertools import islice
from pathlib import Path

import anyio

from pipeline.api.btql import Pager, build_query
from pipeline.api.client import BraintrustClient
from pipeline.common import jsoncodec, layout
from pipeline.common.chains import Entry, RunIndex, Scope
from pipeline.common.manifest import FileInfo, list_manifests
from pipeline.common.state import ObjectState
from pipeline.common.storage import Storage
from pipeline.querylang.ast import ident

_WRITE_CHUNK = 10_000  # ids written to the tombstone file at a time
#: What to do when the chain an incremental run continues is broken: its deletes cannot be
#: known, and a restore could not use it anyway.
_NEW_CHAIN = (
    "; the deletes since then cannot be found: export once with --restart and without --incremental "
    "(btpipe run: --restart --set incremental=false) to start a new chain"
)


class IdSet:
    """A set of ids in a SQLite file (an index on disk), so memory stays flat (blocking)."""

    def __init__(self, directory: str) -> None:
        self._db = sqlite3.connect(str(Path(directory) / "ids.sqlite"), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY) WITHOUT ROWID")

    def add(self, ids: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO ids VALUES (?)", ((i,) for i in ids))

    def discard(self, ids: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM ids WHERE id = ?", ((i,) for i in ids))

    def sorted(self) -> Iterator[str]:
        with closing(self._db.execute("SELECT id FROM ids ORDER BY id")) as cursor:
            while rows := cursor.fetchmany(_WRITE_CHUNK):
                yield from (row[0] for row in rows)

    def close(self) -> None:
        self._db.close()


def load_chain(storage: Storage, chain: list[Entry], known: IdSet) -> None:
    """Put into ``known`` the ids ``chain`` holds once applied in order: each run's rows, less
    its tombstones (blocking)."""
    from pipeline.sources.ids import iter_ids  # pyarrow loads only for an id pass

    for entry in chain:
        for info in entry.obj.files:
            for ids in iter_ids(storage, info.path):
                known.add(ids)
        if entry.obj.tombstones is not None:
            for ids in iter_ids(storage, entry.obj.tombstones.path):
                known.discard(ids)


def write_tombstones(storage: Storage, relpath: str, ids: Iterator[str]) -> FileInfo:
    """Publish ``ids`` as JSONL of ``{"id": ...}``; its manifest entry (blocking)."""
    digest = hashlib.sha256()
    rows = size = 0
    with storage.open_atomic(relpath) as fh:
        while True:
            chunk = [jsoncodec.dumps({"id": i}) + b"\n" for i in islice(ids, _WRITE_CHUNK)]
            if not chunk:
                break
            data = b"".join(chunk)
            fh.write(data)
            digest.update(data)
            rows += len(chunk)
            size += len(data)
    return FileInfo(relpath, rows, size, digest.hexdigest())


async def _id_pages(
    client: BraintrustClient, obj: ObjectState, version: str | None
) -> AsyncIterator[list[str]]:
    """Every id of ``obj`` at ``version`` (None: the current state), a page at a time."""
    query = build_query(obj.object_type, obj.id, select=[{"alias": "id", "expr": ident("id")}])
    async for page in Pager(client, query, version=version).pages():
        yield [jsoncodec.loads(line)["id"] for line in page.raw.splitlines() if line.strip()]


async def strike_off_live_ids(
    client: BraintrustClient, obj: ObjectState, known: IdSet, version: str | None
) -> int:
    """Read every id of ``obj`` at ``version`` (None: the current state) and strike each off
    ``known``; how many ids were read."""
    live = 0
    async for ids in _id_pages(client, obj, version):
        live += len(ids)
        await anyio.to_thread.run_sync(known.discard, ids)
    return live


def _known(storage: Storage, chain: list[Entry], read: list[FileInfo], directory: str) -> IdSet:
    """The ids ``chain`` holds and those of this run's files ``read``, in an ``IdSet`` in
    ``directory`` (created; blocking)."""
    from pipeline.sources.ids import iter_ids

    Path(directory).mkdir()
    known = IdSet(directory)
    try:
        load_chain(storage, chain, known)
        for info in read:
            for ids in iter_ids(storage, info.path):
                known.add(ids)
    except BaseException:
        known.close()
        raise
    return known


async def _gone_ids(
    client: BraintrustClient,
    storage: Storage,
    obj: ObjectState,
    chain: list[Entry],
    directory: str,
    version: str | None,
    read: list[FileInfo] | None = None,
) -> tuple[IdSet, int]:
    """The ids ``chain`` holds, and the files ``read`` of this run, that ``obj`` does not hold at
    ``version`` (None: now); and how many ids it holds there."""
    known = await anyio.to_thread.run_sync(_known, storage, chain, read or [], directory)
    try:
        live = await strike_off_live_ids(client, obj, known, version)
    except BaseException:
        known.close()
        raise
    return known, live


def _gone_at_start(
    storage: Storage, chain: list[Entry], read: list[FileInfo], directory: str, start: IdSet
) -> IdSet:
    """The ids ``chain`` holds, and those of this run's files ``read``, that the object did
    not hold when the run started (``start``, from :func:`live_ids`; blocking)."""
    known = _known(storage, chain, read, directory)
    try:
        known.discard(start.sorted())
    except BaseException:
        known.close()
        raise
    return known


async def live_ids(client: BraintrustClient, obj: ObjectState, directory: str) -> IdSet:
    """Every id ``obj`` holds now, in an ``IdSet`` in ``directory`` (created): taken as a run
    starts reading an object whose deletes newer than its version were seen while planning."""
    Path(directory).mkdir()
    live = IdSet(directory)
    try:
        async for ids in _id_pages(client, obj, None):
            await anyio.to_thread.run_sync(live.add, ids)
    except BaseException:
        live.close()
        raise
    return live


async def _gone(
    client: BraintrustClient,
    storage: Storage,
    obj: ObjectState,
    chain: list[Entry],
    directory: str,
    start: IdSet | None,
) -> IdSet:
    """The tombstones of ``obj``: the ids gone at its version, and, where deletes newer than
    it exist, those gone when the run started (``start``), else those gone now (see the
    module docstring)."""
    if not (obj.pinned and obj.ranges and obj.version is not None):
        known, _ = await _gone_ids(client, storage, obj, chain, f"{directory}/now", None)
        return known
    known, live = await _gone_ids(client, storage, obj, chain, f"{directory}/pinned", obj.version)
    if not obj.newer_deletes and (obj.live_rows is None or live <= obj.live_rows):
        return known
    try:
        read = [f for rng in obj.ranges for f in rng.files]
        if start is not None:
            later = await anyio.to_thread.run_sync(
                _gone_at_start, storage, chain, read, f"{directory}/start", start
            )
        else:
            later, _ = await _gone_ids(client, storage, obj, chain, f"{directory}/now", None, read)
        try:
            await anyio.to_thread.run_sync(later.add, known.sorted())
        except BaseException:
            later.close()
            raise
    finally:
        known.close()
    return later


async def object_tombstones(
    client: BraintrustClient,
    storage: Storage,
    run_id: str,
    obj: ObjectState,
    chain: list[Entry],
    start: IdSet | None = None,
) -> FileInfo:
    """The tombstone file of ``obj`` in run ``run_id``, which continues ``chain``; ``start``:
    the ids it held when the run started reading it (:func:`live_ids`), where taken."""
    with tempfile.TemporaryDirectory(prefix="btpipe-ids-") as directory:
        known = await _gone(client, storage, obj, chain, directory, start)
        try:
            relpath = layout.tombstone_path(obj.object_type, obj.id, run_id)
            return await anyio.to_thread.run_sync(write_tombstones, storage, relpath, known.sorted())
        finally:
            known.close()


async def record_tombstones(
    client: BraintrustClient,
    storage: Storage,
    run_id: str,
    objects: list[ObjectState],
    *,
    scope: Scope,
    previous: dict[str, str | None],
    workers: int,
    start: Mapping[str, IdSet] | None = None,
    gone: Callable[[ObjectState, Exception], Awaitable[bool]] | None = None,
) -> dict[str, FileInfo]:
    """By object key, the tombstone file of each object of ``objects`` read incrementally in
    the spans shape; ``previous`` names, by object key, the run each read continues, ``start``
    the ids of each object taken as the run started reading it (:func:`live_ids`). Objects go
    ``workers`` at a time. An object whose pass fails and that ``gone`` then finds deleted at
    the source gets no tombstone file."""
    wanted = [obj for obj in objects if obj.since is not None and scope.shape == "spans"]
    if not wanted:
        return {}
    index = RunIndex(await anyio.to_thread.run_sync(list_manifests, storage), storage.url)
    chains = {obj.key: index.chain_to(obj.id, scope, previous[obj.key], _NEW_CHAIN) for obj in wanted}
    recorded: dict[str, FileInfo] = {}
    limiter = anyio.CapacityLimiter(max(1, workers))

    async def one(obj: ObjectState) -> None:
        async with limiter:
            try:
                recorded[obj.key] = await object_tombstones(
                    client, storage, run_id, obj, chains[obj.key], (start or {}).get(obj.key)
                )
            except Exception as exc:
                if gone is None or not await gone(obj, exc):
                    raise

    async with anyio.create_task_group() as tg:
        for obj in wanted:
            tg.start_soon(one, obj)
    return recorded
