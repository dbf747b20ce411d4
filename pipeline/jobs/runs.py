"""The runs of an export root, oldest first: what each read, what it holds, and whether it is
complete, unfinished or pruned (``btpipe runs ROOT``).

Three places name the runs a root has held:

- the manifests under ``_manifests/``: the runs that finished (*complete*);
- the export state files under ``_state/`` (:mod:`pipeline.common.state`): per project, the
  run that started and has not finished (killed, failed part way, or running now), with what
  it has checkpointed so far (*unfinished*);
- :data:`PRUNED_RECORD`, to which retention (:mod:`pipeline.jobs.retention`) adds each run
  just before deleting it: the run as this module describes it, without the per-object
  detail, so that the record stays small (*pruned*). A run pruned before the record existed,
  or deleted by hand, leaves no trace and is not listed.

Runs are listed in the order restores read them (:func:`pipeline.common.chains.order_runs`):
by what they read, never by the clock of the host that made them. A pruned run is known by
its newest snapshot version only, so it is placed by that and by the runs naming it as the
one they continue. A run is *full* when it read every object it selected without a lower
bound (a base for those objects in its scope), else *incremental*.

Nothing here holds a credential: manifests and state never store one, and the root is shown
as :func:`pipeline.common.manifest.public_url` gives it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from pipeline.common import layout
from pipeline.common.chains import order_runs, version_of
from pipeline.common.errors import UsageError
from pipeline.common.lease import ROOT_LEASE
from pipeline.common.manifest import MANIFEST_DIR, Manifest, ObjectManifest, list_manifests, public_url
from pipeline.common.state import ExportState, RunState, StateStore
from pipeline.common.storage import LocalStorage, ObjectStorage, Storage, open_storage

#: The runs retention pruned, relative to the root (outside ``_manifests/``, which holds
#: manifests only, and not a data file name, so no reader takes it for rows).
PRUNED_RECORD: Final = "_pruned.json"
PRUNED_FORMAT: Final = 1
#: Where the export state files live: ``_state/export-<project id>.json``.
_STATE_FILES: Final = layout.state_path("").removesuffix(".json")
#: The object every pruned run is read at, for ordering (its newest version stands for it).
_PRUNED_READS: Final = "(pruned runs)"


class NotAnExportRoot(UsageError):
    """The path holds something, but nothing an export writes."""


@dataclass(frozen=True)
class ObjectRead:
    """One object as one run read it: ``rows``, ``files`` and ``bytes`` of its data files (of an
    unfinished run, those checkpointed so far), ``deleted`` the ids its tombstones record."""

    object_type: str
    object_id: str
    name: str | None
    snapshot_version: str | None
    since_version: str | None
    rows: int
    files: int
    bytes: int
    deleted: int = 0
    gone: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "object_type": self.object_type,
            "object_id": self.object_id,
            "name": self.name,
            "snapshot_version": self.snapshot_version,
            "since_version": self.since_version,
            "rows": self.rows,
            "files": self.files,
            "bytes": self.bytes,
            "deleted": self.deleted,
            "gone": self.gone,
        }


@dataclass(frozen=True)
class RunSummary:
    """One run of a root. ``objects`` is the selection as ``--objects`` spelled it; ``reads``
    the per-object detail (None for a pruned run, whose record keeps only the totals)."""

    run_id: str
    status: str  # complete, unfinished or pruned
    kind: str  # full or incremental
    project_id: str | None
    project_name: str | None
    objects: str | None
    shape: str
    filter: str | None
    format: str | None
    started_at: str | None
    finished_at: str | None
    oldest_version: str | None
    newest_version: str | None
    rows: int
    files: int
    bytes: int
    deleted: int
    pruned_at: str | None = None
    reads: tuple[ObjectRead, ...] | None = None

    @property
    def scope(self) -> str:
        """The scope as the export's flags spell it: ``logs,datasets --filter '...'``."""
        text = self.objects or "(objects not recorded)"
        if self.shape != "spans":
            text += f" --shape {self.shape}"
        if self.filter:
            text += f" --filter {self.filter!r}"
        return text

    @property
    def versions(self) -> str:
        """The snapshot version, or the oldest and newest of its objects' (``a..b``)."""
        if self.oldest_version is None or self.newest_version is None:
            return "-"
        if self.oldest_version == self.newest_version:
            return self.newest_version
        return f"{self.oldest_version}..{self.newest_version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "kind": self.kind,
            "project_id": self.project_id,
            "project_name": self.project_name,
            "scope": {"objects": self.objects, "shape": self.shape, "filter": self.filter},
            "format": self.format,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "pruned_at": self.pruned_at,
            "versions": {"oldest": self.oldest_version, "newest": self.newest_version},
            "rows": self.rows,
            "files": self.files,
            "bytes": self.bytes,
            "deleted": self.deleted,
            "objects": None if self.reads is None else [r.to_json() for r in self.reads],
        }

    @classmethod
    def from_record(cls, raw: dict[str, Any]) -> RunSummary:
        """A pruned run as :func:`record_pruned` wrote it (see :meth:`to_json`)."""
        scope, versions = raw.get("scope") or {}, raw.get("versions") or {}
        return cls(
            run_id=str(raw["run_id"]),
            status="pruned",
            kind=str(raw["kind"]),
            project_id=raw.get("project_id"),
            project_name=raw.get("project_name"),
            objects=scope.get("objects"),
            shape=scope.get("shape") or "spans",
            filter=scope.get("filter"),
            format=raw.get("format"),
            started_at=raw.get("started_at"),
            finished_at=raw.get("finished_at"),
            oldest_version=versions.get("oldest"),
            newest_version=versions.get("newest"),
            rows=int(raw["rows"]),
            files=int(raw["files"]),
            bytes=int(raw["bytes"]),
            deleted=int(raw.get("deleted", 0)),
            pruned_at=raw.get("pruned_at"),
        )


def _summary(
    run_id: str,
    status: str,
    options: dict[str, Any],
    reads: tuple[ObjectRead, ...],
    *,
    project_id: str | None,
    started_at: str | None,
    finished_at: str | None,
) -> RunSummary:
    versions = sorted(
        (v, r.snapshot_version) for r in reads if (v := version_of(r.snapshot_version)) is not None
    )
    logs = [r.name for r in reads if r.object_type == "project_logs"]
    return RunSummary(
        run_id=run_id,
        status=status,
        kind="full" if all(r.since_version is None for r in reads) else "incremental",
        project_id=project_id,
        project_name=options.get("project_name") or (logs[0] if logs else None),
        objects=options.get("objects"),
        shape=options.get("shape") or "spans",
        filter=options.get("filter") or None,
        format=options.get("format"),
        started_at=started_at,
        finished_at=finished_at,
        oldest_version=versions[0][1] if versions else None,
        newest_version=versions[-1][1] if versions else None,
        rows=sum(r.rows for r in reads),
        files=sum(r.files for r in reads),
        bytes=sum(r.bytes for r in reads),
        deleted=sum(r.deleted for r in reads),
        reads=reads,
    )


def describe_manifest(manifest: Manifest) -> RunSummary:
    """A completed run, from its manifest."""
    reads = tuple(
        ObjectRead(
            object_type=obj.object_type,
            object_id=obj.object_id,
            name=obj.name,
            snapshot_version=obj.snapshot_version,
            since_version=obj.since_version,
            rows=obj.rows_written,
            files=len(obj.files),
            bytes=sum(f.bytes for f in obj.files),
            deleted=0 if obj.tombstones is None else obj.tombstones.rows,
            gone=obj.gone,
        )
        for obj in manifest.objects
    )
    return _summary(manifest.run_id, "complete", manifest.options, reads, project_id=manifest.project_id,
                    started_at=manifest.started_at, finished_at=manifest.finished_at)  # fmt: skip


def describe_unfinished(project_id: str, run: RunState) -> RunSummary:
    """The unfinished run of a project's export state, as far as it has checkpointed."""
    reads = tuple(
        ObjectRead(
            object_type=obj.object_type,
            object_id=obj.id,
            name=obj.name,
            snapshot_version=obj.version,
            since_version=obj.since,
            rows=obj.rows,
            files=sum(len(r.files) for r in obj.ranges),
            bytes=sum(f.bytes for r in obj.ranges for f in r.files),
            gone=obj.gone,
        )
        for obj in run.objects
    )
    return _summary(run.run_id, "unfinished", run.options, reads, project_id=project_id,
                    started_at=run.started_at, finished_at=None)  # fmt: skip


# -- the record of pruned runs ---------------------------------------------------------------


def _pruned_record(storage: Storage) -> dict[str, Any]:
    """The record :data:`PRUNED_RECORD` holds (an empty one where there is none)."""
    try:
        data = storage.read_bytes(PRUNED_RECORD)
    except FileNotFoundError:
        return {"format": PRUNED_FORMAT, "runs": []}
    where = f"{root_name(storage).rstrip('/')}/{PRUNED_RECORD}"
    try:
        raw = orjson.loads(data)
        if raw.get("format") != PRUNED_FORMAT:
            raise UsageError(
                f"{where}: record format {raw.get('format')!r}, but this btpipe reads format {PRUNED_FORMAT}"
            )
        for run in raw["runs"]:  # every entry must be readable
            RunSummary.from_record(run)
        if not all(isinstance(path, str) for path in raw.get("unfinished", [])):
            raise TypeError("unfinished: expected a list of paths")
        record: dict[str, Any] = raw
        return record
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise UsageError(f"{where}: not a record of pruned runs ({exc})") from exc


def read_pruned(storage: Storage) -> list[RunSummary]:
    """The runs :data:`PRUNED_RECORD` lists, in the order they were pruned (none without one)."""
    return [RunSummary.from_record(run) for run in _pruned_record(storage)["runs"]]


def unfinished_pruning(storage: Storage) -> list[str]:
    """Files of pruned runs a pruning stopped before deleting (they are deleted next time)."""
    return list(_pruned_record(storage).get("unfinished", []))


def record_pruned(storage: Storage, manifests: Sequence[Manifest], files: Sequence[str] = ()) -> None:
    """Add the runs of ``manifests`` to the root's record of pruned runs, and ``files`` (theirs)
    to the files still to delete; retention calls this before it deletes anything, so a run it
    deletes is always on the record (a run recorded but still there, after a crash, is listed
    as the manifest says, and pruned again later), and so are the files a crash leaves."""
    record = _pruned_record(storage)
    known = [RunSummary.from_record(run) for run in record["runs"]]
    seen = {run.run_id for run in known}
    pruned_at = datetime.now(UTC).isoformat()
    added = [
        replace(describe_manifest(m), status="pruned", pruned_at=pruned_at, reads=None)
        for m in manifests
        if m.run_id not in seen
    ]
    unfinished = list(dict.fromkeys([*record.get("unfinished", []), *files]))
    if added or unfinished != record.get("unfinished", []):
        _write_pruned(storage, [*known, *added], unfinished)


def pruning_finished(storage: Storage) -> None:
    """Every file on the record's list to delete is gone: clear the list."""
    record = _pruned_record(storage)
    if record.get("unfinished"):
        _write_pruned(storage, [RunSummary.from_record(run) for run in record["runs"]], [])


def _write_pruned(storage: Storage, runs: list[RunSummary], unfinished: list[str]) -> None:
    document: dict[str, Any] = {"format": PRUNED_FORMAT, "runs": [run.to_json() for run in runs]}
    if unfinished:
        document["unfinished"] = unfinished
    storage.write_bytes(PRUNED_RECORD, orjson.dumps(document, option=orjson.OPT_INDENT_2))


# -- the root --------------------------------------------------------------------------------


def root_name(storage: Storage) -> str:
    """The root as messages show it: a local path as it is, a URL without anything a
    credential could hide in."""
    return public_url(storage.url) if "://" in storage.url else storage.url


def open_root(url: str) -> Storage:
    """The storage of the export root at ``url``; a local path must be an existing directory."""
    storage = open_storage(url)
    if isinstance(storage, LocalStorage):
        if os.path.isfile(storage.root):
            raise NotAnExportRoot(
                f"{storage.root} is a file, not an export root (give the directory --out named)"
            )
        if not os.path.isdir(storage.root):
            raise NotAnExportRoot(f"{storage.root}: no such directory")
    elif isinstance(storage, ObjectStorage) and not storage.has_bucket():
        raise NotAnExportRoot(f"{storage.url}: no such bucket")
    return storage


def _unfinished_runs(storage: Storage, state_files: list[str]) -> list[RunSummary]:
    found = []
    for path in state_files:
        state = StateStore(storage, path, ExportState).load()
        if state is not None and state.run is not None:
            found.append(describe_unfinished(state.project_id, state.run))
    return found


def _for_ordering(run: RunSummary) -> Manifest:
    """What :func:`order_runs` needs to know of a run that has no manifest (any more)."""
    objects: tuple[ObjectManifest, ...]
    if run.reads is None:
        objects = (ObjectManifest("", _PRUNED_READS, snapshot_version=run.newest_version),)
    else:
        objects = tuple(
            ObjectManifest(r.object_type, r.object_id, snapshot_version=r.snapshot_version) for r in run.reads
        )
    return Manifest(run.run_id, run.started_at or "", "", objects=objects)


def list_runs(storage: Storage) -> list[RunSummary]:
    """Every run of the export root ``storage``, oldest first (see the module docstring). An
    empty root has none; a root holding files but nothing an export writes is refused."""
    manifests = list_manifests(storage)
    state_files = [path for path in storage.list_files(_STATE_FILES) if path.endswith(".json")]
    unfinished = _unfinished_runs(storage, state_files)
    pruned = read_pruned(storage)
    marked = manifests or state_files or pruned or storage.exists(ROOT_LEASE)
    if not marked and storage.list_files(""):
        raise NotAnExportRoot(
            f"{root_name(storage)} is not an export root: it holds no {MANIFEST_DIR}/ and no "
            "export state (btpipe export --out writes them)"
        )
    # One id in two places (a crash between two steps): the manifest says most, then the state.
    runs: dict[str, RunSummary] = {run.run_id: run for run in [*pruned, *unfinished]}
    ordering: dict[str, Manifest] = {run.run_id: _for_ordering(run) for run in runs.values()}
    for manifest in manifests:
        runs[manifest.run_id] = describe_manifest(manifest)
        ordering[manifest.run_id] = manifest
    return [runs[m.run_id] for m in order_runs(ordering.values())]
