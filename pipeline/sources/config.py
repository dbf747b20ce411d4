"""What an import or verify reads of a project's configuration: each kind from the newest run
of the export that read it.

Each run writes the whole set of every kind it read (:mod:`pipeline.export.config`), so no
chain is needed: the newest run (by start time, up to ``--until``) holding a kind is that kind
as of then. Start time, not the order of row versions the chains use, since a run that read
only configuration has no row version to be ordered by. One run's manifest gives that run's; loose files give none. Each
file is checked against its manifest entry before it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.common import jsoncodec
from pipeline.common.config_kinds import VERSIONS_OF, ConfigSet
from pipeline.common.errors import UsageError
from pipeline.common.integrity import Damage, find_damage
from pipeline.common.manifest import ConfigManifest, FileInfo
from pipeline.common.storage import Storage, location
from pipeline.sources.inputs import input_manifests


@dataclass
class ConfigInput:
    """The configuration an export holds: per kind, its newest entry."""

    entries: dict[str, ConfigManifest] = field(default_factory=dict)
    #: The source project's id, and its datasets' and experiments' ids with their labels, as
    #: the runs read them (verify names references by them).
    names: dict[str, str] = field(default_factory=dict)
    #: The source project of the newest run read, and its name as that run knew it.
    project_id: str | None = None
    project_name: str | None = None

    @property
    def files(self) -> list[FileInfo]:
        return [e.file for e in self.entries.values() if e.file is not None]


def find_config(
    storage: Storage, prefix: str, kinds: list[str], until: str | None = None, project_id: str | None = None
) -> ConfigInput:
    """The newest entry of each of ``kinds`` in the input, of the runs of ``project_id`` only
    when given (blocking: run in a thread)."""
    manifests = input_manifests(storage, prefix)  # by start time: a run that read no rows has no version
    # No manifests: a Delta table or loose files, which hold no configuration; --until is theirs
    # (a table version) and was checked with them.
    if until is not None and manifests:
        ids = [m.run_id for m in manifests]
        if until not in ids:
            raise UsageError(f"--until: no run {until!r} under {location(storage, '')}")
        manifests = manifests[: ids.index(until) + 1]
    found = ConfigInput()
    for manifest in manifests:
        if project_id is not None and manifest.project_id != project_id:
            continue
        wanted = set(kinds) | {VERSIONS_OF[k] for k in kinds if k in VERSIONS_OF}
        for entry in manifest.config:
            if entry.kind in wanted:
                found.entries[entry.kind] = entry
        if manifest.project_id:
            found.names[manifest.project_id] = "project"
            found.project_id = manifest.project_id
            found.project_name = manifest.options.get("project_name") or found.project_name
        for obj in manifest.objects:
            if obj.object_type != "project_logs":
                found.names[obj.object_id] = f"{obj.object_type}:{obj.name or obj.object_id}"
    return found


async def damaged_config(storage: Storage, found: ConfigInput) -> list[Damage]:
    """The configuration files that differ from their manifest entry."""
    return await find_damage(storage, found.files)


def read_config(storage: Storage, found: ConfigInput) -> ConfigSet:
    """The objects of every kind found (blocking: run in a thread; the files are small)."""
    result = ConfigSet(project_name=found.project_name)
    histories = set(VERSIONS_OF.values())
    for kind, entry in found.entries.items():
        objects: list[dict[str, Any]] = []
        if entry.file is not None:
            try:
                objects = jsoncodec.loads_lines(storage.read_bytes(entry.file.path))
            except ValueError as exc:
                raise UsageError(f"{location(storage, entry.file.path)}: not JSON lines ({exc})") from exc
        if kind in histories:
            for version in objects:
                result.versions.setdefault(str(version.get("id")), []).append(version)
        else:
            result.objects[kind] = objects
    return result
