"""Recreating a project's configuration objects at a destination (import and migrate).

    source objects (listed, or read from an export) + destination listing
    -> collisions refused before anything is written
    -> per group of kinds, in order (:mod:`pipeline.common.config_kinds`): objects in levels
       by their references, each level written concurrently -> the id map grows

Every id an object holds is remapped (``id_map``: the project, datasets and experiments the
load created, then each configuration object as it is written), so a prompt's tool names the
destination's function. An object is found at the destination by its name or slug: one equal
after remapping is left alone, one that differs is replaced (``PUT``), a missing one created;
so a re-run changes nothing and never makes twins. A prompt created at the destination gets
its earlier versions first, oldest first, under its current slug, so its history is kept; one
whose history there is the first of the source's versions (a load stopped while writing them)
gets the rest. A load of some kinds only (``--objects prompts``) also reads the kinds they
refer to, to point references at the destination's objects of the same slug, without
writing them.

Not copied, and listed by name: code functions whose bundle lives in the source org
(``skipped``: a warning), and objects whose reference cannot be remapped, such as a prompt
naming a function the source does not have, and what refers to them (``broken``: the load
exits 1; rows are still copied).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from pipeline.api.client import BraintrustClient
from pipeline.api.config import fetch_config, prompt_versions, write_object
from pipeline.api.principals import Principals
from pipeline.common.config_kinds import (
    BY_NAME,
    KINDS,
    SHARED_KEYS,
    ConfigKind,
    ConfigSet,
    Pin,
    comparable,
    create_body,
    is_code_bundle,
    key_of,
    label,
    ordered_levels,
    pins,
    provenance,
    references,
    remap,
    slug_pin,
    slug_references,
    visibility,
)
from pipeline.common.errors import UsageError, first_error
from pipeline.load.acls import map_visibility

#: Copies the attachments a value refers to; the value naming the copies (``what``: who refers).
Carry = Callable[[Any, str], Awaitable[Any]]


@dataclass
class ConfigCount:
    """What a load did to one kind."""

    kind: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class ConfigOutcome:
    counts: list[ConfigCount] = field(default_factory=list)
    #: Code functions with bundles, which cannot be copied: ``function 'x': ...``.
    skipped: list[str] = field(default_factory=list)
    #: Objects not copied because a reference they hold cannot be remapped.
    broken: list[str] = field(default_factory=list)
    #: Kinds the source or destination deployment does not serve.
    unserved: list[str] = field(default_factory=list)
    #: Earlier versions of prompts written before their current one.
    versions: int = 0


class ConfigCopy:
    """One load's configuration objects: :meth:`check` before anything is written, then
    :meth:`apply` once the datasets and experiments exist."""

    def __init__(
        self,
        client: BraintrustClient,
        project: dict[str, Any],
        source: ConfigSet,
        *,
        workers: int,
        lookup: ConfigSet | None = None,
    ) -> None:
        self.client = client
        self.project = project
        self.source = source
        self.workers = workers
        #: Source objects of kinds not copied (:func:`lookup_kinds`): references to them go to
        #: the destination's object of the same key, when it has one.
        self.lookup = lookup or ConfigSet()
        self.existing: dict[str, dict[str, dict[str, Any]]] = {}
        self.found: dict[str, str] = {}
        self.outcome = ConfigOutcome(unserved=list(source.unserved))
        #: A function reference by the source project's name and a slug names the copy's, once
        #: the slug is among ``_slugs``: the functions and prompts the copy's project holds or
        #: gets (known after :meth:`check`).
        self._projects = {source.project_name: project["name"]} if source.project_name else None
        self._slugs: set[str] = set()
        #: Group and user ids a project score's visibility names that the destination org has
        #: no counterpart of, and why (:func:`pipeline.load.acls.map_visibility`).
        self.unmapped: dict[str, str] = {}
        #: Each source object's version -> its copy's (or its namesake's) version, as objects
        #: are written (their current ones, and the earlier ones of a prompt that something
        #: pins): a reference pinned to the one names the other.
        self.versions: dict[Pin, str] = {}
        self._pinned: set[Pin] = set()
        #: Source ids of the objects this load lists as not copied (or skips): what refers to
        #: them, made from them too, is not copied either.
        self._left_out: set[str] = set()

    async def check(self) -> None:
        """List what the destination holds; refuse a key taken by an object of another kind
        sharing its namespace (a prompt's slug held by a function, or the reverse)."""
        kinds = list(self.source.objects)
        if SHARED_KEYS & set(kinds):
            kinds += [k for k in SHARED_KEYS if k not in kinds]
        kinds += [k for k in self.lookup.objects if k not in kinds]
        found = await fetch_config(self.client, self.project, kinds)
        self.outcome.unserved += [k for k in found.unserved if k in self.source.objects]
        self.existing = {
            name: {key_of(BY_NAME[name], obj): obj for obj in objs} for name, objs in found.objects.items()
        }
        for name, objects in self.lookup.objects.items():
            for obj in objects:
                mine = self.existing.get(name, {}).get(key_of(BY_NAME[name], obj))
                if mine is not None and obj.get("id"):
                    self.found[str(obj["id"])] = str(mine["id"])
                    self._version_of(obj, mine)
        self._slugs = {
            key_of(BY_NAME[name], obj)
            for name in SHARED_KEYS
            for obj in self.source.objects.get(name, [])
            if not is_code_bundle(BY_NAME[name], obj)
        } | {key for name in SHARED_KEYS for key in self.existing.get(name, {})}
        for name, objects in self.source.objects.items():
            if name not in SHARED_KEYS or name in found.unserved:
                continue
            kind = BY_NAME[name]
            for other in SHARED_KEYS - {name}:
                taken = self.existing.get(other, {})
                for obj in objects:
                    if key_of(kind, obj) in taken and key_of(kind, obj) not in self.existing.get(name, {}):
                        raise UsageError(
                            self.client.sided(
                                f"{label(kind, obj)} cannot be written: project {self.project['name']!r} "
                                f"has a {other} with that {'/'.join(kind.key)}; rename one of them"
                            )
                        )

    async def visibility_ids(self, source: Principals | None, *, map_users: bool) -> dict[str, str]:
        """The destination's groups and users for those the project scores' visibility names
        (source id -> destination id, for ``apply``'s id map); a score naming one without a
        counterpart is not copied (:func:`pipeline.load.acls.map_visibility`). ``source``: the
        source org's view, where the load has one (a migration)."""
        found = await map_visibility(
            self.source.objects.get("project_score", []), Principals(self.client, str(self.project["org_id"])),
            source, map_users=map_users,
        )  # fmt: skip
        self.unmapped = found.missing
        return found.ids

    async def apply(self, id_map: dict[str, str], carry: Carry | None = None) -> ConfigOutcome:
        """Write every source object the destination does not already hold as it is, group by
        group; ``id_map`` (source id -> destination id) grows with each object written.
        ``carry`` copies the attachments an object (or an earlier version) refers to and
        returns it naming their copies."""
        # every version some object (or earlier version) pins: a prompt's copy is matched to
        # its source's history for them (_map_history)
        self._pinned = {
            pin
            for found in (*self.source.objects.values(), *self.source.versions.values())
            for o in found
            for pin in pins(o)
        }
        if carry is not None:
            for name, listed in self.source.objects.items():
                self.source.objects[name] = [await carry(o, label(BY_NAME[name], o)) for o in listed]
            for prompt_id, versions in self.source.versions.items():
                self.source.versions[prompt_id] = [
                    await carry(v, f"prompt {prompt_id} version") for v in versions
                ]
        labels = {
            str(o["id"]): label(BY_NAME[k], o)
            for config in (self.source, self.lookup)
            for k, objs in config.objects.items()
            for o in objs
            if o.get("id")
        }
        if self.source.project_name:  # a reference by the project's name and slug
            labels.update(
                (slug_pin(self.source.project_name, str(o["slug"])), label(BY_NAME[k], o))
                for k, objs in self.source.objects.items()
                for o in objs
                if o.get("slug")
            )
        id_map.update(self.found)
        prompt = BY_NAME["prompt"]
        for obj in self.lookup.objects.get("prompt", []):  # only looked up: its namesake's history
            mine = self.existing.get("prompt", {}).get(key_of(prompt, obj))
            if mine is not None:
                await self._map_history(prompt, obj, mine, id_map)
        for order in sorted({kind.order for kind in KINDS}):
            group = [kind for kind in KINDS if kind.order == order and kind.name in self.source.objects]
            if not group or any(kind.name in self.outcome.unserved for kind in group):
                continue
            counts = {kind.name: ConfigCount(kind.name) for kind in group}
            self.outcome.counts += counts.values()
            kind_of: dict[int, ConfigKind] = {}
            objects: list[dict[str, Any]] = []
            for kind in group:
                for obj in self.source.objects[kind.name]:
                    if is_code_bundle(kind, obj):
                        self.outcome.skipped.append(
                            f"{label(kind, obj)}: a code bundle cannot be copied; skipped"
                        )
                        self._left_out.add(str(obj.get("id")))
                        continue
                    kind_of[id(obj)] = kind
                    objects.append(obj)
            levels, cycle = ordered_levels(objects, self.source.versions, self.source.project_name)
            for obj in cycle:
                self.outcome.broken.append(f"{label(kind_of[id(obj)], obj)}: in a cycle of references")
                self._left_out.add(str(obj.get("id")))
            for level in levels:
                await self._write_level(level, kind_of, counts, id_map, labels)
        return self.outcome

    def _version_bodies(
        self, kind: ConfigKind, obj: dict[str, Any], id_map: dict[str, str]
    ) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[str]]:
        """The earlier versions of ``obj`` that can be copied, oldest first, each with its write
        request, under ``obj``'s current key (a ``PUT`` finds its object by slug, so a version
        under an older slug would make a second object); and why the others cannot."""
        bodies: list[tuple[dict[str, Any], dict[str, Any]]] = []
        left_out: list[str] = []
        for version in self.source.versions.get(str(obj.get("id")), []):
            missing = self._unresolved(version, id_map, {})
            if missing:
                left_out.append(
                    f"{label(kind, obj)}: version {version.get('_xact_id')} refers to {missing[0]}, "
                    "which was not copied; that version left out"
                )
                continue
            keyed = {**version, **{name: obj.get(name) for name in kind.key}}
            body = create_body(kind, remap(keyed, id_map, self._projects, self.versions), self.project["id"])
            bodies.append((version, body))
        return bodies, left_out

    def _version_of(self, source: dict[str, Any], copy: dict[str, Any]) -> None:
        """Record that ``copy``'s current version is what ``source``'s current one became (by
        id, and by the source project's name and slug)."""
        if source.get("_xact_id") and copy.get("_xact_id"):
            version, became = str(source["_xact_id"]), str(copy["_xact_id"])
            self.versions[str(source["id"]), version] = became
            if self.source.project_name and source.get("slug"):
                self.versions[slug_pin(self.source.project_name, str(source["slug"])), version] = became

    def _unresolved(self, obj: dict[str, Any], id_map: dict[str, str], labels: dict[str, str]) -> list[str]:
        """What ``obj`` refers to that its copy could not: ids not in ``id_map`` (named by
        ``labels``), and functions of the source project named by slug that the copy's project
        will not hold (a code bundle, which no copy carries)."""
        unknown = " (not among the objects this load copies, or not in the source project)" if labels else ""
        own = slug_pin(self.source.project_name, "") if self.source.project_name else "\0"
        missing = [labels.get(ref) or f"id {ref}{unknown}" for ref in references(obj) if ref not in id_map]
        # made from an object of the project that is not copied: its origin would name nothing
        missing += [labels.get(ref) or f"id {ref}" for ref in provenance(obj) if ref in self._left_out]
        named = slug_references(obj, self.source.project_name)
        missing += [f"{slug!r} of its project by name" for slug in named if slug not in self._slugs]
        missing += [  # a version the copy does not hold (a function's earlier one, or one left out)
            f"version {version} of {labels.get(ref) or f'id {ref}'} (not a version the copy holds)"
            for ref, version in pins(obj)
            if (ref in id_map or ref.startswith(own)) and (ref, version) not in self.versions
        ]
        return missing + [self.unmapped[i] for ids in visibility(obj) for i in ids if i in self.unmapped]

    async def _replay(
        self,
        kind: ConfigKind,
        obj: dict[str, Any],
        id_map: dict[str, str],
        start: int,
        before: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Write ``obj``'s earlier versions from the ``start``-th, oldest first, before its
        current one, so the copy keeps its history; a version whose references cannot be
        remapped is left out (listed). ``before``: the destination's object as it is; returns
        it as the last version left it."""
        bodies, left_out = self._version_bodies(kind, obj, id_map)
        self.outcome.skipped += left_out
        for _, body in bodies[start:]:
            before = await write_object(self.client, kind, body, before, self.project)
            self.outcome.versions += 1
        return before

    def _history_begun(
        self,
        kind: ConfigKind,
        obj: dict[str, Any],
        existing: dict[str, Any],
        id_map: dict[str, str],
        held: dict[str, list[dict[str, Any]]] | None,
    ) -> int | None:
        """How many of ``obj``'s earlier versions ``existing`` already holds, when its whole
        history (``held``: the destination's earlier versions by prompt id) is the first of
        them: what a run stopped while replaying them left. None otherwise (the object is then
        replaced as it is)."""
        bodies, _ = self._version_bodies(kind, obj, id_map)
        if kind.name != "prompt" or not bodies or held is None:
            return None
        history = [*held.get(str(existing.get("id")), []), existing]
        if len(history) > len(bodies):
            return None
        if all(comparable(h, {}) == comparable(b, {}) for h, (_, b) in zip(history, bodies, strict=False)):
            return len(history)
        return None

    async def _map_history(
        self, kind: ConfigKind, obj: dict[str, Any], copy: dict[str, Any], id_map: dict[str, str]
    ) -> None:
        """Record the versions of ``copy`` (a prompt's copy, written or found as it is) that
        ``obj``'s earlier versions became, where something the load copies pins one of them:
        the copy's history is read and matched to them in order, by content."""
        source_id = str(obj.get("id"))
        wanted = {v for ref, v in self._pinned if ref == source_id and (ref, v) not in self.versions}
        if kind.name != "prompt" or not wanted or not copy.get("id"):
            return
        held = await prompt_versions(self.client, self.project["id"], [copy], self.workers)
        history = [*(held or {}).get(str(copy["id"]), []), copy]  # None: a deployment that keeps none
        bodies, _ = self._version_bodies(kind, obj, id_map)
        at = 0
        for version, body in bodies:
            shown = comparable(body, {})
            while at < len(history) and comparable(history[at], {}) != shown:
                at += 1
            if at == len(history):
                return
            self._version_of(version, history[at])
            at += 1

    def _target(
        self, kind: ConfigKind, obj: dict[str, Any], id_map: dict[str, str]
    ) -> tuple[dict[str, Any] | None, dict[str, Any], bool]:
        """The destination's object of ``obj``'s key (None: none), the request writing ``obj``'s
        copy, and whether that object already equals the copy."""
        existing = self.existing.get(kind.name, {}).get(key_of(kind, obj))
        body = self._body(kind, obj, id_map, existing)
        return existing, body, existing is not None and comparable(existing, {}) == comparable(body, {})

    def _body(
        self, kind: ConfigKind, obj: dict[str, Any], id_map: dict[str, str], copy: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The request writing ``obj``'s copy; where the copy exists (``copy``), a reference
        of ``obj`` to itself (an origin naming its own earlier version) names the copy."""
        if copy is not None and obj.get("id") and copy.get("id"):
            id_map = {**id_map, str(obj["id"]): str(copy["id"])}
        return create_body(kind, remap(obj, id_map, self._projects, self.versions), self.project["id"])

    def _names_itself(self, obj: dict[str, Any]) -> bool:
        """Whether ``obj`` refers to itself (its origin naming one of its own earlier versions)."""
        own = str(obj.get("id"))
        return own in provenance(obj) or any(ref == own for ref, _ in pins(obj))

    async def _held_versions(
        self, level: list[dict[str, Any]], kind_of: dict[int, ConfigKind], id_map: dict[str, str]
    ) -> dict[str, list[dict[str, Any]]] | None:
        """The earlier versions of the destination's prompts this level replaces (they differ
        from the source's) and whose source has a history, by prompt id; one listing for all."""
        replaced = []
        for obj in level:
            kind = kind_of[id(obj)]
            if kind.name != "prompt" or not self.source.versions.get(str(obj.get("id"))):
                continue
            if not self._unresolved(obj, id_map, {}):
                existing, _, same = self._target(kind, obj, id_map)
                if existing is not None and not same:
                    replaced.append(existing)
        if not replaced:
            return {}
        return await prompt_versions(self.client, self.project["id"], replaced, self.workers)

    async def _write_level(
        self,
        level: list[dict[str, Any]],
        kind_of: dict[int, ConfigKind],
        counts: dict[str, ConfigCount],
        id_map: dict[str, str],
        labels: dict[str, str],
    ) -> None:
        limiter = anyio.CapacityLimiter(self.workers)
        written: dict[str, str] = {}
        held = await self._held_versions(level, kind_of, id_map)

        async def one(obj: dict[str, Any]) -> None:
            kind = kind_of[id(obj)]
            missing = self._unresolved(obj, id_map, labels)
            if missing:
                self.outcome.broken.append(
                    f"{label(kind, obj)}: refers to {', '.join(missing)}, which was not copied"
                )
                self._left_out.add(str(obj.get("id")))
                return
            if self._names_itself(obj) and (found := self.existing.get(kind.name, {}).get(key_of(kind, obj))):
                await self._map_history(kind, obj, found, id_map)  # its own versions, to name them
            existing, body, same = self._target(kind, obj, id_map)
            if existing is not None and same:
                counts[kind.name].unchanged += 1
                result = existing
            else:
                async with limiter:
                    begun = 0 if existing is None else self._history_begun(kind, obj, existing, id_map, held)
                    before = existing
                    if begun is not None:
                        before = await self._replay(kind, obj, id_map, begun, existing)
                    result = await write_object(self.client, kind, body, before, self.project)
                    if self._names_itself(obj):  # now that the copy and its history exist, name them
                        await self._map_history(kind, obj, result, id_map)
                        named = self._body(kind, obj, id_map, result)
                        if comparable(named, {}) != comparable(result, {}):
                            result = await write_object(self.client, kind, named, result, self.project)
                if existing is None:
                    counts[kind.name].created += 1
                else:
                    counts[kind.name].updated += 1
            if obj.get("id") and result.get("id"):
                written[str(obj["id"])] = str(result["id"])
                self._version_of(obj, result)
                await self._map_history(kind, obj, result, id_map)

        try:
            async with anyio.create_task_group() as tg:
                for obj in level:
                    tg.start_soon(one, obj)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        id_map.update(written)
