"""Parquet part files: pages encoded into row groups of the btpipe schema.

The schema is :mod:`pipeline.common.arrow_schema`'s and the encoding :mod:`pipeline.sinks.encode`'s;
this module only buffers tables into row groups and writes them, in a thread of their own.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.arrow_schema import schema_for, stored_schema
from pipeline.common.errors import UsageError
from pipeline.common.rows import ObjectType
from pipeline.common.storage import Storage
from pipeline.sinks.base import CountingWriter, PartFileSink
from pipeline.sinks.encode import page_to_table

DICTIONARY_COLUMNS: Final = (
    "org_id", "project_id", "log_id", "dataset_id", "experiment_id", "tags", "_nulls",
)  # fmt: skip
STATISTICS_COLUMNS: Final = (
    "id", "_xact_id", "created", "_pagination_key", "span_id", "root_span_id", "is_root",
    "org_id", "project_id", "log_id", "dataset_id", "experiment_id",
)  # fmt: skip
WRITE_BUFFER_BYTES: Final = 256 * 1024

#: Row groups in the row-group thread at once, across a process's sinks: each holds up to
#: ``row_group_bytes`` of Arrow data. One is enough to overlap encoding with building tables.
ROW_GROUPS_IN_FLIGHT: Final = 1
_row_group_room = threading.BoundedSemaphore(ROW_GROUPS_IN_FLIGHT)
_row_group_thread: ThreadPoolExecutor | None = None
_row_group_lock = threading.Lock()


def _write_row_group(writer: pq.ParquetWriter, group: pa.Table) -> Future[None]:
    """Write ``group`` in the process's row-group thread; blocks while the thread is behind."""
    global _row_group_thread
    with _row_group_lock:
        if _row_group_thread is None:
            _row_group_thread = ThreadPoolExecutor(1, thread_name_prefix="parquet-row-groups")
    _row_group_room.acquire()
    try:
        writing = _row_group_thread.submit(writer.write_table, group, row_group_size=group.num_rows)
    except BaseException:
        _row_group_room.release()
        raise
    writing.add_done_callback(lambda _: _row_group_room.release())
    return writing


class ParquetSink(PartFileSink):
    """Writes pages to ``{directory}/{prefix}-{part:05d}.parquet`` in row groups.

    Rows are buffered as Arrow tables until a row group is full (``row_group_rows`` rows or
    ``row_group_bytes`` of Arrow data, whichever comes first, so wide rows do not make huge
    groups that every writer must hold in memory). A part is published only by ``flush`` or
    ``close``: the caller decides where files end.

    Row groups are encoded by the process's row-group thread while the caller builds the
    next page's table: Arrow's Parquet writer releases the GIL, table building mostly holds
    it, so the two overlap.
    """

    extension = ".parquet"

    def __init__(
        self,
        storage: Storage,
        directory: str,
        object_type: ObjectType,
        *,
        prefix: str = "part",
        first_part: int = 0,
        compression: str | None = "zstd",
        row_group_rows: int = 50_000,
        row_group_bytes: int = 16 * 1024 * 1024,
        stored: bool = False,
    ) -> None:
        if row_group_rows <= 0 or row_group_bytes <= 0:
            raise UsageError("row group limits must be positive")
        super().__init__(storage, directory, prefix=prefix, first_part=first_part)
        self.object_type = object_type
        # stored: the types a Delta table keeps (no extension types; btpipe's metadata stays, which
        # Delta readers ignore), so that the files can become the table's data files as they are
        full = schema_for(object_type)
        self.schema = stored_schema(object_type).with_metadata(full.metadata) if stored else full
        self._stored = stored
        self.compression = compression or "none"
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._stream: pa.BufferedOutputStream | None = None  # the part's bytes, buffered
        self._writing: Future[None] | None = None  # the part's row group being written

    def _start(self, out: CountingWriter) -> None:
        # Arrow's writer calls a Python file object, which needs the GIL, once or twice per
        # data page; while another thread holds the GIL each call waits for it, which made
        # writing several times slower. Buffering in Arrow calls it once per 256 KB (one buffer
        # per open part, so kept small).
        self._stream = pa.BufferedOutputStream(pa.PythonFile(out, mode="w"), buffer_size=WRITE_BUFFER_BYTES)
        self._writer = pq.ParquetWriter(
            self._stream,
            self.schema,
            compression=self.compression,
            # Dictionaries pay only for low-cardinality columns; statistics only where a reader
            # can prune with them (ids, versions, timestamps). Both cost CPU on wide JSON text.
            use_dictionary=[n for n in DICTIONARY_COLUMNS if n in self.schema.names],
            write_statistics=[n for n in STATISTICS_COLUMNS if n in self.schema.names],
        )

    def _settle(self) -> None:
        """Wait for the row group being written; raise its error."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def _finish(self) -> None:
        self._settle()
        if self._writer is not None:
            self._writer.close()  # writes the footer
            self._writer = None
        if self._stream is not None:
            self._stream.close()  # flushes the buffer; the atomic file stays open
            self._stream = None

    def _abandon(self) -> None:
        with contextlib.suppress(Exception):  # the part is thrown away; its error was reported
            self._settle()
        self._finish()

    def write_page(self, page: bytes, rows: int | None = None) -> None:
        table = page_to_table(page, self.object_type)
        if not table.num_rows:
            return
        if self._stored:
            table = table.cast(self.schema)  # extension types to their storage: no copy
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        while self._pending_rows >= self.row_group_rows or (
            self._pending_rows and self._pending_bytes >= self.row_group_bytes
        ):
            self._write_group()

    def _write_group(self) -> None:
        """Write one row group from the buffer into the current part."""
        size = min(self.row_group_rows, self._pending_rows)
        buffered = pa.concat_tables(self._pending)
        group, rest = buffered.slice(0, size), buffered.slice(size)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        self._pending_bytes = rest.nbytes
        self._ensure_open()
        assert self._writer is not None
        self._settle()
        self._writing = _write_row_group(self._writer, group)
        self._part_rows += size

    def _drain(self) -> None:
        while self._pending_rows:
            self._write_group()

    def abort(self) -> None:
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        super().abort()
