"""What an import reads: the objects in an export's files, found from a path or URL.

``--in`` may name an export root, one run's manifest (``<root>/_manifests/<run>.json``), a
directory of data files, or one data file. A root is read as chains
(:mod:`pipeline.common.chains`): per object, the newest run that read all of it and every
later run of its scope, oldest first, each run's files followed by its tombstones (ids to
delete), and ``InputObject.runs`` says which run each file is of, since a restore applies one
run after another; runs older than that base are not read at all. ``until`` (``--until``)
stops at a run. One run's manifest is that run alone. A Delta table (``--format delta``'s
``<root>/delta/<type>``) is read at its current version, or at version ``until``, one object
per partition (:mod:`pipeline.sources.delta`). Files without a manifest are grouped
into objects by the export's Hive path (``object_type=<t>/object_id=<id>/``); files outside
that layout belong to no known object and need ``--to-object``.

A file a manifest lists keeps its manifest entry (``InputObject.listed``), which readers check
it against before using it (:func:`find_damaged`, :mod:`pipeline.common.integrity`); a loose
file or directory has no manifest, so nothing to check it against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import anyio

from pipeline.common import layout
from pipeline.common.chains import Entry, RunIndex
from pipeline.common.errors import UsageError
from pipeline.common.integrity import Damage, find_damage
from pipeline.common.manifest import MANIFEST_DIR, FileInfo, Manifest, list_manifests, read_manifest
from pipeline.common.rows import OBJECT_TYPES, ObjectType
from pipeline.common.selection import parse_selection
from pipeline.common.state import ExportState, StateStore
from pipeline.common.storage import ObjectStorage, Storage, location, open_storage
from pipeline.sources import discover_files, is_data_file, iter_rows
from pipeline.sources.delta import is_delta_table

_HIVE = re.compile(r"object_type=([a-z_]+)/object_id=([^/]+)/")


@dataclass
class InputObject:
    """One source object and its files, in reading order."""

    object_type: ObjectType | None
    id: str | None
    name: str | None
    files: list[str] = field(default_factory=list)
    rows: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # REST fields from the export's manifest
    listed: dict[str, FileInfo] = field(default_factory=dict)  # manifest entries, by path
    #: The run each listed file belongs to: a restore applies one run after another.
    runs: dict[str, str] = field(default_factory=dict)
    #: Tombstone files: their ids are deleted, in their place in the chain.
    deletes: set[str] = field(default_factory=set)
    #: The files are data files of a Delta table's partition of this object.
    in_table: bool = False

    @property
    def table(self) -> tuple[ObjectType, str] | None:
        """What :func:`pipeline.sources.iter_rows` needs to read a Delta table's files of it."""
        if not self.in_table or self.object_type is None or self.id is None:
            return None
        return self.object_type, self.id

    def add(self, info: FileInfo, run_id: str, *, deletes: bool = False) -> None:
        """Append a file a manifest lists, of run ``run_id``."""
        self.files.append(info.path)
        self.listed[info.path] = info
        self.runs[info.path] = run_id
        self.rows = (self.rows or 0) + info.rows
        if deletes:
            self.deletes.add(info.path)

    @property
    def key(self) -> str:
        return f"{self.object_type or 'unknown'}:{self.id or '-'}"

    @property
    def label(self) -> str:
        if self.object_type == "project_logs":
            return "logs"
        return f"{self.object_type or 'file'}:{self.name or self.id or '?'}"


def split_input(text: str) -> tuple[str, str]:
    """(storage root, prefix under it) for an ``--in`` value."""
    text = text.rstrip("/")
    marker = f"/{MANIFEST_DIR}/"
    if text.endswith(".json") and marker in text:
        root, _, name = text.rpartition(marker)
        return root, f"{MANIFEST_DIR}/{name}"
    if is_data_file(text):
        root, _, name = text.rpartition("/")
        return root or ".", name
    parent, _, kind = text.rpartition("/")
    root, _, tables = parent.rpartition("/")
    if tables == layout.DELTA_DIR and kind in OBJECT_TYPES:
        return root or ".", layout.delta_table(kind)  # a table of a root, whose manifests name its objects
    return text, ""


def open_input(text: str) -> tuple[Storage, str]:
    """The storage and the path under it an ``--in`` value names; UsageError for a bucket
    that does not exist (it would look like one holding no files)."""
    root, prefix = split_input(text)
    storage = open_storage(root)
    if isinstance(storage, ObjectStorage) and not storage.has_bucket():
        raise UsageError(f"{storage.url}: no such bucket")
    return storage, prefix


def input_manifests(storage: Storage, prefix: str) -> list[Manifest]:
    """The manifests an ``--in`` value reads (none for loose files), oldest run first."""
    if prefix.endswith(".json"):
        return [read_manifest(storage, prefix)]
    if prefix == "" and storage.list_files(f"{MANIFEST_DIR}/"):
        return list_manifests(storage)
    return []


def find_inputs(storage: Storage, prefix: str, until: str | None = None) -> list[InputObject]:
    """The objects under ``prefix``, in first-seen order (blocking: run in a thread): a root
    as its chains (as of run ``until`` when given), one run's manifest as that run, loose files
    as they are."""
    if not is_data_file(prefix) and not prefix.endswith(".json") and is_delta_table(storage, prefix):
        return _table_inputs(storage, prefix, until)
    manifests = input_manifests(storage, prefix)
    if until is not None and (prefix or not manifests):
        raise UsageError(f"--until names a run of an export root, and {location(storage, prefix)} is none")
    if prefix.endswith(".json"):
        return [_chained([Entry(m, obj)]) for m in manifests for obj in m.objects if not obj.gone]
    if manifests:
        index = RunIndex(manifests, storage.url)
        if until is not None:
            index = index.until(until)
        return [_chained(index.restore_chain(obj.object_id)) for obj in index.objects()]
    paths = discover_files(storage, prefix)
    _refuse_unfinished_runs(storage, prefix, paths)
    found: dict[tuple[str | None, str | None], InputObject] = {}
    for path in paths:
        match = _HIVE.search(f"{storage.url.rstrip('/')}/{path}")
        object_type = _object_type(match.group(1) if match else None, f"in the path {path}")
        object_id = match.group(2) if match else None
        key = (object_type, object_id)
        if key not in found:
            found[key] = InputObject(object_type, object_id, None)
        found[key].files.append(path)
    return list(found.values())


_RUN_DIR = re.compile(r"(?:^|/)run=([^/]+)/")


def _refuse_unfinished_runs(storage: Storage, prefix: str, paths: list[str]) -> None:
    """UsageError when ``prefix`` is an export root whose files are those of a run its export
    state says is unfinished (no manifest lists them yet): they hold part of the rows, and an
    import of them would exit 0 on a partial restore. A directory below the root is still
    imported as its files are."""
    if prefix:
        return
    runs = {m.group(1) for path in paths if (m := _RUN_DIR.search(path))}
    if not runs:
        return
    for state_file in storage.list_files(layout.EXPORT_STATES):
        try:
            state = StateStore(storage, state_file, ExportState).load()
        except UsageError as exc:  # which runs are unfinished cannot be told: refused
            raise UsageError(
                f"{exc}; whether the root's files are those of a finished run cannot be told: pass --in "
                "their directory to import them as they are"
            ) from None
        run = None if state is None else state.run
        if run is not None and isinstance(run.run_id, str) and run.run_id in runs:
            raise UsageError(
                f"{location(storage, state_file)}: run {run.run_id} of this export is unfinished, and "
                "its files hold part of the rows; run the export again to finish it (then import the "
                "root), or pass --in its files' directory to import them as they are"
            )


def _table_inputs(storage: Storage, prefix: str, until: str | None) -> list[InputObject]:
    """The objects of the Delta table at ``prefix``, as of table version ``until`` (None: the
    current one)."""
    from pipeline.sources.delta import table_objects  # deltalake loads only for a Delta table

    if until is not None and not until.isdigit():
        raise UsageError(
            f"--until {until!r}: {location(storage, prefix)} is a Delta table; name one of its versions"
        )
    found = table_objects(storage, prefix, None if until is None else int(until))
    named = _named_in_manifests(storage) if prefix.startswith(f"{layout.DELTA_DIR}/") else {}
    inputs = []
    for found_obj in found:
        name, info = named.get(found_obj.object_id, (None, {}))
        inputs.append(
            InputObject(
                found_obj.object_type,
                found_obj.object_id,
                name,
                list(found_obj.files),
                info=info,
                in_table=True,
            )
        )
    return inputs


def _named_in_manifests(storage: Storage) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """By object id, the name and REST fields the newest run of the root that read the object
    gives it (its Delta tables record only ids)."""
    named: dict[str, tuple[str | None, dict[str, Any]]] = {}
    if storage.list_files(f"{MANIFEST_DIR}/"):
        for manifest in list_manifests(storage):
            for obj in manifest.objects:
                name, info = named.get(obj.object_id, (None, {}))
                named[obj.object_id] = (obj.name or name, obj.info or info)
    return named


def _object_type(name: str | None, where: str) -> ObjectType | None:
    """``name`` as an object type; UsageError saying ``where`` it was found for any other."""
    if name is not None and name not in OBJECT_TYPES:
        raise UsageError(f"unknown object type {name!r} {where}")
    typed: ObjectType | None = name
    return typed


def _chained(chain: list[Entry]) -> InputObject:
    """The input of one object restored by ``chain``: each run's files, then its tombstones."""
    newest = chain[-1].obj
    found = InputObject(
        _object_type(newest.object_type, f"in {chain[-1].run.relpath}"),
        newest.object_id,
        newest.name,
        rows=0,
        info=next((e.obj.info for e in reversed(chain) if e.obj.info), {}),
    )
    for entry in chain:
        for info in entry.obj.files:
            found.add(info, entry.run_id)
        if entry.obj.tombstones is not None:
            found.add(entry.obj.tombstones, entry.run_id, deletes=True)
    return found


async def find_damaged(
    storage: Storage, obj: InputObject, start: int = 0, *, read_unlisted: bool = True
) -> list[Damage]:
    """The files of ``obj`` from ``files[start]`` on that differ from their manifest entry.

    A file outside a manifest (one given alone, a Delta table's) has no entry to compare: it is
    read through instead, every row decoded, so a malformed row, a cut or corrupt file or one
    missing stops the import with its one line before any row is sent, not part way. A reader
    that sends nothing (verify) passes ``read_unlisted=False``: its own read stops the same way."""
    unlisted = [p for p in obj.files[start:] if p not in obj.listed]
    if unlisted and read_unlisted:
        await anyio.to_thread.run_sync(_read_through, storage, unlisted, obj.table)
    return await find_damage(storage, [obj.listed[p] for p in obj.files[start:] if p in obj.listed])


def _read_through(storage: Storage, paths: list[str], table: tuple[ObjectType, str] | None) -> None:
    for path in paths:
        for _ in iter_rows(storage, path, table=table):
            pass


def select_inputs(objects: list[InputObject], selection: str | None) -> list[InputObject]:
    """Filter by ``--objects`` (see :func:`pipeline.common.selection.parse_selection`)."""
    if not selection:
        return objects
    chosen: list[InputObject] = []
    for selector in parse_selection(selection):
        kind, name = selector.object_type, selector.name
        picked = [o for o in objects if o.object_type == kind and (name is None or name in (o.name, o.id))]
        if name is not None and not picked:
            raise UsageError(f"--objects: the input holds no {kind} named {name!r}")
        chosen.extend(o for o in picked if o not in chosen)
    return chosen
