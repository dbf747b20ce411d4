"""What an import reads: the objects in an export's files, found from a path or URL.

``--in`` may name an export root (every run in it, oldest first, so later runs of an
incremental backup overwrite earlier versions of a row), one run's manifest
(``<root>/_manifests/<run>.json``), a directory of data files, or one data file. Files are
grouped into objects by the export's Hive path (``object_type=<t>/object_id=<id>/``); the
object names come from the manifests. Files outside that layout belong to no known object and
need ``--to-object``.

A file a manifest lists keeps its manifest entry (``InputObject.listed``), which readers check
it against before using it (:func:`find_damaged`, :mod:`pipeline.common.integrity`); a loose
file or directory has no manifest, so nothing to check it against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.common.errors import UsageError
from pipeline.common.integrity import Damage, find_damage
from pipeline.common.manifest import MANIFEST_DIR, FileInfo, Manifest, list_manifests, read_manifest
from pipeline.common.rows import OBJECT_TYPES, ObjectType
from pipeline.common.selection import parse_selection
from pipeline.common.storage import Storage, open_storage
from pipeline.sources import discover_files, is_data_file

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
    return text, ""


def open_input(text: str) -> tuple[Storage, str]:
    root, prefix = split_input(text)
    return open_storage(root), prefix


def input_manifests(storage: Storage, prefix: str) -> list[Manifest]:
    """The manifests an ``--in`` value reads (none for loose files), oldest run first."""
    if prefix.endswith(".json"):
        return [read_manifest(storage, prefix)]
    if prefix == "" and storage.list_files(f"{MANIFEST_DIR}/"):
        return list_manifests(storage)
    return []


def find_inputs(storage: Storage, prefix: str) -> list[InputObject]:
    """The objects under ``prefix``, in first-seen order (blocking: run in a thread)."""
    manifests = input_manifests(storage, prefix)
    names: dict[str, str] = {}
    infos: dict[str, dict[str, Any]] = {}
    rows: dict[str, int] = {}
    for manifest in manifests:
        for obj in manifest.objects:
            if obj.name:
                names[obj.object_id] = obj.name
            if obj.info:
                infos[obj.object_id] = obj.info
            rows[obj.object_id] = rows.get(obj.object_id, 0) + obj.rows_written
    listed = {info.path: info for m in manifests for obj in m.objects for info in obj.files}
    files = list(listed) if manifests else discover_files(storage, prefix)
    found: dict[tuple[str | None, str | None], InputObject] = {}
    for path in files:
        match = _HIVE.search(f"{storage.url.rstrip('/')}/{path}")
        object_type = match.group(1) if match else None
        if object_type is not None and object_type not in OBJECT_TYPES:
            raise UsageError(f"{path}: unknown object type {object_type!r} in the path")
        object_id = match.group(2) if match else None
        key = (object_type, object_id)
        if key not in found:
            typed: ObjectType | None = object_type
            found[key] = InputObject(
                typed,
                object_id,
                names.get(object_id or ""),
                rows=rows.get(object_id or ""),
                info=infos.get(object_id or "", {}),
            )
        found[key].files.append(path)
        if path in listed:
            found[key].listed[path] = listed[path]
    return list(found.values())


async def find_damaged(storage: Storage, obj: InputObject, start: int = 0) -> list[Damage]:
    """The files of ``obj`` from ``files[start]`` on that differ from their manifest entry
    (files outside a manifest are not checked)."""
    return await find_damage(storage, [obj.listed[p] for p in obj.files[start:] if p in obj.listed])


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
