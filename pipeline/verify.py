"""``btpipe verify``: compare two copies of the same objects, row by row, by content hash.

Each side is an object on an API (read through the export pager under a pinned snapshot
version) or an export directory (read through :mod:`pipeline.sources`). A row is reduced to
a 16-byte BLAKE2b digest of its user-visible fields: the fields a copy legitimately changes
(``rows.DESTINATION_FIELDS``: server-owned fields, object keys, ``origin``) are left out but
for what the row's comments say (:func:`comments_said`), keys
are sorted, a field whose value is null counts as absent (the API reports missing fields
as null), and ``created`` counts as the instant it names, whatever its ISO-8601 spelling (a
file may spell it ``+00:00``, the server keeps its own spelling); a field the server gives a
row that lacks it (``SERVER_FILLED``: ``created``, ``span_id``, ``root_span_id``) is left out
on both sides where the source row lacks it, as a hand-written file's may. Only ``id -> digest``
maps are held, never rows, so memory is ~100 bytes per row.
An export root is read as an import restores it (:mod:`pipeline.sources.inputs`): per object,
the runs of its chain in order, a later version of an id replacing an earlier one and the ids
a run's tombstones name removed.

The files a manifest lists are first checked against it (:mod:`pipeline.common.integrity`);
an object with a file changed, cut short or missing since the export is not compared (its
rows are not known) but reported as a difference naming each such file and what is wrong.

Attachments are compared by content, not by key (a copy has new keys): before a row is
digested, each ``braintrust_attachment`` reference's key is replaced by the SHA-256 of the
bytes it names, read from the export's index, or, on an API, by downloading and hashing the
bytes (streamed, once per key, :class:`Contents`). Only pages holding the marker are searched.
The attachment files an export's manifests list are checked like its data files: one whose
bytes no longer match is reported as damaged.

Configuration objects (prompts, functions, ...; :mod:`pipeline.common.config_kinds`) are
compared per kind by name or slug and content: without ids, times and the fields a copy
changes, and with every id they hold replaced by the name of what it points at, so a prompt
whose tool is the copied function compares equal to its source.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Container, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import anyio

from pipeline.api.attachments import download, download_url
from pipeline.api.btql import Pager, build_query
from pipeline.api.client import BraintrustClient
from pipeline.api.config import fetch_config, prompt_versions
from pipeline.api.objects import (
    ObjectRef,
    find_object,
    list_objects,
    logs_ref,
    object_ref,
    resolve_project,
    resolve_selection,
)
from pipeline.api.principals import Principals
from pipeline.api.snapshot import pin_read
from pipeline.common import defaults, jsoncodec, layout
from pipeline.common.arrow_schema import format_created, parse_created
from pipeline.common.attachments import MARKER, Reference, find_references, rewrite
from pipeline.common.config_kinds import (
    BY_NAME,
    KINDS,
    ConfigKind,
    ConfigSet,
    Pin,
    comparable,
    current_versions,
    is_code_bundle,
    key_of,
    label,
    lookup_kinds,
    pins,
    visibility,
)
from pipeline.common.errors import AttachmentUnavailable, NotFoundError, UsageError
from pipeline.common.integrity import find_damage
from pipeline.common.manifest import FileInfo, Manifest
from pipeline.common.object_fields import COPIED_FIELDS, COPIED_KINDS, PARAMETERS, REFERENCES
from pipeline.common.progress import Progress, Task
from pipeline.common.rows import DESTINATION_FIELDS
from pipeline.common.selection import Selector, config_selection, parse_one_object, parse_selection
from pipeline.common.storage import Storage, location
from pipeline.common.versions import version_id
from pipeline.sources import iter_rows
from pipeline.sources.config import damaged_config, find_config, read_config
from pipeline.sources.inputs import (
    InputObject,
    find_damaged,
    find_inputs,
    input_manifests,
    open_input,
    select_inputs,
)

SAMPLE = 20
Digests = dict[str, bytes]
#: By id, the fields of ``SERVER_FILLED`` a source row lacks (only rows lacking some).
Lacking = dict[str, frozenset[str]]
#: What the server gives an inserted row that lacks it: a source row without one (a
#: hand-written file) is compared without it on both sides.
SERVER_FILLED: Final = ("created", "span_id", "root_span_id")
_NONE_LACKING: Final[frozenset[str]] = frozenset()
_SHARED: dict[frozenset[str], frozenset[str]] = {}


#: What a copy keeps of a comment besides its text: who wrote it and when are the writer's (a
#: copy is written by its loader).
_COMMENT_KEPT: Final = ("source", "metadata")


def comments_said(entries: Any) -> list[Any]:
    """What a row's comments say, which a copy keeps: each entry's ``comment`` with its
    ``source`` and ``metadata``, in a fixed order."""
    if not isinstance(entries, list):
        return []
    said = [
        {"comment": e["comment"], **{k: e[k] for k in _COMMENT_KEPT if e.get(k) is not None}}
        for e in entries
        if isinstance(e, dict) and e.get("comment") is not None
    ]
    return sorted(said, key=jsoncodec.canonical)


def content_digest(value: Any) -> bytes:
    """What verify compares of a row or an object: BLAKE2b-128 of its canonical JSON."""
    return hashlib.blake2b(jsoncodec.canonical(value), digest_size=16).digest()


def row_digest(
    row: dict[str, Any], contents: Mapping[str, str] | None = None, without: frozenset[str] = _NONE_LACKING
) -> bytes:
    """The digest of ``row`` less the fields ``without``; ``contents`` maps attachment keys to
    what their bytes hash to."""
    visible = {
        k: v for k, v in row.items() if k not in DESTINATION_FIELDS and v is not None and k not in without
    }
    created = visible.get("created")
    if type(created) is str and (instant := parse_created(created)) is not None:
        visible["created"] = format_created(instant)
    said = comments_said(row.get("comments"))
    if said:
        visible["comments"] = said
    if contents:
        visible = rewrite(visible, contents)
    return content_digest(visible)


def digest_rows(
    rows: Iterable[dict[str, Any]],
    into: Digests,
    contents: Mapping[str, str] | None = None,
    *,
    record: Lacking | None = None,
    without: Lacking | None = None,
) -> None:
    """Digest ``rows`` into ``into``. ``record`` (the source side) gets the fields of
    ``SERVER_FILLED`` each row lacks; ``without`` (the destination side, the source's record)
    leaves those fields out of each row's digest."""
    for row in rows:
        row_id = str(row.get("id"))
        if record is not None:
            missing = frozenset(f for f in SERVER_FILLED if row.get(f) is None)
            if missing:
                record[row_id] = _SHARED.setdefault(missing, missing)  # one object per combination
            else:
                record.pop(row_id, None)
        dropped = _NONE_LACKING if without is None else without.get(row_id, _NONE_LACKING)
        into[row_id] = row_digest(row, contents, dropped)


class Contents:
    """The SHA-256 of the bytes each attachment key of one API names, downloaded and hashed
    once per key (streamed, at most ``workers`` at a time)."""

    def __init__(self, client: BraintrustClient, org_id: str, workers: int = defaults.ATTACHMENT_WORKERS.default) -> None:  # fmt: skip
        self.client = client
        self.org_id = org_id
        self.known: dict[str, str] = {}
        self._limiter = anyio.CapacityLimiter(workers)

    async def of(self, refs: Iterable[Reference]) -> dict[str, str]:
        async with anyio.create_task_group() as tg:
            for ref in refs:
                if ref.key not in self.known:
                    tg.start_soon(self._hash, ref)
        return self.known

    async def _hash(self, ref: Reference) -> None:
        async with self._limiter:
            hashed: list[str] = []

            async def consume(chunks: AsyncIterator[bytes], _size: int | None) -> None:
                digest = hashlib.sha256()  # afresh on each attempt: a retry reads from the start
                async for chunk in chunks:
                    digest.update(chunk)
                hashed.append(digest.hexdigest())

            try:
                url = await download_url(self.client, ref, self.org_id)
                await download(self.client, ref, url, 2**62, consume)
                self.known[ref.key] = f"sha256:{hashed[-1]}"
            except (AttachmentUnavailable, NotFoundError):  # no bytes ready, or the URL is gone
                self.known[ref.key] = "missing"


async def digest_object(
    client: BraintrustClient,
    ref: ObjectRef,
    contents: Contents,
    progress: Progress,
    label: str,
    *,
    record: Lacking | None = None,
    without: Lacking | None = None,
) -> Digests:
    """The digests of every row of ``ref``, read pinned, counted into a task of ``progress``
    (``record`` and ``without`` as :func:`digest_rows` takes them)."""
    query = build_query(ref.object_type, ref.id)
    snap = await pin_read(client, query)
    digests: Digests = {}
    task = progress.add(label, snap.rows)
    if snap.rows == 0:
        task.finish()
        return digests
    async for page in Pager(client, query, version=snap.version).pages():
        task.advance(page.rows, len(page.raw))
        rows = jsoncodec.loads_lines(page.raw)
        keys = None
        if MARKER in page.raw:
            found: dict[str, Reference] = {}
            for row in rows:
                find_references(row, found)
            keys = await contents.of(found.values())
        digest_rows(rows, digests, keys, record=record, without=without)
    task.finish()
    return digests


async def attachment_names(contents: Contents | Mapping[str, str], values: Iterable[Any]) -> dict[str, str]:
    """Each attachment key ``values`` (objects' fields) refer to -> what its bytes hash to
    (``missing`` where an API has none): how verify compares an object's attachments, by
    content, since a copy's keys are new. ``contents``: an API's, or an export's index (a key
    it does not hold, left out by ``--attachments skip``, is compared as the key itself)."""
    refs: dict[str, Reference] = {}
    for value in values:
        find_references(value, refs)
    if not refs:
        return {}
    if not isinstance(contents, Contents):  # an export: a key it left out keeps its name
        return {key: contents[key] for key in refs if key in contents}
    known = await contents.of(refs.values())
    return {key: known.get(key, "missing") for key in refs}


def exported_contents(manifests: Iterable[Manifest]) -> dict[str, str]:
    """Attachment key -> content hash, as an export's manifests list them."""
    return {
        entry["key"]: f"sha256:{entry['sha256']}"
        for manifest in manifests
        for entry in manifest.attachments.get("files", [])
    }


def digest_files(
    storage: Storage, files: list[str], deletes: Container[str] = frozenset(),
    contents: Mapping[str, str] | None = None, task: Task | None = None, lacking: Lacking | None = None,
) -> Digests:  # fmt: skip
    """The digests of ``files`` applied in order, the ids in ``deletes`` files (tombstones)
    removed where they come, rows counted into ``task``, the fields each row lacks recorded
    in ``lacking`` (:func:`digest_rows`). Blocking: run in a thread."""
    digests: Digests = {}
    for path in files:
        for chunk in iter_rows(storage, path):
            if task is not None:
                task.advance(len(chunk))
            if path in deletes:
                for row in chunk:
                    digests.pop(str(row.row.get("id")), None)
            else:
                digest_rows((r.row for r in chunk), digests, contents, record=lacking)
    return digests


async def damaged_attachments(storage: Storage, manifests: Iterable[Manifest]) -> list[str]:
    """The attachment files the manifests list whose bytes no longer match their SHA-256."""
    listed = {
        entry["sha256"]: FileInfo(layout.attachment_path(entry["sha256"]), 0, entry["bytes"], entry["sha256"])
        for manifest in manifests
        for entry in manifest.attachments.get("files", [])
    }
    return [str(d) for d in await find_damage(storage, list(listed.values()))]


@dataclass
class ObjectDiff:
    source: str
    destination: str
    source_rows: int
    destination_rows: int
    missing: int = 0
    extra: int = 0
    differing: int = 0
    missing_ids: list[str] = field(default_factory=list)
    extra_ids: list[str] = field(default_factory=list)
    differing_ids: list[str] = field(default_factory=list)
    #: Source files that differ from their manifest: the object was not compared.
    damaged: list[str] = field(default_factory=list)
    #: What is counted: rows, or configuration objects (named by name or slug, not id).
    unit: str = "rows"
    #: The destination holds no such object at all (a difference even when the source's is empty).
    absent: bool = False

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differing or self.damaged or self.absent)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def describe(self) -> str:
        if self.damaged:
            files = "".join(f"\n  damaged: {line}" for line in self.damaged)
            return f"{self.source} -> {self.destination}: not compared, the source files are damaged{files}"
        counts = f"{self.source_rows:,} vs {self.destination_rows:,} {self.unit}"
        head = f"{self.source} -> {self.destination}: {counts}"
        if self.ok:
            return f"{head}: identical"
        parts = [f"{head}: not at the destination" if self.absent else head]
        for name, count, ids in (
            ("missing", self.missing, self.missing_ids),
            ("extra", self.extra, self.extra_ids),
            ("differing", self.differing, self.differing_ids),
        ):
            if count:
                parts.append(f"  {name}: {count:,} (e.g. {', '.join(ids)})")
        return "\n".join(parts)


def compare(source: Digests, destination: Digests, source_label: str, destination_label: str) -> ObjectDiff:
    diff = ObjectDiff(source_label, destination_label, len(source), len(destination))
    for row_id, digest in source.items():
        other = destination.get(row_id)
        if other is None:
            diff.missing += 1
            if len(diff.missing_ids) < SAMPLE:
                diff.missing_ids.append(row_id)
        elif other != digest:
            diff.differing += 1
            if len(diff.differing_ids) < SAMPLE:
                diff.differing_ids.append(row_id)
    for row_id in destination:
        if row_id not in source:
            diff.extra += 1
            if len(diff.extra_ids) < SAMPLE:
                diff.extra_ids.append(row_id)
    for ids in (diff.missing_ids, diff.extra_ids, diff.differing_ids):
        ids.sort()
    return diff


def _config_digests(
    kind: ConfigKind,
    objects: list[dict[str, Any]],
    names: dict[str, str],
    project_name: str | None,
    versions: dict[Pin, str],
) -> Digests:
    """Each object of one kind by its name or slug, digested as :func:`comparable` shows it."""
    return {
        key_of(kind, obj): content_digest(comparable(obj, names, project_name, versions)) for obj in objects
    }


def _names(config: ConfigSet, names: dict[str, str]) -> dict[str, str]:
    """``names`` and the label of every configuration object of ``config``, by id."""
    found = dict(names)
    for name, objects in config.objects.items():
        for obj in objects:
            if obj.get("id"):
                found[str(obj["id"])] = label(BY_NAME[name], obj)
    return found


def compare_config(
    source: ConfigSet,
    source_names: dict[str, str],
    destination: ConfigSet,
    destination_names: dict[str, str],
    project_name: str,
    lookup: tuple[ConfigSet, ConfigSet] | None = None,
) -> list[ObjectDiff]:
    """Per kind, the source's objects against the destination's, by name or slug and content
    with every id replaced by the name of what it points at; kinds empty on both sides and
    code functions with bundles (which no copy carries) are left out. ``lookup``: each side's
    objects of the kinds those refer to that are not compared (:func:`lookup_kinds`), which
    name what they point at."""
    mine, theirs_found = lookup or (ConfigSet(), ConfigSet())
    src_names = _names(mine, _names(source, source_names))
    dst_names = _names(theirs_found, _names(destination, destination_names))
    src_versions = _version_names((mine, source), src_names, source.project_name)
    dst_versions = _version_names((theirs_found, destination), dst_names, destination.project_name)
    diffs = []
    for kind in KINDS:
        if kind.name not in source.objects:
            continue
        bundles = {key_of(kind, o) for o in source.objects[kind.name] if is_code_bundle(kind, o)}
        ours = [o for o in source.objects[kind.name] if key_of(kind, o) not in bundles]
        theirs = [o for o in destination.objects.get(kind.name, []) if key_of(kind, o) not in bundles]
        if not ours and not theirs:
            continue
        diff = compare(
            _config_digests(kind, ours, src_names, source.project_name, src_versions),
            _config_digests(kind, theirs, dst_names, destination.project_name, dst_versions),
            kind.selector,
            f"{project_name}/{kind.selector}",
        )
        diff.unit = "objects"
        diffs.append(diff)
    return diffs


def _held(*configs: ConfigSet) -> list[Any]:
    """Every object and earlier version ``configs`` hold: what their attachments are named in."""
    return [part for config in configs for part in (*config.objects.values(), *config.versions.values())]


def _version_names(
    configs: tuple[ConfigSet, ...], names: dict[str, str], project_name: str | None
) -> dict[Pin, str]:
    """How a pinned version compares: an object's current one as such, and a prompt's earlier
    one (where its history was read) by its content, since a copy's versions are new ones: its
    content as a copy holds it (under the prompt's current slug), with the versions it pins
    named the same way (a second pass names those pinning earlier versions)."""
    found: dict[Pin, str] = {}
    for config in configs:
        found.update(current_versions(config))
    keys = BY_NAME["prompt"].key
    for _ in range(2):
        earlier: dict[Pin, str] = {}
        for config in configs:
            for prompt_id, history in config.versions.items():
                for version in history:
                    unkeyed = {k: v for k, v in version.items() if k not in keys}
                    shown = content_digest(comparable(unkeyed, names, project_name, found)).hex()
                    pin = (prompt_id, str(version.get("_xact_id")))
                    earlier[pin] = f"{names.get(prompt_id, prompt_id)} as it was ({shown})"
        found.update(earlier)
    return found


async def read_pinned_history(
    client: BraintrustClient, project: dict[str, Any], config: ConfigSet, lookup: ConfigSet
) -> None:
    """Read the history of the prompts of ``config`` and ``lookup`` into ``config.versions``
    when an object of ``config`` pins one of their earlier versions (and it was not read)."""
    prompts = [*config.objects.get("prompt", []), *lookup.objects.get("prompt", [])]
    current = {(str(p["id"]), str(p.get("_xact_id"))) for p in prompts}
    known = {(pid, str(v.get("_xact_id"))) for pid, history in config.versions.items() for v in history}
    ids = {pid for pid, _ in current}
    pinned = {pin for objects in config.objects.values() for obj in objects for pin in pins(obj)}
    wanted = {pin[0] for pin in pinned if pin[0] in ids and pin not in current and pin not in known}
    if not wanted:
        return
    chosen = [p for p in prompts if str(p["id"]) in wanted]  # only theirs: one request per version
    history = await prompt_versions(client, project["id"], chosen, defaults.CONFIG_WORKERS.default)
    config.versions.update(history or {})


async def principal_names(org: Principals, objects: Iterable[Any]) -> dict[str, str]:
    """Each group and member id the visibility of ``objects`` names, by the name verify
    compares (``group:<name>``, ``user:<email>``); an id ``org`` does not have is left out."""
    named: dict[str, str] = {}
    for obj in objects:
        groups, users = visibility(obj)
        for group_id in groups:
            group = await org.group(group_id)
            if group is not None:
                named[group_id] = f"group:{group['name']}"
        for user_id in users:
            user = await org.user(user_id)
            if user is not None and user.get("email"):
                named[user_id] = f"user:{user['email']}"
    return named


async def foreign_principals(org: Principals, objects: Iterable[Any]) -> dict[str, str]:
    """Each group and user id the visibility of ``objects`` names that is no group or member
    of ``org``, named as such: a copy naming another org's (compared with an export, whose ids
    are the source org's own, it then differs)."""
    named: dict[str, str] = {}
    for obj in objects:
        groups, users = visibility(obj)
        for group_id in groups:
            if await org.group(group_id) is None:
                named[group_id] = f"group {group_id} of another org"
        for user_id in users:
            if await org.user(user_id) is None:
                named[user_id] = f"user {user_id}, not of this org"
    return named


#: A project's datasets and experiments, by kind.
Listed = dict[str, list[dict[str, Any]]]


async def _list_objects(
    client: BraintrustClient, project: dict[str, Any], *, functions: bool = False
) -> Listed:
    """The project's datasets and experiments, and with ``functions`` its functions (what an
    experiment's ``parameters_id`` names)."""
    listed: Listed = {
        kind: [o async for o in list_objects(client, kind, project["id"])] for kind in COPIED_KINDS
    }
    if functions:
        listed["function"] = (await fetch_config(client, project, ["function"])).objects.get("function", [])
    return listed


def _object_names(project: dict[str, Any], listed: Listed) -> dict[str, str]:
    """The project's id, and its datasets', experiments' and functions' ids, with the names
    verify uses."""
    names = {project["id"]: "project"}
    for kind, objects in listed.items():
        names.update((obj["id"], f"{kind}:{obj.get('slug') or obj['name']}") for obj in objects)
    names.update(_functions_as_they_are(listed.get("function", [])))
    return names


def _functions_as_they_are(functions: list[dict[str, Any]]) -> dict[str, str]:
    """``<id>@<current version>`` of each function -> ``as it is``: how an experiment's pin to
    its parameters function's current version compares (:func:`_parameters_version`)."""
    return {f"{f['id']}@{f['_xact_id']}": "its function as it is" for f in functions if f.get("_xact_id")}


#: An experiment's fields naming another object of its project, compared by that object's name.
_LINKS: Final = (*REFERENCES, PARAMETERS)


def _shown(kind: str, obj: dict[str, Any], names: dict[str, str], *, source: bool) -> dict[str, Any]:
    """The fields ``obj``'s copy carries; a reference by the name of what it points at (None
    outside the project: a copy drops such a reference). ``source``: ``obj`` is the source's."""
    shown = {name: obj.get(name) for name in COPIED_FIELDS[kind]}
    if kind == "experiment":
        shown.update((ref, names.get(obj.get(ref) or "")) for ref in _LINKS)
        shown[PARAMETERS_VERSION] = _parameters_version(obj, names, source=source)
    shown_named: dict[str, Any] = rewrite(shown, names)  # attachments by their contents
    return shown_named


#: An experiment's pin of its parameters function's version.
PARAMETERS_VERSION: Final = "parameters_version"


def _parameters_version(obj: dict[str, Any], names: dict[str, str], *, source: bool) -> str | None:
    """An experiment's ``parameters_version`` as verify compares it: a pin to its function's
    current version (``names`` holds ``<id>@<version>`` of each function as it is) as such; a
    source's pin to an earlier one as none, since a copy cannot carry it (the load warns);
    a copy's pin to any other version as that version."""
    pinned = obj.get(PARAMETERS_VERSION)
    if pinned is None:
        return None
    current = names.get(f"{obj.get(PARAMETERS)}@{version_id(str(pinned))}")
    return current if current is not None or source else f"version {pinned}"


def _dropped_links(mine: dict[str, Any], copy: dict[str, Any], selected: Container[str]) -> None:
    """Count as equal a link of the source's to an object outside the ``selected`` ones that
    the copy does not have: a copy of some objects drops it, and the version it pins with it.
    A copy that links something else is still a difference."""
    for ref in _LINKS:
        if ref in mine and mine[ref] not in selected and copy.get(ref) is None:
            mine[ref] = None
            if ref == PARAMETERS and copy.get(PARAMETERS_VERSION) is None:
                mine[PARAMETERS_VERSION] = None


def compare_objects(
    selection: list[Selector],
    source: Listed,
    source_names: dict[str, str],
    destination: Listed,
    destination_names: dict[str, str],
    project_name: str,
    config_kinds: Container[str] = (),
) -> list[ObjectDiff]:
    """Per kind selected, the source's datasets or experiments against the destination's, by
    name and the fields a copy carries. Selected whole (``datasets``), an object only the
    destination has is extra; selected by name, only those names are compared. An
    experiment's link to a function counts only where the functions are compared too
    (``config_kinds``)."""
    chosen: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for kind in COPIED_KINDS:
        selectors = [s for s in selection if s.object_type == kind]
        if selectors:
            named = None if any(s.name is None for s in selectors) else {s.name for s in selectors}
            chosen[kind] = (
                [o for o in source[kind] if named is None or o["name"] in named],
                [o for o in destination[kind] if named is None or o["name"] in named],
            )
    selected = {f"{kind}:{o['name']}" for kind, (ours, _) in chosen.items() for o in ours}
    if "function" in config_kinds:  # a code bundle is no copy's: a link to one counts as none
        function = BY_NAME["function"]
        selected |= {
            f"function:{o.get('slug') or o['name']}"
            for o in source.get("function", [])
            if not is_code_bundle(function, o)
        }
    diffs = []
    for copied, (ours, theirs) in chosen.items():
        if not ours and not theirs:
            continue
        mine = {o["name"]: _shown(copied, o, source_names, source=True) for o in ours}
        copies = {o["name"]: _shown(copied, o, destination_names, source=False) for o in theirs}
        for name in mine.keys() & copies.keys():
            _dropped_links(mine[name], copies[name], selected)
        diff = compare(
            {name: content_digest(shown) for name, shown in mine.items()},
            {name: content_digest(shown) for name, shown in copies.items()},
            f"{copied}s",
            f"{project_name}/{copied}s",
        )
        diff.unit = "objects"
        diff.differing_ids = [  # which fields: an object has few, and the user needs to know
            f"{name} ({', '.join(k for k in mine[name] if content_digest(mine[name][k]) != content_digest(copies[name][k]))})"
            for name in diff.differing_ids
        ]
        diffs.append(diff)
    return diffs


class VerifyJob:
    """Pairs source and destination objects by type and name, then compares their digests."""

    def __init__(
        self, destination: BraintrustClient, to_project: str, objects: str, progress: Progress | None = None
    ) -> None:
        self.destination = destination
        self.to_project = to_project
        self.objects = objects
        self.progress = progress if progress is not None else Progress()
        self._contents: Contents | None = None  # the destination's, once its project is known

    def _destination_contents(self, project: dict[str, Any]) -> Contents:
        if self._contents is None:
            self._contents = Contents(self.destination, str(project.get("org_id") or ""))
        return self._contents

    async def _counterpart(
        self, project: dict[str, Any], object_type: str, name: str | None
    ) -> ObjectRef | None:
        if object_type == "project_logs":
            return logs_ref(project)
        found = await find_object(self.destination, object_type, project["id"], name or "")  # type: ignore[arg-type]
        return None if found is None else object_ref(object_type, found)  # type: ignore[arg-type]

    async def _pair(
        self,
        project: dict[str, Any],
        object_type: str,
        name: str | None,
        label: str,
        source: Digests,
        lacking: Lacking,
        destination_label: str | None = None,
    ) -> ObjectDiff:
        ref = await self._counterpart(project, object_type, name)
        contents = self._destination_contents(project)
        target = (
            {} if ref is None
            else await digest_object(self.destination, ref, contents, self.progress, f"{label} (destination)",
                                     without=lacking)
        )  # fmt: skip
        diff = compare(source, target, label, f"{project['name']}/{destination_label or label}")
        diff.absent = ref is None
        return diff

    async def against_project(self, source: BraintrustClient, project_name: str) -> list[ObjectDiff]:
        src_project = await resolve_project(source, project_name)
        dst_project = await resolve_project(self.destination, self.to_project)
        diffs = []
        contents = Contents(source, str(src_project.get("org_id") or ""))
        for ref in await resolve_selection(source, src_project, self.objects):
            lacking: Lacking = {}
            digests = await digest_object(
                source, ref, contents, self.progress, f"{ref.label} (source)", record=lacking
            )
            diffs.append(
                await self._pair(dst_project, ref.object_type, ref.name, ref.label, digests, lacking)
            )
        selection = parse_selection(self.objects)
        kinds = config_selection(self.objects)
        if not kinds and not any(s.object_type in COPIED_KINDS for s in selection):
            return diffs  # logs only: no object of the project to compare or to name
        linked = any(s.object_type == "experiment" for s in selection)  # their parameters functions
        src_listed = await _list_objects(source, src_project, functions=linked)
        dst_listed = await _list_objects(self.destination, dst_project, functions=linked)
        names, their_names = _object_names(src_project, src_listed), _object_names(dst_project, dst_listed)
        names.update(await attachment_names(contents, src_listed.values()))
        their_names.update(
            await attachment_names(self._destination_contents(dst_project), dst_listed.values())
        )
        diffs += compare_objects(
            selection, src_listed, names, dst_listed, their_names, dst_project["name"], kinds
        )
        if kinds:
            config = await fetch_config(source, src_project, kinds + lookup_kinds(kinds))
            found = config.take(lookup_kinds(kinds))
            await read_pinned_history(source, src_project, config, found)
            names.update(await attachment_names(contents, _held(config, found)))
            # who may see a project score, by group name and user email: each org has its ids
            source_org = Principals(source, str(src_project["org_id"]))
            names.update(await principal_names(source_org, config.objects.get("project_score", [])))
            diffs += await self._pair_config(
                dst_project, config, names, their_names, principals=True, lookup=found
            )
        return diffs

    async def _pair_config(
        self,
        project: dict[str, Any],
        config: ConfigSet,
        names: dict[str, str],
        their_names: dict[str, str] | None = None,
        *,
        principals: bool = False,
        lookup: ConfigSet | None = None,
    ) -> list[ObjectDiff]:
        """The configuration diffs of ``config`` (the source's) against the destination's;
        ``principals``: ``names`` name the source's groups and users (an export's do not), so
        the destination's are named too; else a destination's id of no group or member of its
        org is named as such. ``lookup``: the source's objects of the kinds ``config``'s refer
        to and does not hold, which name them (the destination's are read alike)."""
        looked_up = lookup_kinds(list(config.objects))
        theirs = await fetch_config(self.destination, project, list(config.objects) + looked_up)
        their_lookup = theirs.take(looked_up)
        await read_pinned_history(self.destination, project, theirs, their_lookup)
        if their_names is None:
            their_names = _object_names(project, await _list_objects(self.destination, project))
        their_names = {
            **their_names,
            **await attachment_names(self._destination_contents(project), _held(theirs, their_lookup)),
        }
        org = Principals(self.destination, str(project["org_id"]))
        scores = theirs.objects.get("project_score", [])
        their_names.update(
            await principal_names(org, scores) if principals else await foreign_principals(org, scores)
        )
        return compare_config(
            config, names, theirs, their_names, project["name"], (lookup or ConfigSet(), their_lookup)
        )

    async def against_files(self, input_path: str, to_object: str | None = None) -> list[ObjectDiff]:
        """Compare the objects of an export (or one file, with ``to_object``) with the destination.

        A file outside the export layout names no object, so it needs ``to_object``; a
        selection that leaves nothing to compare is an error, never an empty success."""
        storage, prefix = await anyio.to_thread.run_sync(open_input, input_path)
        found = await anyio.to_thread.run_sync(find_inputs, storage, prefix)
        dst_project = await resolve_project(self.destination, self.to_project)
        if to_object is not None:
            object_type, name = parse_one_object(to_object)
            if len(found) != 1:
                raise UsageError(
                    f"--to-object names one destination but {input_path} holds {len(found)} objects"
                )
            return [
                await self._pair_files(
                    dst_project, storage, found[0], object_type, name, input_path, {}, to_object
                )
            ]
        loose = [obj for obj in found if obj.object_type is None]
        if loose:
            raise UsageError(
                f"{location(storage, loose[0].files[0])}: not in an export's object_type=/object_id= layout; "
                "pass --to-object logs, dataset:NAME or experiment:NAME"
            )
        inputs = select_inputs(found, self.objects)
        kinds = config_selection(self.objects)
        config = await anyio.to_thread.run_sync(find_config, storage, prefix, kinds + lookup_kinds(kinds))
        if not inputs and not any(k in config.entries for k in kinds):
            raise UsageError(f"{input_path}: nothing to compare (no {self.objects} in the input)")
        manifests = await anyio.to_thread.run_sync(input_manifests, storage, prefix)
        contents = exported_contents(manifests)
        diffs = []
        damaged = await damaged_attachments(storage, manifests)
        if damaged:
            diffs.append(
                ObjectDiff("attachments", f"{dst_project['name']}/attachments", 0, 0, damaged=damaged)
            )
        for obj in inputs:
            assert obj.object_type is not None
            diffs.append(
                await self._pair_files(
                    dst_project, storage, obj, obj.object_type, obj.name or obj.id, obj.label, contents
                )
            )
        diffs += await self._pair_exported_objects(
            dst_project, storage, prefix, inputs, config.names, contents
        )
        if any(k in config.entries for k in kinds):
            broken = await damaged_config(storage, config)
            if broken:
                where = f"{dst_project['name']}/config"
                diffs.append(ObjectDiff("config", where, 0, 0, damaged=[str(d) for d in broken]))
            else:
                objects = await anyio.to_thread.run_sync(read_config, storage, config)
                lookup = objects.take(lookup_kinds(kinds))
                names = {**config.names, **await attachment_names(contents, _held(objects, lookup))}
                diffs += await self._pair_config(dst_project, objects, names, lookup=lookup)
        return diffs

    async def _pair_exported_objects(
        self,
        dst_project: dict[str, Any],
        storage: Storage,
        prefix: str,
        inputs: list[InputObject],
        names: dict[str, str],
        contents: Mapping[str, str],
    ) -> list[ObjectDiff]:
        """The datasets and experiments of an export (their fields as its manifests recorded
        them) against the destination's, as :meth:`against_project` compares them. An object
        whose manifest recorded no fields (written before they were) is left out on both sides;
        ``contents``: the export's attachments by key."""
        selection = parse_selection(self.objects)
        if not any(s.object_type in COPIED_KINDS for s in selection):
            return []
        unknown = {(o.object_type, o.name) for o in inputs if not o.info}
        listed: Listed = {
            kind: [{**o.info, "id": o.id, "name": o.name} for o in inputs if o.object_type == kind and o.info]
            for kind in COPIED_KINDS
        }
        linked = any(s.object_type == "experiment" for s in selection)  # their parameters functions
        names = dict(names)
        if linked:  # the export's functions, when it holds them, name the links
            found = await anyio.to_thread.run_sync(find_config, storage, prefix, ["function"])
            if found.entries and not await damaged_config(storage, found):
                functions = (await anyio.to_thread.run_sync(read_config, storage, found)).objects.get(
                    "function", []
                )
                listed["function"] = functions
                names.update((str(f["id"]), f"function:{f.get('slug') or f.get('name')}") for f in functions)
                names.update(_functions_as_they_are(functions))
        names.update(await attachment_names(contents, listed.values()))
        theirs = await _list_objects(self.destination, dst_project, functions=linked)
        their_names = _object_names(dst_project, theirs)
        their_names.update(await attachment_names(self._destination_contents(dst_project), theirs.values()))
        for kind in COPIED_KINDS:
            theirs[kind] = [o for o in theirs[kind] if (kind, o.get("name")) not in unknown]
        return compare_objects(
            selection, listed, names, theirs, their_names, dst_project["name"], config_selection(self.objects)
        )

    async def _pair_files(
        self,
        project: dict[str, Any],
        storage: Storage,
        obj: InputObject,
        object_type: str,
        name: str | None,
        label: str,
        contents: Mapping[str, str],
        destination_label: str | None = None,
    ) -> ObjectDiff:
        """The diff of one input object, or, when a file of it is damaged, a difference
        listing the damaged files instead of a comparison; ``destination_label``: how the
        destination object is named when not as the input is (``--to-object``)."""
        damaged = await find_damaged(storage, obj, read_unlisted=False)
        if damaged:
            return ObjectDiff(
                label,
                f"{project['name']}/{destination_label or label}",
                0,
                0,
                damaged=[str(d) for d in damaged],
            )
        task = self.progress.add(f"{label} (files)", obj.rows)
        lacking: Lacking = {}
        digests = await anyio.to_thread.run_sync(
            digest_files, storage, obj.files, obj.deletes, contents or None, task, lacking
        )
        task.finish()
        return await self._pair(project, object_type, name, label, digests, lacking, destination_label)
