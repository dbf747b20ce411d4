"""``write_braintrust``: a Ray Dataset's rows into a project, written as ``btpipe import`` writes.

The destination (project, and dataset or experiment by name) is found or created once, on
the driver, before any task writes (``on_write_start``). Each write task turns its blocks
into insert events as an import turns file rows into them (:mod:`pipeline.load.transform`)
and sends them through the import's batcher, 413 splitting, overflow route and bounded
insert workers (:mod:`pipeline.load.insert`). Events keep their ids, and the insert endpoint
upserts by id, so a task Ray runs again overwrites the rows it wrote, never doubles them.

Blocks in the btpipe schema (from :func:`pipeline.ray.datasource.read_braintrust`, or
btpipe Parquet files read with ``ray.data.read_parquet``) are decoded back to exactly the rows they hold; any other block is
taken row by row as it is, so its values must be what JSON holds, with a string ``id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa
from ray.data import Dataset, Datasink

from pipeline.api.client import ClientSettings
from pipeline.api.objects import ObjectRef
from pipeline.common import defaults
from pipeline.common.arrow_schema import EXTRA_COLUMN, META_OBJECT_TYPE
from pipeline.common.errors import UsageError
from pipeline.common.rows import ObjectType
from pipeline.common.selection import parse_one_object
from pipeline.common.state import ObjectProgress
from pipeline.load.batcher import Item
from pipeline.load.destinations import Wanted, ensure_objects
from pipeline.load.insert import InsertOptions, InsertPool, feed, request_limit
from pipeline.load.run import destination_project, object_batcher
from pipeline.load.transform import SourceObject, comment_rows, encode_checked, logs3_merges, to_event
from pipeline.ray import cluster
from pipeline.sources.decode import table_to_rows


@dataclass(frozen=True)
class _Target:
    """Where the tasks write, found by the driver before they start."""

    ref: ObjectRef
    request_limit: int


def _rows_of(block: pa.Table, fallback: ObjectType) -> tuple[list[dict[str, Any]], ObjectType]:
    """A block's rows, and the object type they were read from. A block of the btpipe schema
    is known by its ``_extra`` column, which only btpipe writes (readers such as
    ``ray.data.read_parquet`` may drop the schema's metadata that names its object type)."""
    if EXTRA_COLUMN not in block.schema.names:
        return block.to_pylist(), fallback
    found = (block.schema.metadata or {}).get(META_OBJECT_TYPE)
    object_type: ObjectType = fallback if found is None else found.decode()
    return table_to_rows(block), object_type


def _items(block: pa.Table, fallback: ObjectType, task: int, number: int) -> list[Item]:
    rows, object_type = _rows_of(block, fallback)
    source = SourceObject(object_type)
    items = []
    for position, row in enumerate(rows):
        where = f"write task {task}, block {number}, row {position}"
        event_id = row.get("id")
        if not isinstance(event_id, str):
            raise UsageError(f"{where}: row has no string id")
        data, refused = encode_checked(to_event(row, source))
        items.append(Item(data, event_id, where, None, refused, comment_rows(row), logs3_merges(row)))
    return items


class BraintrustDatasink(Datasink[int]):
    """Rows into one object of a project through the insert endpoints; each task returns the
    rows it wrote. The key comes from the environment variable ``api_key_env``, on the driver
    and on each worker; neither this object nor its tasks hold it."""

    def __init__(
        self,
        project: str,
        *,
        to_object: str = "logs",
        create_project: bool = defaults.CREATE_PROJECT.default,
        into_existing: bool = defaults.INTO_EXISTING.default,
        api_url: str = defaults.API_URL.default,
        api_key_env: str = defaults.API_KEY_ENV.default,
        batch_rows: int = defaults.BATCH_ROWS.default,
        max_batch_bytes: int | None = defaults.MAX_BATCH_BYTES.default,
        insert: InsertOptions | None = None,
        budget: Any = None,
    ) -> None:
        self.project = project
        self.to_object = parse_one_object(to_object, "to_object")
        self.create_project = create_project
        self.into_existing = into_existing
        self._settings = cluster.worker_settings(ClientSettings.from_options(api_url=api_url))
        self._api_key_env = api_key_env
        self._batch_rows = batch_rows
        self._max_batch_bytes = max_batch_bytes
        self._insert = insert or InsertOptions()
        if self._insert.on_error == "skip":
            raise UsageError("on_error skip: not in a Ray write (the error file would be a worker's)")
        self._budget = budget
        self._target: _Target | None = None
        self.rows_written = 0

    def on_write_start(self, schema: Any = None) -> None:
        with cluster.portal() as loop:
            self._target = loop.call(self._find_target)

    async def _find_target(self) -> _Target:
        kind, name = self.to_object
        async with cluster.worker_client(self._settings, self._api_key_env, self._budget) as client:
            project = await destination_project(client, self.project, self.create_project)

            async def remember(_key: str, _id: str) -> None:
                return None

            found = await ensure_objects(
                client, project, [Wanted("ray", kind, name or "imported", {}, counterpart=False)], id_map={},
                into_existing=self.into_existing, ours={}, remember=remember, warnings=[], verb="written",
            )  # fmt: skip
            return _Target(found["ray"].ref, await request_limit(client, self._max_batch_bytes))

    def write(self, blocks: Iterable[Any], ctx: Any) -> int:
        target = self._target
        assert target is not None, "on_write_start runs first"
        progress = ObjectProgress(destination=target.ref.id)
        with cluster.portal() as loop:
            loop.call(self._write, target, progress, blocks, int(getattr(ctx, "task_idx", 0)))
        return progress.rows

    async def _write(
        self, target: _Target, progress: ObjectProgress, blocks: Iterable[Any], task: int
    ) -> None:
        fallback = target.ref.object_type

        async def chunks() -> Any:
            for number, block in enumerate(blocks):
                table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
                yield _items(table, fallback, task, number)

        async def saved() -> None:
            return None

        async with cluster.worker_client(self._settings, self._api_key_env, self._budget) as client:
            pool = InsertPool(client, self._insert, max_request_bytes=target.request_limit)
            batcher = object_batcher(target.ref, progress, self._batch_rows, target.request_limit, save=saved)
            await pool.run(partial(feed, pool, batcher, chunks()))

    def on_write_complete(self, write_result: Any) -> None:
        self.rows_written = sum(write_result.write_returns)

    def get_name(self) -> str:
        return "Braintrust"


def write_braintrust(
    ds: Dataset,
    project: str,
    *,
    to_object: str = "logs",
    create_project: bool = defaults.CREATE_PROJECT.default,
    into_existing: bool = defaults.INTO_EXISTING.default,
    api_url: str = defaults.API_URL.default,
    api_key_env: str = defaults.API_KEY_ENV.default,
    budget: Any = None,
    **write_args: Any,
) -> int:
    """Write every row of ``ds`` into ``to_object`` (``logs``, ``dataset:NAME``,
    ``experiment:NAME``) of ``project``; returns the rows written. ``write_args`` go to
    ``Dataset.write_datasink`` (``concurrency``, ``ray_remote_args``)."""
    sink = BraintrustDatasink(
        project, to_object=to_object, create_project=create_project, into_existing=into_existing,
        api_url=api_url, api_key_env=api_key_env, budget=budget,
    )  # fmt: skip
    ds.write_datasink(sink, **write_args)
    return sink.rows_written
