"""Resume state: the typed records a run checkpoints, and the store that keeps them on disk.

A run saves its state after each durable step, so a killed run resumes from the last save.
There are two kinds of state file, each one record with ``to_json``/``from_json``:

- an export's, one per project under the output root (:func:`export_store`):
  :class:`ExportState`, the unfinished run to resume and the watermarks ``--incremental``
  reads after;
- a load's (import, migrate), one per job in ``--state-dir`` (:mod:`pipeline.common.jobstate`):
  :class:`LoadState`, an :class:`ObjectProgress` per source object.

Only this module turns records into JSON and back. The file is canonical JSON (sorted keys)
so successive saves diff cleanly, and names its ``format``: a file in another format is
refused with one line rather than misread. State must never carry a credential: saving
refuses keys that name one, wherever they are nested.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

import anyio
import orjson

from pipeline.common import layout
from pipeline.common.errors import UsageError
from pipeline.common.manifest import FileInfo
from pipeline.common.storage import Storage, location

EXPORT_FORMAT = 1
LOAD_FORMAT = 1

_SECRET_KEY = re.compile(
    r"(^|[_-])(api[_-]?key|secret|password|token|authorization|credentials?)$", re.IGNORECASE
)


class StateFormatError(UsageError):
    """A state file in a format this version does not read."""


class CorruptState(UsageError):
    """A state file that is not JSON, or not of the record's shape and types."""


def _check_format(data: dict[str, Any], expected: int) -> None:
    found = data.get("format")
    if found != expected:
        raise StateFormatError(f"state file format {found!r}, but this btpipe reads format {expected}")


# -- the export ---------------------------------------------------------------------------


@dataclass
class RangeState:
    """One range of an object: ``low < _xact_id <= high`` or ``low <= created < high`` (by
    ``by``; a missing bound is open). ``cursor`` is that of the last page inside a
    published file, so resuming from it neither skips nor repeats a row; ``next_part`` keeps
    file names deterministic across a crash, so a file published just before a crash is
    overwritten, not doubled, on resume."""

    index: int
    low: str | None
    high: str | None
    by: str = "_xact_id"
    cursor: str | None = None
    next_part: int = 0
    rows: int = 0
    done: bool = False
    files: list[FileInfo] = field(default_factory=list)

    def advance(self, published: Sequence[FileInfo], cursor: str | None, *, done: bool) -> None:
        """Take ``published`` files, which hold every page up to the one at ``cursor``."""
        self.files.extend(published)
        self.rows += sum(f.rows for f in published)
        self.next_part += len(published)
        self.cursor = cursor
        self.done = done

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RangeState:
        return cls(**{**data, "files": [FileInfo(**f) for f in data.get("files", [])]})


@dataclass
class ObjectState:
    """One object of a run, as planned: the snapshot version every read pins to, the rows
    that snapshot holds (``expected_rows``, when the server could count them at the version;
    else ``estimate``, the rows counted just after the version was found: for progress, and
    more rows written than that shows deletes newer than the version), the ranges, and what
    an incremental run reads after (``since`` compared by ``since_field``: ``_xact_id`` or
    ``_pagination_key``). ``newest_key`` is the ``_pagination_key`` of the snapshot's newest row.
    ``live_rows``: for a run that records tombstones, the rows of the whole object counted just
    after the version was found (more ids at the version than that shows deletes newer than it,
    which the tombstone pass then reads at the current state: ``pipeline.export.tombstones``).
    ``newer_deletes``: such deletes were seen while planning or reading (fewer rows now than at
    the version, or more rows written than counted); a run that records tombstones reads the
    object pinned all the same, and its tombstones also hold the ids gone when it started
    reading the object, or else those gone at its end (``pipeline.export.tombstones``)."""

    object_type: str
    id: str
    name: str
    project_id: str
    version: str | None
    expected_rows: int | None
    since: str | None
    ranges: list[RangeState]
    since_field: str | None = None
    newest_key: str | None = None
    estimate: int | None = None
    pinned: bool = True  # False: read without a version (see the export's _read_unpinned)
    info: dict[str, Any] = field(default_factory=dict)  # a dataset's or experiment's REST fields
    gone: bool = False  # deleted at the source during the run (pipeline.export.gone)
    live_rows: int | None = None
    newer_deletes: bool = False

    @property
    def key(self) -> str:
        return f"{self.object_type}:{self.id}"

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.ranges)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectState:
        fields = dict(data)
        if fields.get("since") is not None and "since_field" not in fields:
            fields["since_field"] = "_xact_id"
        return cls(**{**fields, "ranges": [RangeState.from_json(r) for r in data["ranges"]]})


@dataclass
class RunState:
    """The unfinished run; ``options`` are the ones that must match for a re-run to resume it."""

    run_id: str
    started_at: str
    options: dict[str, Any]
    objects: list[ObjectState]
    #: Source keys of the attachments the run's checkpointed rows refer to (downloaded or
    #: already in the root), and of those ``--attachments skip`` left out.
    attachments: list[str] = field(default_factory=list)
    skipped_attachments: list[str] = field(default_factory=list)

    @property
    def incremental(self) -> bool:
        return bool(self.options.get("incremental", True))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        return cls(
            run_id=data["run_id"],
            started_at=data["started_at"],
            options=data["options"],
            objects=[ObjectState.from_json(o) for o in data["objects"]],
            attachments=list(data.get("attachments", [])),
            skipped_attachments=list(data.get("skipped_attachments", [])),
        )


@dataclass(frozen=True)
class Watermark:
    """The snapshot the last completed run read an object at: its version and the
    ``_pagination_key`` of its newest row (None in files of older versions)."""

    version: str
    run_id: str
    key: str | None = None


@dataclass
class ExportState:
    """One project's export state: ``watermarks`` by the export's watermark key."""

    project_id: str
    watermarks: dict[str, Watermark] = field(default_factory=dict)
    run: RunState | None = None

    def watermark(self, key: str) -> Watermark | None:
        """Where an incremental read of ``key`` starts after (None: read everything)."""
        return self.watermarks.get(key)

    def to_json(self) -> dict[str, Any]:
        return {"format": EXPORT_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportState:
        _check_format(data, EXPORT_FORMAT)
        return cls(
            project_id=data["project_id"],
            watermarks={k: Watermark(**w) for k, w in data.get("watermarks", {}).items()},
            run=None if data.get("run") is None else RunState.from_json(data["run"]),
        )

    @classmethod
    def check_json(cls, data: dict[str, Any]) -> None:
        """ValueError naming the first field of another type than the record's: a file edited
        or damaged by hand must not resume as a run with no objects, or crash."""
        import msgspec  # only where a state file is read

        try:
            msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None


# -- loads (import, migrate) --------------------------------------------------------------


@dataclass(frozen=True)
class FilePosition:
    """An import's mark: an input file (relative to the input root) and a row position in it."""

    path: str
    position: int


#: Where a load stands in its source: a file position (import) or a page cursor (migrate).
Mark = FilePosition | str


@dataclass
class ObjectProgress:
    """One source object of a load: where its rows go and the contiguous prefix applied so
    far, ``rows`` (skipped oversize events included) up to ``mark``. A migration also keeps
    the snapshot ``version`` it reads at and the ``expected`` rows of that snapshot."""

    destination: str
    rows: int = 0
    mark: Mark | None = None
    skipped: int = 0
    version: str | None = None
    expected: int | None = None

    @property
    def position(self) -> FilePosition | None:
        return self.mark if isinstance(self.mark, FilePosition) else None

    @property
    def cursor(self) -> str | None:
        return self.mark if isinstance(self.mark, str) else None

    def to_json(self) -> dict[str, Any]:
        mark = self.mark
        return {
            **asdict(self),
            "mark": [mark.path, mark.position] if isinstance(mark, FilePosition) else mark,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectProgress:
        mark = data.get("mark")
        if isinstance(mark, list):
            path, position = mark
            mark = FilePosition(str(path), int(position))
        elif mark is not None and not isinstance(mark, str):
            raise ValueError(f"mark {mark!r} is neither a file position nor a cursor")
        return cls(
            destination=data["destination"],
            rows=data.get("rows", 0),
            mark=mark,
            skipped=data.get("skipped", 0),
            version=data.get("version"),
            expected=data.get("expected"),
        )


@dataclass
class LoadState:
    """One load job: what identifies it (so another job never resumes from it), by source
    object key its progress, and the destination objects it created (by source object key),
    which a resumed run may write into without ``--into-existing``."""

    identity: dict[str, Any]
    objects: dict[str, ObjectProgress] = field(default_factory=dict)
    created: dict[str, str] = field(default_factory=dict)
    #: Destination keys of the attachments uploaded so far, by source key.
    attachments: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LOAD_FORMAT,
            "identity": dict(self.identity),
            "objects": {key: progress.to_json() for key, progress in self.objects.items()},
            "created": dict(self.created),
            "attachments": dict(self.attachments),
        }

    @classmethod
    def check_json(cls, data: dict[str, Any]) -> None:
        """ValueError naming the first field of another type than the record's."""
        import msgspec

        objects = data.get("objects", {})
        shape = data
        if isinstance(objects, dict):  # a mark is a file position's list or a cursor: from_json checks it
            shape = {**data, "objects": {k: {**v, "mark": None} for k, v in objects.items()}}
        try:
            msgspec.convert(shape, cls)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadState:
        _check_format(data, LOAD_FORMAT)
        return cls(
            identity=data["identity"],
            objects={k: ObjectProgress.from_json(v) for k, v in data.get("objects", {}).items()},
            created={str(k): str(v) for k, v in data.get("created", {}).items()},
            attachments={str(k): str(v) for k, v in data.get("attachments", {}).items()},
        )


# -- the store ----------------------------------------------------------------------------


class Record(Protocol):
    """A state record. ``to_json`` returns a fresh document, sharing nothing the record may
    change later; ``from_json`` checks the document's ``format``."""

    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self: ...

    @classmethod
    def check_json(cls, data: dict[str, Any]) -> None:
        """ValueError when a field of the document is of another type than the record's."""


R = TypeVar("R", bound=Record)


class StateStore(Generic[R]):
    """One state file at ``relpath`` under ``storage``, holding one ``record``."""

    def __init__(self, storage: Storage, relpath: str, record: type[R]) -> None:
        self.storage = storage
        self.relpath = relpath
        self.record = record

    @property
    def location(self) -> str:
        return location(self.storage, self.relpath)

    def load(self) -> R | None:
        """The saved state, or None when nothing was saved yet."""
        try:
            data = self.storage.read_bytes(self.relpath)
        except FileNotFoundError:
            return None
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CorruptState(f"{self.location}: corrupt state file ({exc})") from exc
        if not isinstance(state, dict):
            raise CorruptState(f"{self.location}: corrupt state file (expected a JSON object)")
        try:
            record = self.record.from_json(state)
            self.record.check_json(state)
            return record
        except StateFormatError as exc:
            raise StateFormatError(f"{self.location}: {exc}") from None
        except KeyError as exc:
            raise CorruptState(f"{self.location}: corrupt state file (no {exc})") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise CorruptState(f"{self.location}: corrupt state file ({exc})") from None

    def save(self, state: R) -> None:
        """Replace the state file atomically."""
        self._write(state.to_json())

    async def save_async(self, state: R) -> None:
        """:meth:`save` from the event loop: ``state`` is copied now, so later changes to it
        cannot race the write, which runs in a worker thread. Callers serialise their saves."""
        await anyio.to_thread.run_sync(self._write, state.to_json())

    def _write(self, document: dict[str, Any]) -> None:
        _refuse_secrets(document, "")
        self.storage.write_bytes(
            self.relpath, orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
        )

    def delete(self) -> None:
        """Remove the state file, if there is one."""
        if self.storage.exists(self.relpath):
            self.storage.delete(self.relpath)


def export_store(storage: Storage, project_id: str) -> StateStore[ExportState]:
    """The export state of one project under an output root."""
    return StateStore(storage, layout.state_path(project_id), ExportState)


def _refuse_secrets(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)):
                raise ValueError(f"state must not store credentials (key {where!r})")
            _refuse_secrets(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_secrets(item, f"{path}[{index}]")
