"""Keeping the last N runs of a scheduled export without breaking a chain a restore needs.

A restore reads, per object, the newest run that read all of it and every later run of its
scope (:mod:`pipeline.common.chains`). The rule, applied per project after each successful
run of a job:

    keep the newest ``keep_runs`` runs of the job, and every run the chains of the objects
    they read go back to; prune (delete the manifest, then the run's data and tombstone
    files) the job's other runs.

A run is a base only for the objects it read whole: the chains are followed object by object,
so a run that read some objects whole and others from where the last run stopped keeps what
the latter need. The job's runs are those of its *scope*: its object selection, shape and
filter. A run of another scope in the same root (an ad-hoc ``export --objects logs``, a
``--filter`` export, another job's run) is kept apart: it neither counts toward ``keep_runs``
nor lets the job prune a run its own objects still need, and the job never prunes it (whoever
made it removes it). It can still be a link of a chain: an ad-hoc export of every log row
continues the logs chain like a run of the job would, and a restore reads it as such. And the
other way round: a run of another scope may continue a chain through the job's runs (two jobs
reading the same logs share their watermark), so the job keeps every run the chains of those
runs go back to, for as long as they are there.

Runs are ordered by what they read (:func:`pipeline.common.chains.order_runs`), never by the
clock of the host that made them, so a host whose clock is behind does not prune its own runs.

Without ``full_every`` the only base is the first run, so an incremental job never prunes
anything; ``full_every = K`` makes every K-th run a full export (a new base), after which the
older chain can go. That trade-off is reported as a warning rather than silently losing old
rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.common.chains import BrokenChain, RunIndex, order_runs, scope_of
from pipeline.common.manifest import Manifest, list_manifests, manifest_path
from pipeline.common.storage import Storage
from pipeline.jobs.config import ExportJobConfig
from pipeline.jobs.runs import pruning_finished, record_pruned, unfinished_pruning


@dataclass(frozen=True)
class RunScope:
    """What a run was asked to read: its object selection (as ``--objects`` spells it), shape
    and filter ("" for none)."""

    objects: str | None
    shape: str = "spans"
    filter: str = ""


def job_scope(job: ExportJobConfig) -> RunScope:
    """The scope of ``job``'s runs (as :meth:`ExportJobConfig.export_options` asks for them)."""
    return RunScope(",".join(job.objects), job.shape, job.filter or "")


@dataclass(frozen=True)
class RunRecord:
    """One finished export run as its manifest describes it."""

    manifest: Manifest = field(repr=False)

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @property
    def project_id(self) -> str | None:
        return self.manifest.project_id

    @property
    def scope(self) -> RunScope:
        options = self.manifest.options
        return RunScope(options.get("objects"), options.get("shape") or "spans", options.get("filter") or "")

    @property
    def base(self) -> bool:
        """Every object read without ``since``: a chain of the whole selection starts here."""
        return bool(self.manifest.objects) and all(o.since_version is None for o in self.manifest.objects)

    @property
    def files(self) -> tuple[str, ...]:
        """The run's data, tombstone and configuration files, relative to the root."""
        paths: list[str] = []
        for obj in self.manifest.objects:
            paths.extend(f.path for f in obj.files)
            if obj.tombstones is not None:
                paths.append(obj.tombstones.path)
        paths.extend(entry.file.path for entry in self.manifest.config if entry.file is not None)
        return tuple(paths)


def project_runs(storage: Storage, project_id: str) -> list[RunRecord]:
    """Finished runs of ``project_id`` under ``storage``, in the order they happened."""
    records = (RunRecord(m) for m in order_runs(list_manifests(storage)))
    return [r for r in records if r.project_id == project_id]


def full_run_due(runs: list[RunRecord], full_every: int | None) -> bool:
    """True when the chain since the newest base has reached ``full_every`` runs (or has no base)."""
    if full_every is None or not runs:
        return False
    for since_base, run in enumerate(reversed(runs), start=1):
        if run.base:
            return since_base >= full_every
    return True


@dataclass(frozen=True)
class RetentionPlan:
    prune: list[RunRecord]
    keep: list[RunRecord]  # the job's runs kept
    warning: str | None
    apart: list[RunRecord] = field(default_factory=list)  # runs of another scope: left alone


def plan_retention(
    runs: list[RunRecord], keep_runs: int, scope: RunScope | None = None, full_every: int | None = None
) -> RetentionPlan:
    """Which of ``runs`` (in order) to prune so that the newest ``keep_runs`` of ``scope``
    (every run when None) remain restorable (see the module docstring). Keeping more than
    ``keep_runs`` warns, unless ``full_every`` accounts for it (a chain back to its base holds
    at most ``full_every - 1`` runs more)."""
    mine = [r for r in runs if scope is None or r.scope == scope]
    apart = [r for r in runs if r not in mine]
    if len(mine) <= keep_runs:
        return RetentionPlan(prune=[], keep=mine, warning=None, apart=apart)
    newest = mine[len(mine) - keep_runs :]
    try:
        needed = _chains_of(runs, newest)
    except BrokenChain as exc:
        return RetentionPlan(prune=[], keep=mine, warning=f"nothing pruned: {exc}", apart=apart)
    theirs = {r.run_id: _chains_of(runs, [r], broken_too=True) for r in apart}
    held = set().union(*theirs.values()) - needed  # the job's runs only other scopes need
    keep = [r for r in mine if r.run_id in needed or r.run_id in held]
    warning = None
    if len(keep) > keep_runs and any(r.run_id in held for r in keep):
        holders = sorted(run_id for run_id, chain in theirs.items() if chain & held)
        warning = (
            f"keeping {len(keep)} runs instead of {keep_runs}: run(s) of another scope go back to "
            f"some of them ({', '.join(holders)}); they are kept while those runs are there"
        )
    elif len(keep) > keep_runs and full_every is None:
        warning = (
            f"keeping {len(keep)} runs instead of {keep_runs}: the oldest kept runs are incremental and "
            f"need the full run {keep[0].run_id} (set full_every to re-base)"
        )
    elif full_every is not None and len(keep) > keep_runs + full_every - 1:
        warning = (
            f"keeping {len(keep)} runs instead of {keep_runs}: the oldest kept runs are incremental and "
            f"need the full run {keep[0].run_id}, older than full_every ({full_every}) runs allows"
        )
    return RetentionPlan(prune=[r for r in mine if r not in keep], keep=keep, warning=warning, apart=apart)


def _chains_of(runs: list[RunRecord], kept: list[RunRecord], *, broken_too: bool = False) -> set[str]:
    """The ids of ``kept`` and of every run the chains of the objects they read go back to.
    A chain already broken raises :class:`BrokenChain`, or with ``broken_too`` protects
    nothing (the runs of another scope: whatever the job prunes, they cannot be restored)."""
    index = RunIndex([r.manifest for r in runs], "the output root")
    needed = {r.run_id for r in kept}
    for run in kept:
        for obj in run.manifest.objects:
            try:
                chain = index.chain_to(obj.object_id, scope_of(run.manifest), run.run_id)
            except BrokenChain:
                if not broken_too:
                    raise
                continue
            needed.update(entry.run_id for entry in chain)
    return needed


def prune_runs(storage: Storage, runs: list[RunRecord]) -> int:
    """Delete each run's manifest, then its data and tombstone files, and whatever files an
    earlier pruning stopped before deleting; the number of files deleted.

    The runs and their files go on the root's record of pruned runs first
    (:func:`pipeline.jobs.runs.record_pruned`, which ``btpipe runs`` lists), then each manifest
    goes before its files, so that a crash part way leaves unlisted files, never a manifest that
    names missing ones; the record keeps those files until a pruning has deleted them (a glob
    over the root would still read them as rows). ``storage`` is that of the run holding the
    root's lease (:func:`pipeline.common.lease.guarded`): each write and deletion checks the
    lease first, so a run whose lease another run took over deletes nothing more
    (``LeaseLost``).
    """
    left = unfinished_pruning(storage)
    paths = [path for run in runs for path in (manifest_path(run.run_id), *run.files)]
    if not runs and not left:
        return 0
    record_pruned(storage, [run.manifest for run in runs], paths)
    deleted = 0
    for relpath in dict.fromkeys([*left, *paths]):
        try:
            storage.delete(relpath)
            deleted += 1
        except FileNotFoundError:
            pass
    pruning_finished(storage)
    return deleted
