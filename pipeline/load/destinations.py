"""Destination objects: find or create datasets and experiments by name, remapping references.

Datasets and experiments are matched by name inside the destination project and created when
missing, carrying the source's description and metadata (and, for experiments, tags; never
the source's ``dataset_version``, see below). An experiment's ``base_exp_id`` and
``dataset_id`` point at objects of the *source*; they are rewritten through ``id_map`` (source
id -> destination id), so objects are created in dependency order: datasets, then experiments
base before derived (:func:`creation_order`), whatever order the caller found them in. A
reference to an object that was not copied names the destination's object of the same name
(:func:`counterparts`), or, where it has none, is dropped rather than left pointing into
another project or org.

An object of the same name that the destination already has is written into only when asked
(``into_existing``): otherwise its rows would merge silently with the copied ones, under
references that belong to something else. Every name is looked up before the first object is
created, so a refusal leaves nothing behind. An object the job itself created (its state says
so) is its own, and a resumed run goes on into it unasked. Written into, an existing object
gets the source's fields (``PATCH``), and an existing experiment its references remapped; one
that cannot be (the source's target was not copied, or the server refuses) is reported as a
warning.

A ``dataset_version`` is a transaction id of the *source* dataset, which means nothing at the
destination. After the rows are in, :func:`link_dataset_versions` points it at the copy's
newest version when the source experiment ran against the dataset as it was copied (its
version at or after the snapshot an import's export or a migration read); an older version
has no counterpart in the copy, so the experiment links the copy's current version, with a
warning.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import ObjectRef, find_object, list_objects, logs_ref, object_ref
from pipeline.api.snapshot import take_snapshot
from pipeline.common import jsoncodec
from pipeline.common.errors import ApiError, TransientApiError, UsageError
from pipeline.common.object_fields import COPIED_FIELDS, PARAMETERS, REFERENCES
from pipeline.common.rows import ObjectType
from pipeline.common.versions import version_id
from pipeline.querylang.ast import from_object

#: What ``ensure_objects`` records of an object it is about to create, before the create;
#: and, once the server refused to create it, what replaces that mark.
CREATING: Final = "(creating)"
REFUSED: Final = "(refused)"


def creation_body(
    kind: ObjectType, name: str, project_id: str, info: dict[str, Any], id_map: dict[str, str]
) -> dict[str, Any]:
    """The ``POST /v1/<kind>`` body for a copy of ``info`` named ``name`` in ``project_id``."""
    body: dict[str, Any] = {"project_id": project_id, "name": name}
    for key in COPIED_FIELDS[kind]:
        if info.get(key) is not None:
            body[key] = info[key]
    if kind == "experiment":
        for key in REFERENCES:
            source_id = info.get(key)
            if source_id is not None and source_id in id_map:
                body[key] = id_map[source_id]
    return body


async def counterparts(
    client: BraintrustClient,
    project: dict[str, Any],
    others: Mapping[str, tuple[ObjectType, str]],
    warnings: list[str],
    copied: list[dict[str, Any]],
) -> dict[str, str]:
    """Source id -> the destination project's dataset or experiment of the same kind and name,
    for the source objects a load does not copy (``others``: source id -> (kind, name)) where
    the destination has one. References to them (an experiment's ``dataset_id`` or
    ``base_exp_id``, a row's ``origin``, a setting's baseline experiment) go there, as those to
    configuration of a kind not copied go to the destination's object of the same key: a load
    of experiments alone links the datasets an earlier load copied. Whether such an object is
    a copy nobody can tell, so ``warnings`` names those that the objects copied (``copied``:
    their REST fields) link to; a row's ``origin`` follows them silently."""
    found: dict[tuple[str, str], str] = {}
    for kind in sorted({kind for kind, _ in others.values()}):
        async for obj in list_objects(client, kind, project["id"]):
            found.setdefault((kind, str(obj.get("name"))), str(obj["id"]))
    linked = {source_id: found[wanted] for source_id, wanted in others.items() if wanted in found}
    named = {info.get(key) for info in copied for key in REFERENCES} & linked.keys()
    if named:
        names = sorted({f"{kind}:{name}" for kind, name in (others[str(source_id)] for source_id in named)})
        warnings.append(
            f"references to {', '.join(names)}, which this load does not copy, name the destination's "
            "object of the same name"
        )
    return linked


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


@dataclass(frozen=True)
class Wanted:
    """A destination object a load writes into: ``key`` is its source object's key in the
    load state, ``info`` the source's REST fields (with its ``id`` when known)."""

    key: str
    kind: ObjectType
    name: str
    info: dict[str, Any]
    #: The destination is the source object's own copy (same kind and name), not an object
    #: the user named for the rows (``--to-object``): one there already takes its fields.
    counterpart: bool = True


@dataclass(frozen=True)
class Destination:
    ref: ObjectRef
    created: bool  # by this job: this run or the one it resumes


def creation_order(wanted: list[Wanted]) -> list[Wanted]:
    """Datasets, then experiments (bases first), then the rest (the project logs)."""
    experiments = [w for w in wanted if w.kind == "experiment"]
    by_id = {w.info.get("id") or w.key: w for w in experiments}
    infos = [{**w.info, "id": w.info.get("id") or w.key} for w in experiments]
    ordered = [by_id[info["id"]] for info in experiments_in_dependency_order(infos)]
    datasets = [w for w in wanted if w.kind == "dataset"]
    return datasets + ordered + [w for w in wanted if w.kind not in ("dataset", "experiment")]


def _refuse_merging_namesakes(wanted: list[Wanted]) -> None:
    """UsageError when two source objects of one kind share a name: both would be written into
    the one destination object of that name (a dataset deleted and created again under its old
    name, in an export root holding runs from before and after)."""
    seen: dict[tuple[str, str], Wanted] = {}
    for item in wanted:
        if item.kind == "project_logs":
            continue
        first = seen.setdefault((item.kind, item.name), item)
        if first is not item:
            ids = ", ".join(w.info.get("id") or w.key for w in (first, item))
            raise UsageError(
                f"{item.kind} {item.name!r}: two source {item.kind}s have that name ({ids}) and would "
                "both be written into one; load them separately (--in one run's manifest, or --until)"
            )


async def ensure_objects(
    client: BraintrustClient,
    project: dict[str, Any],
    wanted: list[Wanted],
    *,
    id_map: dict[str, str],
    into_existing: bool,
    ours: dict[str, str],
    remember: Callable[[str, str], Awaitable[None]],
    warnings: list[str],
    verb: str,
) -> dict[str, Destination]:
    """The destination of each wanted object, by key, created in :func:`creation_order` with
    references remapped through ``id_map`` (which gains every source id -> destination id).

    ``ours`` maps keys to the objects this job created before (resumed); ``remember(key, id)``
    records each new one before anything is written into it, and ``remember(key, CREATING)``
    each one about to be created: a job stopped between the create and the record finds the
    object of that name and takes it as its own. An object of the same name that is not ours
    needs ``into_existing`` (UsageError before any is created otherwise); one that was there
    already gets the source's fields (description, metadata, tags, ...) and references, or
    ``warnings`` say why not."""
    ordered = creation_order(wanted)
    _refuse_merging_namesakes(ordered)
    found: dict[str, dict[str, Any]] = {}
    for item in ordered:
        if item.kind != "project_logs":
            existing = await find_object(client, item.kind, project["id"], item.name)
            if existing is not None:
                found[item.key] = existing
    for item in ordered:  # created by a stopped run of this job just before it recorded the id
        existing = found.get(item.key)
        if existing is not None and ours.get(item.key) == CREATING:
            ours[item.key] = existing["id"]
            await remember(item.key, existing["id"])
    if not into_existing:
        for item in ordered:
            existing = found.get(item.key)
            if existing is not None and ours.get(item.key) != existing["id"]:
                raise UsageError(
                    f"{item.kind} {item.name!r} already exists in project {project['name']!r}; pass "
                    f"--into-existing to write into it (its rows are merged with the {verb} ones)"
                )
    result: dict[str, Destination] = {}
    experiments: list[tuple[Wanted, dict[str, Any]]] = []  # each with the object as it is now
    for item in ordered:
        existing = found.get(item.key)
        if item.kind == "project_logs":
            destination = Destination(logs_ref(project), False)
        elif existing is None:
            body = creation_body(item.kind, item.name, project["id"], item.info, id_map)
            await remember(item.key, CREATING)
            try:
                existing = await client.post_json(f"/v1/{item.kind}", body)
            except TransientApiError:
                raise  # the server may have made it: the mark stays for the re-run to find it
            except ApiError:  # refused: nothing was made, so nothing of that name is ours
                await remember(item.key, REFUSED)
                raise
            destination = Destination(object_ref(item.kind, existing), True)
            await remember(item.key, destination.ref.id)
        else:
            destination = Destination(object_ref(item.kind, existing), ours.get(item.key) == existing["id"])
            if item.counterpart:
                existing = await _follow_fields(client, item, existing, warnings)
        if item.kind == "experiment" and existing is not None:
            experiments.append((item, existing))
        if item.info.get("id"):
            id_map[item.info["id"]] = destination.ref.id
        result[item.key] = destination
    # Bases come first, except in a cycle (A based on B based on A): a reference created
    # before its target is set now, as are those of experiments that were there already.
    for item, existing in experiments:
        await _follow_references(client, existing, item.info, id_map, warnings, own=result[item.key].created)
    return result


def _differ(a: Any, b: Any) -> bool:
    """Whether two JSON values differ as JSON does (``true`` is not ``1``, as in Python)."""
    return jsoncodec.canonical(a) != jsoncodec.canonical(b)


async def _follow_fields(
    client: BraintrustClient, item: Wanted, existing: dict[str, Any], warnings: list[str]
) -> dict[str, Any]:
    """Bring the fields a copy carries of an object that was there already to the source's
    (those the source's description has: a manifest may not list all). A ``PATCH`` merges
    objects, so a key the source dropped would stay: such a field is cleared, then set. A
    warning says what still differs. The object as it is now."""
    change = {
        key: item.info[key]
        for key in COPIED_FIELDS[item.kind]
        if key in item.info and _differ(item.info[key], existing.get(key))
    }
    if not change:
        return existing
    label = f"{item.kind}:{existing['name']}"

    async def patch(fields: dict[str, Any]) -> dict[str, Any]:
        body = jsoncodec.dumps(fields)
        found: dict[str, Any] = (await client.request("PATCH", f"/v1/{item.kind}/{existing['id']}", body=body)).json()  # fmt: skip
        return found

    try:
        updated = await patch(change)
        still = {key: value for key, value in change.items() if _differ(updated.get(key), value)}
        if still:  # the merge kept keys the source dropped: clear those fields, then set them
            await patch({key: None for key in still})
            updated = await patch(still)
            still = {key: value for key, value in still.items() if _differ(updated.get(key), value)}
    except TransientApiError:
        raise  # not a refusal: the run stops, and a re-run updates the object
    except ApiError as exc:
        warnings.append(f"{label}: keeps its {', '.join(change)}, not the source's ({exc})")
        return existing
    if still:
        warnings.append(f"{label}: its {', '.join(still)} still differ from the source's after an update")
    return updated


async def _follow_references(
    client: BraintrustClient,
    existing: dict[str, Any],
    info: dict[str, Any],
    id_map: dict[str, str],
    warnings: list[str],
    *,
    own: bool,
) -> None:
    """Point an experiment's references where the copy's point; warn where they cannot be
    and differ, or where one the job did not create keeps a reference of its own."""
    label = f"experiment:{existing['name']}"
    wanted = {key: id_map[info[key]] for key in REFERENCES if info.get(key) in id_map}
    change = {key: value for key, value in wanted.items() if existing.get(key) != value}
    if change:
        try:
            body = jsoncodec.dumps(change)
            await client.request("PATCH", f"/v1/experiment/{existing['id']}", body=body)
        except TransientApiError:
            raise
        except ApiError as exc:
            warnings.extend(
                f"{label}: keeps its {key} {existing.get(key)}, not the copied {value} ({exc})"
                for key, value in change.items()
            )
    for key in REFERENCES:
        if not own and key not in wanted and existing.get(key) is not None:
            warnings.append(
                f"{label}: keeps its {key} {existing[key]}, which the source experiment does not share"
            )


@dataclass(frozen=True)
class VersionLink:
    """An experiment copied with its dataset: the source experiment's ``dataset_version`` and
    the snapshot version the dataset was copied at (None: not known)."""

    experiment: ObjectRef
    dataset: ObjectRef
    dataset_label: str
    pinned: str
    copied_at: str | None


async def link_dataset_versions(
    client: BraintrustClient, links: list[VersionLink], warnings: list[str]
) -> None:
    """Set each experiment's ``dataset_version`` to its dataset copy's newest version where the
    source's pinned the dataset as copied; warn where the pinned version is older."""
    for link in links:
        if link.copied_at is None or version_number(link.pinned) < version_number(link.copied_at):
            warnings.append(
                f"{link.experiment.label}: its dataset_version {link.pinned} is older than the copied "
                f"{link.dataset_label}; it links the copy's current version"
            )
            continue
        version = (await take_snapshot(client, from_object("dataset", link.dataset.id), None)).version
        if version is not None:
            body = jsoncodec.dumps({"dataset_version": version})
            await client.request("PATCH", f"/v1/experiment/{link.experiment.id}", body=body)


async def link_parameters(
    client: BraintrustClient,
    experiments: list[tuple[dict[str, Any], ObjectRef]],
    id_map: dict[str, str],
    warnings: list[str],
    versions: Mapping[tuple[str, str], str] | None = None,
) -> None:
    """Point each experiment copy at the copy of the function its source ran with
    (``parameters_id``, once the configuration is written: ``id_map`` holds its copy). A
    ``parameters_version`` naming the source function's current version names the copy's
    (``versions``: source (id, version) -> the copy's version); one naming an earlier version,
    which a copy does not have, links the function's copy as it is (a warning says so); a
    function not copied leaves the link out (a warning too). ``experiments``: (source info,
    copy)."""
    for info, copy in experiments:
        source_id = info.get(PARAMETERS)
        if not isinstance(source_id, str):
            continue
        if source_id not in id_map:
            warnings.append(
                f"{copy.label}: its parameters function {source_id} is not among the objects this load "
                "copied (--objects names no functions, or it could not be copied); its parameters_id "
                "is not set by this load"
            )
            continue
        pinned = info.get("parameters_version")
        version = None if pinned is None else (versions or {}).get((source_id, version_id(str(pinned))))
        if pinned is not None and version is None:
            warnings.append(
                f"{copy.label}: its parameters_version {pinned} is an earlier version of the "
                "source's function; it links the function's copy as it is"
            )
        body = jsoncodec.dumps({PARAMETERS: id_map[source_id], "parameters_version": version})
        await client.request("PATCH", f"/v1/experiment/{copy.id}", body=body)


def version_number(version: str) -> int:
    """A transaction id as a number to compare (-1 for one that is not a decimal string)."""
    return int(version) if version.isdigit() else -1
