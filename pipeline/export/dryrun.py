"""What ``btpipe export --dry-run`` shows: the run an export would do, written nowhere.

The plan comes from the export's own planning (:meth:`pipeline.export.runner.ExportJob.dry_run`),
so it holds what a real run would start from: the same objects, snapshot versions, row counts
and ranges, found by the same requests, except that no range's first page is read (a real run
reads them while the server counts; a dry run asks for no page at all). An unfinished run in
the output root is shown as a real run would take it up: resumed, with what it wrote so far.

Row counts are exact where the server counts at the snapshot's version, else the rows counted
just after the version was found, labelled an estimate (None: the server could not count).
Paths are full locations under the output root; a new run's id is given only when it starts,
so its paths hold :data:`NEW_RUN_ID` in its place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.common import layout
from pipeline.common.manifest import manifest_path
from pipeline.common.state import ObjectState, RangeState, RunState
from pipeline.common.storage import Storage, location

#: Stands for the id of a run not started yet, in the paths of its files.
NEW_RUN_ID = "<new run id>"


@dataclass(frozen=True)
class PlannedRange:
    """One range: ``low < _xact_id <= high`` or ``low <= created < high`` (by ``by``; a
    missing bound is open), and the part files it writes (a glob)."""

    index: int
    by: str
    low: str | None
    high: str | None
    files: str
    rows_written: int  # by the unfinished run resumed; 0 for a new run
    done: bool


@dataclass(frozen=True)
class PlannedObject:
    """One object: the version its reads pin to (None: read unpinned, see ``pinned``), its
    rows (exact, or an estimate), what an incremental read selects rows after (``since``,
    compared by ``since_field``; ``previous_run`` is the run that read up to there) and the
    directory its files go to."""

    label: str
    object_type: str
    id: str
    name: str
    version: str | None
    pinned: bool
    rows: int | None
    rows_exact: bool
    since_field: str | None
    since: str | None
    previous_run: str | None
    directory: str
    rows_written: int
    gone: bool
    ranges: tuple[PlannedRange, ...]


@dataclass(frozen=True)
class ExportPlan:
    """The run an export would do: a new one (``run_id`` None), or the unfinished ``run_id``
    it would resume; ``discards``: the unfinished run ``--restart`` would delete first."""

    out: str
    project_id: str
    project_name: str
    format: str
    compression: str
    shape: str
    filter: str | None
    incremental: bool
    run_id: str | None
    resume: bool
    discards: str | None
    manifest: str
    objects: tuple[PlannedObject, ...]
    requests: int  # every request the dry run sent: planning only, no page

    @property
    def rows(self) -> int | None:
        """Rows of every object, None when some object's count is unknown."""
        counts = [o.rows for o in self.objects if not o.gone]
        return None if None in counts else sum(c or 0 for c in counts)

    @property
    def rows_exact(self) -> bool:
        return all(o.rows_exact for o in self.objects if not o.gone)

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": True, **asdict(self), "rows": self.rows, "rows_exact": self.rows_exact}


def part_extension(file_format: str, compression: str) -> str:
    """The name ending of the part files the sinks write in ``file_format``."""
    if file_format in ("parquet", "delta"):  # Delta stages its runs as Parquet
        from pipeline.sinks.parquet import ParquetSink  # pyarrow loads only for this

        return ParquetSink.extension
    from pipeline.sinks.jsonl import EXTENSIONS

    return EXTENSIONS[None if compression == "none" else compression]


def _range(storage: Storage, directory: str, rng: RangeState, extension: str) -> PlannedRange:
    files = location(storage, f"{directory}/{layout.range_prefix(rng.index)}-*{extension}")
    return PlannedRange(rng.index, rng.by, rng.low, rng.high, files, rng.rows, rng.done)


def _object(
    storage: Storage, run_id: str, obj: ObjectState, previous_run: str | None, extension: str
) -> PlannedObject:
    directory = layout.object_dir(obj.object_type, obj.id, run_id)
    exact = obj.expected_rows is not None
    return PlannedObject(
        label=obj.name if obj.object_type == "project_logs" else f"{obj.object_type}:{obj.name}",
        object_type=obj.object_type,
        id=obj.id,
        name=obj.name,
        version=obj.version if obj.pinned else None,
        pinned=obj.pinned,
        rows=obj.expected_rows if exact else obj.estimate,
        rows_exact=exact,
        since_field=obj.since_field if obj.since is not None else None,
        since=obj.since,
        previous_run=previous_run if obj.since is not None else None,
        directory=location(storage, directory),
        rows_written=obj.rows,
        gone=obj.gone,
        ranges=tuple(_range(storage, directory, rng, extension) for rng in obj.ranges),
    )


def describe(
    run: RunState,
    storage: Storage,
    *,
    project_name: str,
    project_id: str,
    file_format: str,
    compression: str,
    resume: bool,
    discards: str | None,
    previous: dict[str, str | None],
    requests: int,
) -> ExportPlan:
    """The plan of ``run``, planned anew (``resume`` False: its id is not the one a run gets)
    or the unfinished run resumed; ``previous`` names, by object key, the run each object's
    incremental read continues."""
    run_id = run.run_id if resume else NEW_RUN_ID
    extension = part_extension(file_format, compression)
    return ExportPlan(
        out=storage.url,
        project_id=project_id,
        project_name=project_name,
        format=file_format,
        compression=compression,
        shape=str(run.options["shape"]),
        filter=run.options["filter"],
        incremental=bool(run.options["incremental"]),
        run_id=run.run_id if resume else None,
        resume=resume,
        discards=discards,
        manifest=location(storage, manifest_path(run_id)),
        objects=tuple(_object(storage, run_id, obj, previous.get(obj.key), extension) for obj in run.objects),
        requests=requests,
    )
