"""Destination objects: find or create a dataset or experiment by name, remapping references.

Datasets and experiments are matched by name inside the destination project and created when
missing, carrying the source's description and metadata (and, for experiments, tags and
``dataset_version``). An experiment's ``base_exp_id`` and ``dataset_id`` point at objects of
the *source*; they are rewritten through ``id_map`` (source id -> destination id), so callers
create datasets first and experiments in base-before-derived order
(:func:`experiments_in_dependency_order`). A reference to an object that was not copied is
dropped rather than left pointing into another project or org.
"""

from __future__ import annotations

from typing import Any

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import ObjectRef, find_object, logs_ref, object_ref
from pipeline.common.rows import ObjectType

_COPIED_FIELDS: dict[str, tuple[str, ...]] = {
    "dataset": ("description", "metadata", "tags"),
    "experiment": ("description", "metadata", "tags", "public", "repo_info", "dataset_version"),
}
_REFERENCES = ("base_exp_id", "dataset_id")


def creation_body(
    kind: ObjectType, name: str, project_id: str, info: dict[str, Any], id_map: dict[str, str]
) -> dict[str, Any]:
    """The ``POST /v1/<kind>`` body for a copy of ``info`` named ``name`` in ``project_id``."""
    body: dict[str, Any] = {"project_id": project_id, "name": name}
    for key in _COPIED_FIELDS[kind]:
        if info.get(key) is not None:
            body[key] = info[key]
    if kind == "experiment":
        for key in _REFERENCES:
            source_id = info.get(key)
            if source_id is not None and source_id in id_map:
                body[key] = id_map[source_id]
        if "dataset_id" not in body:
            body.pop("dataset_version", None)
    return body


async def ensure_object(
    client: BraintrustClient,
    kind: ObjectType,
    name: str,
    project: dict[str, Any],
    info: dict[str, Any],
    id_map: dict[str, str],
) -> tuple[ObjectRef, bool]:
    """The destination object for ``kind``/``name``; (ref, created)."""
    if kind == "project_logs":
        return logs_ref(project), False
    existing = await find_object(client, kind, project["id"], name)
    if existing is not None:
        return object_ref(kind, existing), False
    created = await client.post_json(f"/v1/{kind}", creation_body(kind, name, project["id"], info, id_map))
    return object_ref(kind, created), True


def experiments_in_dependency_order(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Experiments ordered so that a ``base_exp_id`` target comes before the experiment naming it."""
    by_id = {info["id"]: info for info in infos}
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()

    def place(info: dict[str, Any], chain: set[str]) -> None:
        if info["id"] in placed or info["id"] in chain:
            return
        base = info.get("base_exp_id")
        if base in by_id:
            place(by_id[base], chain | {info["id"]})
        placed.add(info["id"])
        ordered.append(info)

    for info in infos:
        place(info, set())
    return ordered
