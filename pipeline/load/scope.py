"""What an import may take from its input: runs of the ``spans`` shape, one source project.

An export root gathers every run written into it, and nothing keeps a root to one project (a
nightly job of two projects) or to one shape (an ad-hoc ``--shape summary`` export beside the
nightly runs). Importing either as it is loses rows without a word: a summary row carries the
id of its trace's root span, so it would overwrite that span with aggregates; and the
objects of two projects that share a name go into one destination object, where rows with
equal ids overwrite each other. So an import reads the manifests first and is refused, with
one line, before anything is written: by a run of another shape, naming it, and by a root
naming several source projects unless ``--from-project`` picks one (the line lists them).

Manifests name an object's project by id; the project's name comes from the ``project_name``
a run records in its options or, in manifests written before it did, from the name of the
project's logs. Loose files (no manifest) name no project and no shape: nothing to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from pipeline.common import layout
from pipeline.common.chains import RunIndex
from pipeline.common.errors import UsageError
from pipeline.common.manifest import MANIFEST_DIR, Manifest, list_manifests
from pipeline.common.object_fields import COPIED_KINDS
from pipeline.common.rows import ObjectType
from pipeline.common.storage import Storage, open_storage
from pipeline.load.destinations import version_number
from pipeline.sources.inputs import InputObject, input_manifests

#: Why an export of each shape but ``spans`` cannot be imported.
_SHAPES = {
    "summary": "one row of aggregates per trace under its root span's id",
    "traces": "whole traces a filter matched, read as units rather than an object's spans",
}


@dataclass(frozen=True)
class SourceProject:
    id: str
    name: str | None

    def __str__(self) -> str:
        return f"{self.name} ({self.id})" if self.name else self.id


@dataclass(frozen=True)
class InputScope:
    """The manifests an input reads, oldest run first."""

    manifests: list[Manifest]

    def project_of(self, object_id: str | None) -> str | None:
        """The id of the project the object belongs to, by its newest manifest entry."""
        found = None
        for manifest in self.manifests:
            for obj in manifest.objects:
                if obj.object_id == object_id:
                    found = obj.project_id or manifest.options.get("project_id") or found
        return found

    @property
    def projects(self) -> list[SourceProject]:
        """Every source project the manifests name, in the order first seen, each with its
        newest known name."""
        names: dict[str, str | None] = {}
        for manifest in self.manifests:
            for obj in manifest.objects:
                project_id = obj.project_id or manifest.options.get("project_id")
                if project_id is None:
                    continue
                name = manifest.options.get("project_name") or (
                    obj.name if obj.object_type == "project_logs" else None
                )
                names[project_id] = name or names.get(project_id)
        return [SourceProject(pid, name) for pid, name in names.items()]

    def named_objects(self, project_id: str | None) -> dict[str, tuple[ObjectType, str]]:
        """The datasets and experiments of ``project_id`` the manifests name, id -> kind and
        newest name: an import's rows may refer to those it does not copy."""
        found: dict[str, tuple[ObjectType, str]] = {}
        for manifest in self.manifests:
            for obj in manifest.objects:
                owner = obj.project_id or manifest.options.get("project_id")
                if (
                    obj.object_type in COPIED_KINDS
                    and obj.name
                    and (project_id is None or owner == project_id)
                ):
                    found[obj.object_id] = (cast(ObjectType, obj.object_type), obj.name)
        return found

    def exported_version(self, object_id: str | None) -> str | None:
        """The newest snapshot version the object was exported at (None: not known)."""
        versions = [
            obj.snapshot_version
            for manifest in self.manifests
            for obj in manifest.objects
            if obj.object_id == object_id and obj.snapshot_version is not None
        ]
        return max(versions, key=version_number, default=None)


def read_scope(storage: Storage, prefix: str, until: str | None = None) -> InputScope:
    """The scope of the input at ``prefix``, as of run ``until`` when given (the runs a restore
    ``--until`` reads: a later run's snapshot is not what it restores). Blocking: run in a thread."""
    manifests = input_manifests(storage, prefix)
    if until is not None and manifests:
        manifests = RunIndex(manifests, storage.url).until(until).runs
    return InputScope(manifests)


def chosen_project(scope: InputScope, from_project: str | None, where: str) -> str | None:
    """The id of ``from_project`` (a name or id) among the input's source projects, or None
    when it is not given and the input holds at most one; UsageError listing the projects
    otherwise."""
    projects = scope.projects
    listing = ", ".join(str(p) for p in projects)
    if from_project is None:
        if len(projects) > 1:
            raise UsageError(
                f"{where}: holds the objects of {len(projects)} projects: {listing}; "
                "pass --from-project NAME_OR_ID to import one"
            )
        return None
    if not projects:
        raise UsageError(f"--from-project: {where} has no manifest naming the project of its objects")
    chosen = [p for p in projects if from_project == p.id] or [p for p in projects if from_project == p.name]
    if not chosen:
        raise UsageError(f"--from-project: {where} holds no project {from_project!r} (it holds {listing})")
    if len(chosen) > 1:
        named = ", ".join(str(p) for p in chosen)
        raise UsageError(f"--from-project: {where} holds {len(chosen)} projects named {from_project!r} "
                         f"({named}); pass the id of one")  # fmt: skip
    return chosen[0].id


def one_project(scope: InputScope, objects: list[InputObject], project_id: str | None) -> list[InputObject]:
    """The objects of project ``project_id`` (:func:`chosen_project`); all when None."""
    if project_id is None:
        return objects
    return [obj for obj in objects if scope.project_of(obj.id) == project_id]


def refuse_other_shapes_within(where: str, objects: list[InputObject]) -> None:
    """:func:`refuse_other_shapes` for a directory inside an export root (``where`` holds the
    layout's ``object_type=``): its files' runs are looked up in the root's manifests, so a
    run of the summary shape is not imported through one of its directories (blocking: run in
    a thread)."""
    root = layout.root_above(where)
    if root is None:
        return
    storage = open_storage(root)
    if not storage.list_files(f"{MANIFEST_DIR}/"):
        return
    # a file's path is relative to ``where``, which may itself be a run's directory or file
    runs = {run for obj in objects for path in obj.files for run in layout.runs_in(path)}
    runs.update(layout.runs_in(where.rstrip("/") + "/"))
    for manifest in list_manifests(storage):
        if manifest.run_id in runs:
            _refuse_shape(manifest, where)


def refuse_other_shapes(scope: InputScope, objects: list[InputObject], where: str) -> None:
    """UsageError naming the first run of another shape than ``spans`` that holds a file of
    ``objects``."""
    used = {path for obj in objects for path in obj.files}
    for manifest in scope.manifests:
        if any(f.path in used for obj in manifest.objects for f in obj.files):
            _refuse_shape(manifest, where)


def _refuse_shape(manifest: Manifest, where: str) -> None:
    """UsageError when ``manifest``'s run read another shape than ``spans``."""
    shape = manifest.options.get("shape") or "spans"
    if shape != "spans":
        why = _SHAPES.get(shape, "rows that are not an object's spans")
        raise UsageError(
            f"{where}: run {manifest.run_id} was exported with --shape {shape} ({why}); "
            "import reads --shape spans exports only"
        )
