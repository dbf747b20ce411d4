"""The runs of an export root as chains: which runs restore an object, and in which order.

An incremental run holds only the rows written since the run before it, so an object is
restored from a *chain*: the newest run that read every row of the object's scope (its
*base*) and every later run of that scope, in order. A *scope* is what a read selected, its
shape and filter (the export's watermarks are kept per object, shape and filter, so runs of
one scope follow each other); a read of another scope, such as an ad-hoc ``--filter`` export
into the same root, is no base for it and no link of its chain. A chain is followed back from
its newest run through ``previous_run``, which every run records per object, to the base;
one naming a run the root no longer holds is a broken chain, an error rather than a restore
with a hole in it. Manifests written before ``previous_run`` existed are chained by order.

Runs are ordered by what they read, never by a host's clock: a run that names another as
``previous_run`` comes after it, and a run that read an object at a newer snapshot version
than another run did comes after that run (versions only grow). Runs neither rule orders
(they read no object in common at different versions) follow the newest version they read,
then their run id.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from pipeline.common.errors import UsageError
from pipeline.common.manifest import Manifest, ObjectManifest


class BrokenChain(UsageError):
    """An incremental run continues a run the root does not hold: the rows it builds on are gone."""


@dataclass(frozen=True)
class Scope:
    """What a read selected: its shape and its filter text ("" for every row)."""

    shape: str = "spans"
    filter: str = ""

    def describe(self) -> str:
        return self.shape + (f" --filter {self.filter!r}" if self.filter else "")


#: The scope of a read of every row of an object, span by span: the only one whose base holds
#: the object's complete id set.
FULL_SCOPE: Final = Scope()


def incremental_refusal(scope: Scope) -> str | None:
    """Why an incremental read of ``scope`` cannot be complete, or None. A trace is selected by
    a span that matches the filter; read incrementally, by a span that matches it *and* is new,
    so a trace that matched before and has gained spans since, none of them matching, would
    never be read again."""
    if scope.filter and scope.shape != "spans":
        return (
            f"with --filter and --shape {scope.shape}, a run reads again only the traces where a new "
            "span itself matches the filter, so new spans of a trace that matched before would be "
            f"missed: export --shape {scope.shape} without --incremental, or --incremental with "
            "--shape spans"
        )
    return None


def format_refusal(fmt: str, shape: str) -> str | None:
    """Why ``--format fmt`` cannot hold what ``--shape shape`` reads, or None: a Delta table
    holds one row per span, and a summary row (one per trace, under its root span's id) would
    overwrite that span."""
    if fmt == "delta" and shape == "summary":
        return (
            "a Delta table holds one row per span, and a summary row (one per trace, under its root "
            "span's id) would overwrite its root span; export summaries with --format parquet or jsonl"
        )
    return None


def scope_of(manifest: Manifest) -> Scope:
    return Scope(manifest.options.get("shape") or "spans", manifest.options.get("filter") or "")


def is_complete(manifest: Manifest, obj: ObjectManifest) -> bool:
    """Whether ``manifest``'s run read every row of ``obj``: as it says, or, in a manifest
    written before it said so, read without ``since`` in the full scope."""
    if obj.complete is not None:
        return obj.complete
    return obj.since_version is None and scope_of(manifest) == FULL_SCOPE


def version_of(text: str | None) -> int | None:
    """A snapshot version (an ``_xact_id``) as a number, for comparing; None when unknown."""
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Entry:
    """One object as one run read it."""

    run: Manifest
    obj: ObjectManifest

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def scope(self) -> Scope:
        return scope_of(self.run)

    @property
    def base(self) -> bool:
        """Read without ``since``: every row of its scope, so a chain can start here."""
        return self.obj.since_version is None

    @property
    def label(self) -> str:
        if self.obj.object_type == "project_logs":
            return "logs"
        return f"{self.obj.object_type}:{self.obj.name or self.obj.object_id}"


def _newest_version(manifest: Manifest) -> int:
    versions = [v for o in manifest.objects if (v := version_of(o.snapshot_version)) is not None]
    return max(versions, default=-1)


def order_runs(manifests: Iterable[Manifest]) -> list[Manifest]:
    """``manifests`` in the order their runs happened (see the module docstring)."""
    runs = {m.run_id: m for m in manifests}
    before: dict[str, set[str]] = {run_id: set() for run_id in runs}
    by_object: dict[str, dict[int, list[str]]] = {}
    for manifest in runs.values():
        for obj in manifest.objects:
            if obj.previous_run in runs and obj.previous_run != manifest.run_id:
                before[manifest.run_id].add(obj.previous_run)
            version = version_of(obj.snapshot_version)
            if version is not None:
                by_object.setdefault(obj.object_id, {}).setdefault(version, []).append(manifest.run_id)
    for versions in by_object.values():
        groups = [versions[v] for v in sorted(versions)]
        for older, newer in pairwise(groups):
            for run_id in newer:
                before[run_id].update(r for r in older if r != run_id)
    return [runs[run_id] for run_id in _topological(before, lambda r: (_newest_version(runs[r]), r))]


def _topological(before: dict[str, set[str]], key: Callable[[str], tuple[int, str]]) -> list[str]:
    """The ids of ``before`` with every id after those it names, ties by ``key``; should the
    constraints contradict each other (only runs written at the same time, before roots had
    a lease, could make them so), the smallest remaining id by ``key`` goes next."""
    waiting = {run_id: len(names) for run_id, names in before.items()}
    followers: dict[str, list[str]] = {run_id: [] for run_id in before}
    for run_id, names in before.items():
        for name in names:
            followers[name].append(run_id)
    ready = [(key(r), r) for r, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    remaining = set(before)
    ordered: list[str] = []
    while remaining:
        if ready:
            _, run_id = heapq.heappop(ready)
            if run_id not in remaining:
                continue
        else:
            run_id = min(remaining, key=key)
        remaining.discard(run_id)
        ordered.append(run_id)
        for follower in followers[run_id]:
            waiting[follower] -= 1
            if waiting[follower] == 0 and follower in remaining:
                heapq.heappush(ready, (key(follower), follower))
    return ordered


class RunIndex:
    """The runs of one root in order, and what each read of each object; ``where`` names the
    root in messages."""

    def __init__(self, manifests: Iterable[Manifest], where: str) -> None:
        self.where = where
        self.runs = order_runs(manifests)
        self.position = {m.run_id: i for i, m in enumerate(self.runs)}
        self._entries: dict[str, list[Entry]] = {}
        for manifest in self.runs:
            for obj in manifest.objects:
                if not obj.gone:  # deleted at the source while the run read it: it holds nothing of it
                    self._entries.setdefault(obj.object_id, []).append(Entry(manifest, obj))

    def until(self, run_id: str) -> RunIndex:
        """The index of the runs up to ``run_id``, inclusive (``--until``)."""
        if run_id not in self.position:
            newest = ", ".join(m.run_id for m in self.runs[-3:]) or "none"
            raise UsageError(f"--until: no run {run_id} in {self.where} (the newest runs: {newest})")
        return RunIndex(self.runs[: self.position[run_id] + 1], self.where)

    def objects(self) -> list[ObjectManifest]:
        """Each object read by some run, as the newest read of it describes it, in the order
        objects were first read."""
        return [entries[-1].obj for entries in self._entries.values()]

    def entries(self, object_id: str, scope: Scope | None = None) -> list[Entry]:
        """The reads of ``object_id``, oldest first; only those of ``scope`` when given."""
        found = self._entries.get(object_id, [])
        return found if scope is None else [e for e in found if e.scope == scope]

    def restore_chain(self, object_id: str) -> list[Entry]:
        """The runs that restore ``object_id`` as its newest run read it: the chain of its full
        scope, or of its only scope when it was never read whole."""
        entries = self.entries(object_id)
        scopes = list(dict.fromkeys(e.scope for e in entries))
        if FULL_SCOPE in scopes:
            scope = FULL_SCOPE
        elif len(scopes) == 1:
            scope = scopes[0]
        else:
            read = "; ".join(s.describe() for s in scopes)
            raise UsageError(
                f"{entries[-1].label}: {self.where} holds only partial reads of it ({read}), which "
                "cannot be combined; import one run's manifest (--in ROOT/_manifests/RUN.json)"
            )
        in_scope = self.entries(object_id, scope)
        return self._back_from(in_scope, len(in_scope) - 1, "; restore --until an earlier run")

    def chain_to(self, object_id: str, scope: Scope, run_id: str | None, remedy: str = "") -> list[Entry]:
        """The chain ending at ``run_id``'s read of ``object_id`` in ``scope``: what a run
        continuing it builds on. A :class:`BrokenChain` ends with ``remedy``."""
        in_scope = self.entries(object_id, scope)
        for index, entry in enumerate(in_scope):
            if entry.run_id == run_id:
                return self._back_from(in_scope, index, remedy)
        label = in_scope[-1].label if in_scope else object_id
        raise BrokenChain(
            f"{label}: this run continues run {run_id}, which is not in {self.where} (pruned or deleted)"
            + remedy
        )

    def _back_from(self, in_scope: list[Entry], index: int, remedy: str) -> list[Entry]:
        """From ``in_scope[index]`` back through the runs each names as its previous one to
        the base; oldest first. A :class:`BrokenChain` ends with ``remedy``."""
        by_run = {entry.run_id: i for i, entry in enumerate(in_scope)}
        chain = [in_scope[index]]
        while not chain[-1].base:
            current = chain[-1]
            previous = current.obj.previous_run
            if previous is None:  # a manifest from before runs named it: the read before
                index -= 1
                if index < 0:
                    raise BrokenChain(
                        f"{current.label}: run {current.run_id} holds only rows written after an earlier "
                        f"run, and {self.where} holds no earlier run of it{remedy}"
                    )
            elif by_run.get(previous, len(in_scope)) < index:
                index = by_run[previous]
            else:
                raise BrokenChain(
                    f"{current.label}: run {current.run_id} continues run {previous}, which is not in "
                    f"{self.where} (pruned or deleted){remedy}"
                )
            chain.append(in_scope[index])
        return chain[::-1]
