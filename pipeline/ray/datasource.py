"""``read_braintrust``: a project's rows as a Ray Dataset, read as ``btpipe export`` reads them.

The datasource plans on the driver exactly as an export plans (objects, snapshot version,
``_xact_id`` or ``created`` ranges: :func:`pipeline.export.runner.plan_export`); each range
becomes one read task, which pages the range under the snapshot with btpipe's client, retry
policy and request patterns (:func:`pipeline.export.runner.range_pager`) and yields one Arrow
table per page, in the schema of the Parquet sink (:mod:`pipeline.sinks.encode`), so the
rows are the ones ``btpipe export`` writes, losslessly. The plan's row estimates size the
read tasks' metadata, so Ray knows roughly how much each holds before reading it.

A read task that fails or is lost is run again by Ray from its range's start: the range reads
the same snapshot, so it yields the same rows again, not more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, cast

import pyarrow as pa
import ray
from ray.data import Dataset, Datasource, ReadTask
from ray.data.block import BlockMetadata

from pipeline.api.btql import parse_filter
from pipeline.api.client import ClientSettings
from pipeline.common import defaults
from pipeline.common.arrow_schema import schema_for
from pipeline.common.errors import UsageError
from pipeline.common.rows import ObjectType
from pipeline.common.state import ObjectState, RangeState
from pipeline.export.runner import ExportOptions, plan_export, range_pager
from pipeline.ray import cluster
from pipeline.sinks.encode import page_to_table

#: Bytes an Arrow row is taken to hold when sizing read tasks: spans of a few KB.
ROW_BYTES_ESTIMATE = 4096


def _read_range(
    settings: ClientSettings,
    api_key_env: str,
    budget: Any,
    options: ExportOptions,
    obj: ObjectState,
    rng: RangeState,
) -> Iterator[pa.Table]:
    """One read task: the pages of one range, each as a table of the btpipe schema."""
    user_filter = parse_filter(options.filter)
    object_type: ObjectType = obj.object_type  # type: ignore[assignment]
    with (
        cluster.portal() as loop,
        loop.wrap_async_context_manager(cluster.worker_client(settings, api_key_env, budget)) as client,
    ):
        pager = range_pager(client, options, user_filter, obj, rng)
        while (page := loop.call(pager.next_page)) is not None:
            if page.rows:
                yield page_to_table(page.raw, object_type)


class BraintrustDatasource(Datasource):
    """A project's objects as a Ray datasource: one read task per range of the export plan.

    The key is read from the environment variable ``api_key_env``, on the driver to plan and
    on each worker to read; neither this object nor its read tasks hold it."""

    def __init__(
        self,
        project: str,
        *,
        objects: str = "logs",
        filter: str | None = None,
        shape: str = defaults.SHAPE.default,
        api_url: str = defaults.API_URL.default,
        api_key_env: str = defaults.API_KEY_ENV.default,
        page_limit: int = defaults.PAGE_LIMIT.default,
        ranges_per_object: int | None = defaults.RANGES_PER_OBJECT.default,
        min_rows_per_range: int = defaults.MIN_ROWS_PER_RANGE.default,
        budget: Any = None,
    ) -> None:
        self._settings = cluster.worker_settings(ClientSettings.from_options(api_url=api_url))
        self._api_key_env = api_key_env
        self._budget = budget
        self._options = ExportOptions(
            project=project, out="-", objects=objects, filter=filter, shape=shape, page_limit=page_limit,
            ranges_per_object=ranges_per_object, min_rows_per_range=min_rows_per_range,
        )  # fmt: skip
        with cluster.portal() as loop:
            self._objects = loop.call(self._plan)
        kinds = {obj.object_type for obj in self._objects}
        if len(kinds) > 1:
            raise UsageError(
                f"objects {objects!r}: selects {', '.join(sorted(kinds))}; read one object type per "
                "dataset (their columns differ)"
            )
        self.object_type = cast(ObjectType, next(iter(kinds)) if kinds else "project_logs")

    async def _plan(self) -> list[ObjectState]:
        async with cluster.worker_client(self._settings, self._api_key_env, self._budget) as client:
            _project, run = await plan_export(client, self._options)
        return [obj for obj in run.objects if not obj.gone]

    def _ranges(self) -> list[tuple[ObjectState, RangeState]]:
        return [(obj, rng) for obj in self._objects for rng in obj.ranges]

    @staticmethod
    def _rows(obj: ObjectState) -> int | None:
        """Rows of one range of ``obj``, as planned."""
        rows = obj.expected_rows if obj.expected_rows is not None else obj.estimate
        return None if rows is None else max(1, rows // max(1, len(obj.ranges)))

    def estimate_inmemory_data_size(self) -> int | None:
        rows = [self._rows(obj) for obj, _rng in self._ranges()]
        return None if None in rows else sum(r or 0 for r in rows) * ROW_BYTES_ESTIMATE

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        schema = schema_for(self.object_type)
        tasks = []
        for obj, rng in self._ranges():
            rows = self._rows(obj)
            metadata = BlockMetadata(
                num_rows=rows,
                size_bytes=None if rows is None else rows * ROW_BYTES_ESTIMATE,
                exec_stats=None,
                input_files=None,
            )
            read = _bound_read(self._settings, self._api_key_env, self._budget, self._options, obj, rng)
            tasks.append(ReadTask(read, metadata, schema=schema, per_task_row_limit=per_task_row_limit))
        return tasks

    def get_name(self) -> str:
        return "Braintrust"


def _bound_read(*args: Any) -> Any:
    """A read function with its arguments bound (a plain function and a tuple: it pickles
    without the datasource)."""

    def read() -> Iterable[pa.Table]:
        return _read_range(*args)

    return read


def read_braintrust(
    project: str,
    *,
    objects: str = "logs",
    filter: str | None = None,
    shape: str = defaults.SHAPE.default,
    api_url: str = defaults.API_URL.default,
    api_key_env: str = defaults.API_KEY_ENV.default,
    budget: Any = None,
    **read_args: Any,
) -> Dataset:
    """The rows ``btpipe export`` would write for ``project`` as a Ray Dataset (Arrow blocks
    of the btpipe Parquet schema). ``objects``, ``filter`` and ``shape`` are the export's
    flags; ``budget`` a request budget shared with other reads and writes
    (:func:`pipeline.ray.budget.request_budget`); ``read_args`` go to ``ray.data.read_datasource``."""
    source = BraintrustDatasource(
        project, objects=objects, filter=filter, shape=shape, api_url=api_url, api_key_env=api_key_env,
        budget=budget,
    )  # fmt: skip
    return ray.data.read_datasource(source, **read_args)
