"""The run manifest: what one export run wrote, published as ``_manifests/<run_id>.json``.

A manifest is the index a reader or verifier starts from: per object, the snapshot version it
was read at, how many rows the server reported and how many were written, and every published
file with its size and SHA-256; its ``options`` hold what the run read (``shape``, ``filter``,
...) and the source project (``project_id``, and ``project_name`` since it was added). It
never holds credentials: the API URL is stored without user info, query string or fragment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from pipeline import __version__
from pipeline.common.errors import UsageError
from pipeline.common.storage import Storage, location

MANIFEST_DIR = "_manifests"


@dataclass(frozen=True)
class FileInfo:
    """One published file; ``path`` is relative to the storage root."""

    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ObjectManifest:
    """One exported object and the files holding its rows."""

    object_type: str
    object_id: str
    name: str | None = None
    project_id: str | None = None
    snapshot_version: str | None = None
    since_version: str | None = None
    rows_expected: int | None = None
    rows_written: int = 0
    files: tuple[FileInfo, ...] = ()
    #: The run read every row of the object (no ``since``, no filter, the spans shape), so
    #: its files are the object's complete id set at ``snapshot_version``. None in manifests
    #: written before the field: :func:`pipeline.common.chains.is_complete` tells from the rest.
    complete: bool | None = None
    #: The run that read the object before this one in the same scope (shape and filter): the
    #: one ``since_version`` came from when this read was incremental. Links a chain in order.
    previous_run: str | None = None
    #: An incremental read's ids that disappeared since ``previous_run`` (JSONL of
    #: ``{"id": ...}``), so that a restore or a warehouse load can remove them.
    tombstones: FileInfo | None = None
    #: The object's own REST fields (description, metadata, dataset_id, ...), so an import
    #: can recreate a dataset or experiment as it was.
    info: dict[str, Any] = field(default_factory=dict)
    #: Deleted at the source while the run read it: the run holds none of its rows (earlier
    #: runs keep what they read).
    gone: bool = False


@dataclass(frozen=True)
class ConfigManifest:
    """One kind of project configuration (:mod:`pipeline.common.config_kinds`) as the run
    found it: every object of the kind, as the API returned it, one JSON object a line in
    ``file`` (None when the project has none of the kind)."""

    kind: str
    objects: int = 0
    file: FileInfo | None = None


@dataclass(frozen=True)
class Manifest:
    """One export run."""

    run_id: str
    started_at: str
    api_url: str
    finished_at: str | None = None
    tool_version: str = __version__
    format: str | None = None
    query: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    objects: tuple[ObjectManifest, ...] = field(default_factory=tuple)
    #: The project's configuration objects, one entry per kind the run read (none in
    #: manifests written before configuration was exported).
    config: tuple[ConfigManifest, ...] = field(default_factory=tuple)
    #: The attachments the run's rows refer to: ``count``, ``bytes``, ``skipped`` (left out by
    #: ``--attachments skip``) and ``files``, one ``{key, sha256, bytes, filename,
    #: content_type}`` each, its bytes at ``_attachments/sha256=<sha256>``
    #: (:mod:`pipeline.common.attachments`). Empty in manifests written before the field.
    attachments: dict[str, Any] = field(default_factory=dict)
    #: ``--format delta``: the version of each Delta table (by object type) once this run was
    #: applied to it, the version to read for the source as of this run.
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def project_id(self) -> str | None:
        """The project the run read: named in its options, else the one its objects share."""
        named = self.options.get("project_id")
        if named:
            return str(named)
        found = {o.project_id for o in self.objects if o.project_id}
        return found.pop() if len(found) == 1 else None

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", public_url(self.api_url))

    @property
    def relpath(self) -> str:
        return manifest_path(self.run_id)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a manifest; keys this version does not know are ignored (newer writers may add some)."""
        raw = orjson.loads(data)
        objects = tuple(
            ObjectManifest(
                **_known(ObjectManifest, obj),
                files=tuple(_file(f) for f in obj["files"]),
                tombstones=None if obj.get("tombstones") is None else _file(obj["tombstones"]),
            )
            for obj in raw["objects"]
        )
        config = tuple(
            ConfigManifest(
                entry["kind"],
                entry.get("objects", 0),
                None if entry.get("file") is None else _file(entry["file"]),
            )
            for entry in raw.get("config") or ()
        )
        return cls(**_known(cls, raw), objects=objects, config=config)


def _file(raw: dict[str, Any]) -> FileInfo:
    return FileInfo(**_known(FileInfo, raw))


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``raw`` that are fields of dataclass ``cls``, nested records excluded."""
    names = {f.name for f in fields(cls)} - {"objects", "files", "tombstones", "config"}
    return {k: v for k, v in raw.items() if k in names}


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment, the places a credential could hide."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def manifest_path(run_id: str) -> str:
    return f"{MANIFEST_DIR}/{run_id}.json"


def write_manifest(storage: Storage, manifest: Manifest) -> str:
    """Publish ``manifest`` atomically (replacing an earlier version of the same run)."""
    storage.write_bytes(manifest.relpath, manifest.to_json())
    return manifest.relpath


def read_manifest(storage: Storage, relpath: str) -> Manifest:
    """Load one manifest; UsageError naming the file when it is not a manifest."""
    data = storage.read_bytes(relpath)
    try:
        return Manifest.from_json(data)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise UsageError(f"{location(storage, relpath)}: not a btpipe manifest ({exc})") from exc


def list_manifests(storage: Storage) -> list[Manifest]:
    """Every manifest under the storage root, by start time as each run's host clock gave it;
    :func:`pipeline.common.chains.order_runs` puts them in the order the runs happened."""
    manifests = [
        read_manifest(storage, path)
        for path in storage.list_files(f"{MANIFEST_DIR}/")
        if path.endswith(".json")
    ]
    return sorted(manifests, key=lambda m: (m.started_at, m.run_id))
