"""Delta Lake tables: a run's staged Parquet files merged into one table per object type, in one commit each.

``--format delta`` exports as ``--format parquet`` does (pages to Parquet part files in the
run's directory, checkpointed as they are published, tombstones recorded at the end); only
then, before the manifest, :func:`commit_run` applies the whole run to the tables
``delta/<object type>/`` (:func:`pipeline.common.layout.delta_table`), partitioned by the
column naming each row's object (:data:`pipeline.common.arrow_schema.OBJECT_ID_COLUMNS`):

* a table that does not exist yet is created holding the run's staged files as its data files
  (:func:`create_table`: staged in the table's own types, they are copied, not encoded again);
* otherwise one ``MERGE`` on (object id, ``id``) takes the run's rows, a row replacing the
  table's only when its ``_xact_id`` is at least as high, and the ids of the run's tombstones,
  which delete their rows; for an object the run read whole (a full run), rows of the table
  the run did not see are deleted too.

Either way it is one Delta commit per table, so a reader sees the table before the run or
after it, never half of it. The commit carries an application transaction
(``btpipe``, :func:`run_number`) and the run id in its commit info: a run killed after its
commit but before its manifest is resumed, finds its own transaction as the table's latest,
and commits nothing a second time. Staged rows stream from storage in record batches
(``MERGE`` runs streamed); what a merge holds is the files it rewrites (docs/delta.md, Limits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
)
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import DeltaError
from deltalake.transaction import AddAction, create_table_with_add_actions

from pipeline.common import jsoncodec, layout
from pipeline.common.arrow_schema import OBJECT_ID_COLUMNS, stored_schema
from pipeline.common.errors import BtpipeError, UsageError
from pipeline.common.rows import ObjectType
from pipeline.common.storage import Storage, TableLocation, location
from pipeline.sinks.parquet import DICTIONARY_COLUMNS, STATISTICS_COLUMNS

#: The application id of btpipe's transactions in a table's log.
APP_ID: Final = "btpipe"
#: Commit info key holding the run id of the commit.
RUN_ID_KEY: Final = "btpipe.run_id"
#: The merge source's extra column: True for a tombstone's id (delete), False for a row.
DELETE_COLUMN: Final = "_btpipe_delete"
_READ_BYTES: Final = 1 << 20  # of a tombstone file at a time
_BATCH_ROWS: Final = 8192  # staged rows read at a time
_COPY_BYTES: Final = 8 << 20  # of a staged file at a time, copied into a new table
_NEW_TABLE: Final = (
    "; export once without --incremental (btpipe run: --set incremental=false) to build it from a full read"
)


@dataclass(frozen=True)
class StagedObject:
    """One object of a run, as its table takes it: the run's Parquet files of it, its
    tombstone file, and whether the run read it whole (``complete``)."""

    object_type: ObjectType
    object_id: str
    files: tuple[str, ...]
    tombstones: str | None
    complete: bool


def run_number(run_id: str) -> int:
    """The transaction version of run ``run_id``: its start in microseconds since the epoch."""
    started = datetime.strptime(run_id, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    return int(started.timestamp()) * 1_000_000 + started.microsecond


def _sql_text(value: str) -> str:
    """``value`` as a SQL string literal (ids only, but quoted all the same)."""
    return "'" + value.replace("'", "''") + "'"


def _source_schema(object_type: ObjectType) -> pa.Schema:
    return stored_schema(object_type).append(pa.field(DELETE_COLUMN, pa.bool_(), nullable=False))


def _stored(column: pa.Array, kind: pa.DataType) -> pa.Array:
    """A staged column as the table stores it: an extension array as its storage."""
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    return column.cast(kind)


def _row_batches(storage: Storage, obj: StagedObject, deleted: pa.Array) -> Iterator[pa.RecordBatch]:
    """The staged rows of ``obj`` as a merge source: the stored schema and the delete flag
    (False); a row lacking its object's id gets it. A row whose id is among ``deleted`` (the
    run's tombstones) is left out: a run that read its rows without a version (the server pins
    them at the first page) may read a row the tombstone pass, later, finds deleted. The
    delete is the newer news, as a restore applies it (rows, then tombstones), and a merge
    source may hold an id only once."""
    schema = _source_schema(obj.object_type)
    index = schema.get_field_index(OBJECT_ID_COLUMNS[obj.object_type])
    for relpath in obj.files:
        with storage.open_read(relpath) as raw:
            parquet = pq.ParquetFile(raw)
            both = pa.array([], pa.string())
            if len(deleted):  # the file's ids against the tombstones once: few or none are both
                ids = parquet.read(columns=["id"]).column("id").combine_chunks()
                both = ids.filter(pc.is_in(ids, value_set=deleted))
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
                if len(both):
                    batch = batch.filter(pc.invert(pc.is_in(batch.column("id"), value_set=both)))
                columns = [_stored(batch.column(f.name), f.type) for f in stored_schema(obj.object_type)]
                columns[index] = pc.fill_null(columns[index], obj.object_id)
                columns.append(pa.array([False] * batch.num_rows, pa.bool_()))
                yield pa.RecordBatch.from_arrays(columns, schema=schema)


def _tombstone_ids(storage: Storage, obj: StagedObject) -> pa.Array:
    """The ids of ``obj``'s tombstone file (the ids one incremental run found deleted), held
    as one Arrow array while the run is merged."""
    if obj.tombstones is None:
        return pa.array([], pa.string())
    ids: list[pa.Array] = []
    with storage.open_read(obj.tombstones) as raw:
        rest = b""
        while True:
            chunk = raw.read(_READ_BYTES)
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop() if chunk else b""
            ids.append(pa.array([jsoncodec.loads(line)["id"] for line in lines if line.strip()], pa.string()))
            if not chunk:
                return pa.concat_arrays(ids)


def _delete_batches(obj: StagedObject, deleted: pa.Array) -> Iterator[pa.RecordBatch]:
    """``deleted`` (``obj``'s tombstones) as delete rows: id, object id and the flag set."""
    schema = _source_schema(obj.object_type)
    id_column = OBJECT_ID_COLUMNS[obj.object_type]
    for start in range(0, len(deleted), _BATCH_ROWS):
        ids = deleted.slice(start, _BATCH_ROWS)
        values = {"id": ids, id_column: pa.array([obj.object_id] * len(ids), pa.string()),
                  DELETE_COLUMN: pa.array([True] * len(ids), pa.bool_())}  # fmt: skip
        yield pa.RecordBatch.from_arrays([values.get(f.name, pa.nulls(len(ids), f.type)) for f in schema], schema=schema)  # fmt: skip


def _merge_batches(storage: Storage, obj: StagedObject) -> Iterator[pa.RecordBatch]:
    """``obj``'s merge source: its rows, then its deletes."""
    deleted = _tombstone_ids(storage, obj)
    yield from _row_batches(storage, obj, deleted)
    yield from _delete_batches(obj, deleted)


def refuse_partial_new_table(storage: Storage, object_type: ObjectType, partial_by: str) -> None:
    """UsageError when ``object_type`` has no table yet: a run reading part of the rows
    (``partial_by``: the flag that makes it so) cannot create one. Blocking."""
    relpath = layout.delta_table(object_type)
    if _open_table(storage.table_location(relpath)) is None:
        raise UsageError(
            f"{location(storage, relpath)}: no Delta table there, and a run with {partial_by} reads only "
            "part of the rows; create the table first with a full run (without --filter, --shape and "
            "--incremental; btpipe run: --set incremental=false)"
        )


def _open_table(where: TableLocation) -> DeltaTable | None:
    if not DeltaTable.is_deltatable(where.uri, storage_options=where.options):
        return None
    return DeltaTable(where.uri, storage_options=where.options)


def _writer(object_type: ObjectType) -> WriterProperties:
    """The Parquet settings of the table's files: those of the Parquet sink (zstd, dictionaries
    and statistics only where they pay), in row groups small enough to keep memory flat."""
    names = stored_schema(object_type).names
    columns = {n: ColumnProperties(dictionary_enabled=True) for n in DICTIONARY_COLUMNS if n in names}
    for name in STATISTICS_COLUMNS:
        if name in names:
            columns[name] = ColumnProperties(dictionary_enabled=name in columns, statistics_enabled="CHUNK")
    return WriterProperties(
        compression="ZSTD",
        compression_level=1,
        max_row_group_size=_BATCH_ROWS,
        default_column_properties=ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE"),
        column_properties=columns,
    )


def _copy(storage: Storage, source: str, target: str) -> int:
    """Copy file ``source`` to ``target`` under ``storage``, published atomically; its size."""
    size = 0
    with storage.open_read(source) as raw, storage.open_atomic(target) as out:
        while chunk := raw.read(_COPY_BYTES):
            out.write(chunk)
            size += len(chunk)
    return size


def create_table(
    storage: Storage, where: TableLocation, relpath: str, run_id: str, object_type: ObjectType,
    objects: list[StagedObject], commit: CommitProperties,
) -> None:  # fmt: skip
    """Create the table at ``relpath`` holding ``objects`` (each read whole) in its first commit.

    A Delta run stages its pages in the table's own schema (:func:`stored_schema`), so the
    staged files are already data files of the table: they are copied in, not encoded again
    (their object id is a column too, which Delta readers take from the partition value), and
    ``deltalake`` writes version 0 of the log listing them. Files copied by a run stopped before
    that commit are written again by the rerun under the same names. Blocking."""
    id_column = OBJECT_ID_COLUMNS[object_type]
    now = int(time.time() * 1000)
    adds: list[AddAction] = []
    for obj in objects:
        for index, staged in enumerate(obj.files):
            with storage.open_read(staged) as raw:
                rows = pq.ParquetFile(raw).metadata.num_rows
            name = f"{id_column}={obj.object_id}/{run_id}-{index:05d}.parquet"
            size = _copy(storage, staged, f"{relpath}/{name}")
            stats = jsoncodec.dumps({"numRecords": rows}).decode()
            adds.append(AddAction(quote(name, safe="/="), size, {id_column: obj.object_id}, now, True, stats))
    create_table_with_add_actions(
        where.uri, DeltaSchema.from_arrow(stored_schema(object_type)), adds, mode="error",
        partition_by=[id_column], storage_options=where.options, commit_properties=commit,
    )  # fmt: skip


def commit_table(
    storage: Storage,
    run_id: str,
    object_type: ObjectType,
    objects: list[StagedObject],
    check: Callable[[], None],
    listed_project: str | None = None,
) -> int | None:
    """Apply ``objects`` (all of ``object_type``) to its table in one commit, unless the
    table's latest btpipe transaction is already this run's; the table version after it
    (None: nothing to apply and no table). ``listed_project``: the run listed every object of
    the type in that project, so that project's objects the table holds and the run did not
    list were deleted at the source, and leave the table. ``check`` runs just before the
    commit (the lease). Blocking."""
    relpath = layout.delta_table(object_type)
    where = storage.table_location(relpath)
    table = _open_table(where)
    number = run_number(run_id)
    if table is not None and table.transaction_version(APP_ID) == number:
        return table.version()  # committed before the run was stopped: not again
    complete = [o.object_id for o in objects if o.complete]
    gone = (
        []
        if table is None or listed_project is None
        else _unlisted(table, object_type, objects, listed_project)
    )
    changes = any(o.files or o.tombstones for o in objects) or (table is not None and (complete or gone))
    if not changes:  # a table the run read no object of and changed nothing in is not its
        return None if table is None or not objects else table.version()
    commit = CommitProperties(
        custom_metadata={RUN_ID_KEY: run_id}, app_transactions=[Transaction(APP_ID, number)]
    )
    id_column = OBJECT_ID_COLUMNS[object_type]
    if table is not None and not objects:  # only objects deleted at the source
        check()
        table.delete(f"{id_column} IN ({', '.join(_sql_text(i) for i in gone)})", commit_properties=commit)
        table.update_incremental()
        return table.version()
    if table is None:
        partial = [o.object_id for o in objects if not o.complete]
        if partial:
            raise UsageError(
                f"{location(storage, relpath)}: no Delta table there, and this run read only the "
                f"changes of {len(partial)} object(s) since an earlier run{_NEW_TABLE}"
            )
        check()
        create_table(storage, where, relpath, run_id, object_type, objects, commit)
        created = _open_table(where)
        assert created is not None
        return created.version()
    source = pa.RecordBatchReader.from_batches(
        _source_schema(object_type), (b for o in objects for b in _merge_batches(storage, o))
    )
    touched = ", ".join(_sql_text(o.object_id) for o in objects)
    # _xact_id is a decimal column; null only for a version of another spelling (then in _extra)
    newer = "(t._xact_id IS NULL OR s._xact_id >= t._xact_id)"
    merger = table.merge(
        source,
        f"t.{id_column} IN ({touched}) AND t.{id_column} = s.{id_column} AND t.id = s.id",
        source_alias="s",
        target_alias="t",
        writer_properties=_writer(object_type),
        streamed_exec=True,
        commit_properties=commit,
    )
    merger = (
        merger.when_matched_delete(f"s.{DELETE_COLUMN}")
        .when_matched_update_all(f"NOT s.{DELETE_COLUMN} AND {newer}", except_cols=[DELETE_COLUMN])
        .when_not_matched_insert_all(f"NOT s.{DELETE_COLUMN}", except_cols=[DELETE_COLUMN])
    )
    if complete or gone:
        full = ", ".join(_sql_text(i) for i in [*complete, *gone])
        merger = merger.when_not_matched_by_source_delete(f"t.{id_column} IN ({full})")
    check()
    merger.execute()
    table.update_incremental()
    return table.version()


def _unlisted(
    table: DeltaTable, object_type: ObjectType, objects: list[StagedObject], project_id: str
) -> list[str]:
    """The objects of project ``project_id`` the table holds that are not among ``objects``:
    the partitions of other ids, each asked for its project (one row of one column)."""
    column = OBJECT_ID_COLUMNS[object_type]
    listed = {o.object_id for o in objects}
    held = pa.table(table.get_add_actions(flatten=True)).column(f"partition.{column}").to_pylist()
    found = []
    dataset = table.to_pyarrow_dataset()  # its fragments carry their partition, so a filter prunes
    for object_id in sorted(set(held) - listed):
        sample = dataset.head(1, columns=["project_id"], filter=pc.field(column) == object_id)
        if sample.num_rows and sample.column(0)[0].as_py() == project_id:
            found.append(object_id)
    return found


def commit_run(
    storage: Storage,
    run_id: str,
    objects: list[StagedObject],
    check: Callable[[], None],
    listed: dict[ObjectType, str] | None = None,
) -> dict[str, int]:
    """Apply run ``run_id`` to the table of each object type it read (see the module
    docstring); ``listed``: the object types the run listed every object of, with their
    project, whose tables lose that project's objects the run did not list. The version of
    each table after it, by object type. Blocking."""
    listed = listed or {}
    versions: dict[str, int] = {}
    for object_type in dict.fromkeys([*(o.object_type for o in objects), *listed]):
        of_type = [o for o in objects if o.object_type == object_type]
        try:
            version = commit_table(storage, run_id, object_type, of_type, check, listed.get(object_type))
        except (DeltaError, OSError) as exc:  # the files stay staged: a re-run commits them
            detail = " ".join(str(exc).split())[:300]
            where = location(storage, layout.delta_table(object_type))
            raise BtpipeError(
                f"{where}: the run could not be committed to the Delta table: {detail} (a re-run "
                "commits the staged files again; if it fails the same way, --restart reads the run anew)"
            ) from exc
        if version is not None:
            versions[object_type] = version
    return versions
