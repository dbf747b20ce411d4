"""Keeping the last N runs of a scheduled export without breaking an incremental chain.

An incremental run holds only the rows written since the run before it, so a restore needs
the newest *full* run (a base: every object read without a ``since`` version) and every run
after it. The rule, applied per project after each successful run:

    keep the newest ``keep_runs`` runs, and every run back to the newest base at or before
    the oldest of them; prune (delete the manifest, then the run's data files) the rest.

Nothing a restore needs is ever deleted. Without ``full_every`` the only base is the first
run, so an incremental job never prunes anything; ``full_every = K`` makes every K-th run a
full export (a new base), after which the older chain can go. That trade-off is reported as a
warning rather than silently losing old rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.common.manifest import Manifest, list_manifests, manifest_path
from pipeline.common.storage import Storage


@dataclass(frozen=True)
class RunRecord:
    """One finished export run as its manifest describes it."""

    run_id: str
    started_at: str
    project_id: str | None
    manifest: str
    files: tuple[str, ...]
    base: bool

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> RunRecord:
        project_ids = {o.project_id for o in manifest.objects if o.project_id}
        project_id = manifest.options.get("project_id") or (
            project_ids.pop() if len(project_ids) == 1 else None
        )
        return cls(
            run_id=manifest.run_id,
            started_at=manifest.started_at,
            project_id=project_id,
            manifest=manifest_path(manifest.run_id),
            files=tuple(f.path for o in manifest.objects for f in o.files),
            base=bool(manifest.objects) and all(o.since_version is None for o in manifest.objects),
        )


def project_runs(storage: Storage, project_id: str) -> list[RunRecord]:
    """Finished runs of ``project_id`` under ``storage``, oldest first."""
    records = (RunRecord.from_manifest(m) for m in list_manifests(storage))
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
    keep: list[RunRecord]
    warning: str | None


def plan_retention(runs: list[RunRecord], keep_runs: int) -> RetentionPlan:
    """Which runs to prune so that ``keep_runs`` remain restorable (see the module docstring)."""
    if len(runs) <= keep_runs:
        return RetentionPlan(prune=[], keep=list(runs), warning=None)
    first_kept = len(runs) - keep_runs
    while first_kept > 0 and not runs[first_kept].base:
        first_kept -= 1
    warning = None
    if first_kept < len(runs) - keep_runs:
        warning = (
            f"keeping {len(runs) - first_kept} runs instead of {keep_runs}: the oldest kept runs are "
            f"incremental and need the full run {runs[first_kept].run_id} (set full_every to re-base)"
        )
    return RetentionPlan(prune=runs[:first_kept], keep=runs[first_kept:], warning=warning)


def prune_runs(storage: Storage, runs: list[RunRecord]) -> int:
    """Delete each run's manifest, then its data files; the number of files deleted.

    The manifest goes first so that a crash part way leaves unlisted files, never a manifest
    that names missing ones.
    """
    deleted = 0
    for run in runs:
        for relpath in (run.manifest, *run.files):
            try:
                storage.delete(relpath)
                deleted += 1
            except FileNotFoundError:
                pass
    return deleted
