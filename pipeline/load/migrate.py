"""``btpipe migrate``: copy a project's logs, datasets, experiments and configuration objects
to another project, possibly in another org on another API URL, with no files in between.

    source pager (pinned snapshot version) -> parse + transform + encode (thread)
        -> batcher -> the import's insert pool -> ledger

Destination datasets are created first, then experiments in base-before-derived order, so
``base_exp_id`` and ``dataset_id`` can be remapped to destination ids
(:mod:`pipeline.load.destinations`); one the destination already has under the same name is
written into only with ``into_existing``. The configuration objects (prompts, functions, ...)
are read and checked against the destination before anything is written, and recreated once
the datasets and experiments exist, their ids remapped (:mod:`pipeline.load.config`); with
``acls``, the grants on the copies follow (:mod:`pipeline.load.acls`).

Resume: per source object the state keeps the snapshot version and the cursor of the last page
whose rows are all in the applied prefix; a resumed run pages from that cursor under the same
version, so no row is skipped and only rows after the checkpoint are sent again (harmless: ids
are kept, inserts upsert). The configuration is applied again on a resumed run, which changes
only what is not yet as the source has it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from pipeline.api.btql import Pager, build_query
from pipeline.api.client import BraintrustClient
from pipeline.api.config import fetch_config
from pipeline.api.objects import ObjectRef, list_objects, resolve_project, resolve_selection
from pipeline.api.principals import Principals
from pipeline.api.snapshot import pin_read
from pipeline.common import defaults, jsoncodec
from pipeline.common.config_kinds import lookup_kinds
from pipeline.common.object_fields import COPIED_KINDS
from pipeline.common.progress import Progress
from pipeline.common.rows import ObjectType
from pipeline.common.selection import config_selection, parse_selection
from pipeline.common.state import ObjectProgress
from pipeline.load.acls import AclCopy, AclTarget
from pipeline.load.attachments import AttachmentCopier, SourceAttachments
from pipeline.load.batcher import Item
from pipeline.load.config import ConfigCopy
from pipeline.load.destinations import (
    VersionLink,
    Wanted,
    counterparts,
    ensure_objects,
    experiments_in_dependency_order,
    link_dataset_versions,
    link_parameters,
)
from pipeline.load.insert import feed
from pipeline.load.run import LoadOptions, LoadRun, LoadSummary, ObjectResult
from pipeline.load.transform import SourceObject, comment_rows, encode_checked, logs3_merges, to_event


@dataclass(frozen=True)
class MigrateOptions:
    from_project: str
    to_project: str
    objects: str = defaults.OBJECTS.default
    create_project: bool = defaults.CREATE_PROJECT.default
    page_limit: int = defaults.PAGE_LIMIT.default
    acls: bool = defaults.ACLS.default
    map_users: bool = defaults.MAP_USERS.default
    load: LoadOptions = field(default_factory=LoadOptions)


def order_for_creation(refs: list[ObjectRef]) -> list[ObjectRef]:
    """Datasets, then experiments (bases first), then the project logs."""
    datasets = [r for r in refs if r.object_type == "dataset"]
    by_id = {r.id: r for r in refs if r.object_type == "experiment"}
    experiments = [by_id[i["id"]] for i in experiments_in_dependency_order([r.info for r in by_id.values()])]
    logs = [r for r in refs if r.object_type == "project_logs"]
    return datasets + experiments + logs


def version_links(
    plans: list[tuple[ObjectRef, ObjectRef, bool]], copied_at: dict[str, str | None]
) -> list[VersionLink]:
    """Each migrated experiment whose source pinned a ``dataset_version`` of a dataset migrated
    with it, with the version that dataset's rows were read at (``copied_at``, by source id)."""
    datasets = {ref.id: (ref, dest) for ref, dest, _ in plans if ref.object_type == "dataset"}
    links = []
    for ref, dest, _ in plans:
        dataset = datasets.get(ref.info.get("dataset_id") or "")
        pinned = ref.info.get("dataset_version")
        if ref.object_type == "experiment" and dataset is not None and pinned is not None:
            source, copy = dataset
            links.append(VersionLink(dest, copy, source.label, str(pinned), copied_at.get(source.id)))
    return links


def page_items(raw: bytes, source: SourceObject, cursor: str | None, label: str) -> list[Item]:
    """One ``fmt=jsonl`` page as items; the last carries the page cursor as its mark."""
    items = []
    for number, row in enumerate(jsoncodec.loads_lines(raw), 1):
        data, refused = encode_checked(to_event(row, source))
        where = f"{label} page row {number}"
        items.append(
            Item(
                data,
                str(row.get("id")),
                where,
                refused=refused,
                comments=comment_rows(row),
                merges=logs3_merges(row),
            )
        )
    if items:
        items[-1] = replace(items[-1], mark=cursor)
    return items


class MigrateJob:
    def __init__(
        self,
        source: BraintrustClient,
        destination: BraintrustClient,
        options: MigrateOptions,
        progress: Progress,
    ) -> None:
        self.source = source
        self.destination = destination
        self.options = options
        self.progress = progress
        self._copies: dict[str, str] = {}  # the objects copied, source id -> destination id
        progress.watch_retries(source)

    async def run(self) -> LoadSummary:
        """The migration, holding its state file's lease from before the state is read until it
        ends, however it ends (:meth:`LoadRun.begin`)."""
        async with AsyncExitStack() as exits:
            return await self._run(exits)

    async def _run(self, exits: AsyncExitStack) -> LoadSummary:
        started = time.monotonic()
        opts = self.options
        src_project = await resolve_project(self.source, opts.from_project)
        refs = order_for_creation(await resolve_selection(self.source, src_project, opts.objects))
        source = {
            "source_api_url": self.source.base_url,
            "source_project": src_project["id"],
            "objects": opts.objects,
        }
        run, dst_project = await LoadRun.begin(
            self.destination, opts.load, self.progress, exits=exits,
            job="migrate", source=source, to_project=opts.to_project, create_project=opts.create_project,
            attachments=SourceAttachments(self.source, str(src_project.get("org_id") or ""), opts.load.attachment_limit),
            description=src_project.get("description"),
        )  # fmt: skip
        state = run.state
        config = await self._config_copy(src_project, dst_project)

        async def remember(key: str, destination_id: str) -> None:
            state.created[key] = destination_id
            await state.save()

        wanted = [
            Wanted(f"{ref.object_type}:{ref.id}", ref.object_type, ref.name,
                   await run.attachments.carried(ref.info, ref.label))
            for ref in refs
        ]  # fmt: skip
        uncopied = await self._uncopied(src_project, refs)
        elsewhere = await counterparts(
            self.destination, dst_project, uncopied, run.summary.warnings, [ref.info for ref in refs]
        )
        destinations = await ensure_objects(
            self.destination, dst_project, wanted, id_map={src_project["id"]: dst_project["id"], **elsewhere},
            into_existing=opts.load.into_existing, ours=state.created, remember=remember,
            warnings=run.summary.warnings, verb="migrated",
        )  # fmt: skip
        plans = [
            (ref, destinations[w.key].ref, destinations[w.key].created)
            for w, ref in zip(wanted, refs, strict=True)
        ]
        self._copies = {**elsewhere, **{ref.id: dest.id for ref, dest, _ in plans}}
        id_map = {src_project["id"]: dst_project["id"], **self._copies}
        acls = AclCopy(self.source, self.destination, dst_project, map_users=opts.map_users)
        if opts.acls:  # groups first: a project score's visibility may name them
            await acls.groups(src_project)
        if config is not None:
            source_org = Principals(self.source, str(src_project["org_id"]))
            id_map.update(await config.visibility_ids(source_org, map_users=opts.map_users))
            run.summary.add_config(await config.apply(id_map, run.attachments.carried))
        await link_parameters(self.destination, [(ref.info, dest) for ref, dest, _ in plans if ref.object_type == "experiment"],
                              id_map, run.summary.warnings, None if config is None else config.versions)  # fmt: skip
        if opts.acls:
            await self._copy_acls(run, acls, src_project, dst_project, plans, config, id_map)
        results: list[ObjectResult] = []
        copied_at: dict[str, str | None] = {}  # source id -> the snapshot version its rows were read at

        async def produce() -> None:
            for ref, dest, created in plans:
                key = f"{ref.object_type}:{ref.id}"
                record = state.objects.get(key)
                if record is None or record.destination != dest.id:
                    query = build_query(ref.object_type, ref.id)
                    snap = await pin_read(self.source, query)
                    record = ObjectProgress(
                        destination=dest.id, version=snap.version, expected=snap.rows if snap.exact else None
                    )
                    state.objects[key] = record
                    await state.save()
                copied_at[ref.id] = record.version
                task = self.progress.add(f"{ref.label} -> {dest.label}", record.expected, done=record.rows)
                if record.expected != 0:
                    batcher = run.batcher(record, dest, task)
                    await feed(run.pool, batcher, self._chunks(ref, record, run.attachments))
                task.finish()
                results.append(ObjectResult(ref.label, dest.label, dest.id, created, 0, 0))

        keys = [f"{ref.object_type}:{ref.id}" for ref, _dest, _created in plans]

        async def link_versions(summary: LoadSummary) -> None:
            await link_dataset_versions(self.destination, version_links(plans, copied_at), summary.warnings)

        return await run.complete(produce, started, keys, results, link_versions)

    async def _uncopied(
        self, src_project: dict[str, Any], refs: list[ObjectRef]
    ) -> dict[str, tuple[ObjectType, str]]:
        """The source's datasets and experiments the selection leaves out (id -> kind and
        name): references to them go to the destination's namesakes (:func:`counterparts`)."""
        kinds = {s.object_type for s in parse_selection(self.options.objects) if s.name is None}
        copied = {ref.id for ref in refs}
        return {
            obj["id"]: (kind, obj["name"])
            for kind in COPIED_KINDS
            if kind not in kinds
            for obj in [o async for o in list_objects(self.source, kind, src_project["id"])]
            if obj["id"] not in copied
        }

    async def _config_copy(
        self, src_project: dict[str, Any], dst_project: dict[str, Any]
    ) -> ConfigCopy | None:
        """The configuration the selection names, read from the source and checked against
        the destination before anything is written (None when it names none)."""
        kinds = config_selection(self.options.objects)
        if not kinds:
            return None
        workers = self.options.load.config_workers
        lookup = lookup_kinds(kinds)
        found = await fetch_config(self.source, src_project, kinds + lookup, versions=True, workers=workers)
        copy = ConfigCopy(self.destination, dst_project, found, workers=workers, lookup=found.take(lookup))
        await copy.check()
        return copy

    async def _copy_acls(
        self,
        run: LoadRun,
        copy: AclCopy,
        src_project: dict[str, Any],
        dst_project: dict[str, Any],
        plans: list[tuple[ObjectRef, ObjectRef, bool]],
        config: ConfigCopy | None,
        id_map: dict[str, str],
    ) -> None:
        """``--acls``: the grants on the project, the copied datasets and experiments, and the
        copied prompts (:mod:`pipeline.load.acls`), by ``copy``, which copied the groups."""
        targets = [
            AclTarget("project", src_project["id"], dst_project["id"], f"project {dst_project['name']!r}")
        ]
        targets += [
            AclTarget(ref.object_type, ref.id, dest.id, ref.label)
            for ref, dest, _ in plans
            if ref.object_type != "project_logs"
        ]
        prompts = config.source.objects.get("prompt", []) if config is not None else []
        targets += [
            AclTarget("prompt", p["id"], id_map[p["id"]], f"prompt {p['slug']!r}")
            for p in prompts
            if p["id"] in id_map
        ]
        outcome = await copy.copy(src_project, targets)
        run.summary.acls = outcome
        run.summary.warnings += [f"ACL not copied: {line}" for line in outcome.not_copied]

    async def _chunks(
        self, ref: ObjectRef, record: ObjectProgress, attachments: AttachmentCopier
    ) -> AsyncIterator[list[Item]]:
        pager = Pager(
            self.source,
            build_query(ref.object_type, ref.id),
            version=record.version,
            cursor=record.cursor,
            max_limit=self.options.page_limit,
            limit=self.options.page_limit,
        )
        source = SourceObject(ref.object_type, ref.id, self._copies)
        async for page in pager.pages():
            items = await anyio.to_thread.run_sync(page_items, page.raw, source, page.cursor, ref.label)
            yield await attachments.rewrite(items)
