"""``btpipe import``: export files back into a project through the insert endpoints.

    find inputs -> one project, spans only -> destination objects (created by name when
    missing, in dependency order) -> per object, in file order: read a chunk (thread)
    -> transform + encode -> batcher -> insert pool -> ledger -> dataset versions linked

Before anything is written the input's manifests are checked (:mod:`pipeline.load.scope`):
a run of another shape than ``spans`` is refused, and a root holding several source projects
needs ``from_project``. Destination objects are created as a migration creates them
(:mod:`pipeline.load.destinations`): datasets, then experiments base first, so every
``dataset_id`` and ``base_exp_id`` is remapped whatever the ``--objects`` order; an existing
object of the same name needs ``into_existing``. The project's configuration objects come from
the newest run holding each kind (:mod:`pipeline.sources.config`) and are recreated as a
migration recreates them (:mod:`pipeline.load.config`).

Objects are read one after another through one shared pool of insert workers. The checkpoint
of an object is ``(file, position)`` of the last row of the applied prefix, plus ``rows``;
a resumed run skips the files before that file without opening them and the rows up to that
position inside it (:class:`~pipeline.common.state.FilePosition`). See
:mod:`pipeline.common.jobstate` for where the state file lives.

Before anything is sent, every file still to be read that a manifest lists is checked against
its manifest entry (:mod:`pipeline.common.integrity`): a damaged one stops the import before
its first row (:class:`~pipeline.common.errors.DamagedFileError`), or, with
``skip_damaged``, leaves out the objects holding one, whole, and lists them in the summary.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Protocol

import anyio

from pipeline.api.client import BraintrustClient
from pipeline.api.objects import ObjectRef
from pipeline.common import defaults
from pipeline.common.config_kinds import lookup_kinds
from pipeline.common.errors import DamagedFileError, UsageError
from pipeline.common.integrity import Damage
from pipeline.common.jobstate import JobState
from pipeline.common.progress import Progress
from pipeline.common.rows import ObjectType
from pipeline.common.selection import config_selection, parse_one_object
from pipeline.common.state import FilePosition, ObjectProgress
from pipeline.common.storage import Storage, location
from pipeline.load.attachments import AttachmentCopier, ExportedAttachments
from pipeline.load.batcher import Item
from pipeline.load.config import ConfigCopy
from pipeline.load.destinations import (
    Destination,
    VersionLink,
    Wanted,
    counterparts,
    ensure_objects,
    link_dataset_versions,
    link_parameters,
)
from pipeline.load.ordered import (
    CommentLedger,
    delete_item,
    feed_runs,
    note_given,
    renewed_deletes,
    replay_given,
    run_spans,
)
from pipeline.load.run import LoadOptions, LoadRun, LoadSummary, ObjectResult
from pipeline.load.scope import (
    InputScope,
    chosen_project,
    one_project,
    read_scope,
    refuse_other_shapes,
    refuse_other_shapes_within,
)
from pipeline.load.transform import SourceObject, comment_rows, encode_checked, logs3_merges, to_event
from pipeline.sources import SourceRow, iter_rows
from pipeline.sources.config import damaged_config, find_config, read_config
from pipeline.sources.inputs import InputObject, find_damaged, find_inputs, open_input, select_inputs


@dataclass(frozen=True)
class ImportOptions:
    input: str
    to_project: str
    objects: str | None = None
    to_object: str | None = None
    create_project: bool = defaults.CREATE_PROJECT.default
    skip_damaged: bool = False  # import the objects whose files all check out, list the others
    until: str | None = None  # a run id of the root: restore it as of that run
    from_project: str | None = None  # the source project (name or id) of a root holding several
    load: LoadOptions = field(default_factory=LoadOptions)


class ObjectLoader(Protocol):
    """Loads one input object somewhere else than in this process (``pipeline.ray`` runs it
    as a task of a Ray cluster): it reads ``obj``'s files from ``record``'s mark on, inserts
    them into ``ref``, and hands each newer checkpoint of ``record`` to ``save``, in order,
    with the attachments it copied so far (source key -> destination key). ``copies``: the
    objects the import copies (source id -> destination id), for the rows' ``origin``."""

    async def __call__(
        self,
        job: ImportJob,
        obj: InputObject,
        ref: ObjectRef,
        record: ObjectProgress,
        copies: Mapping[str, str],
        save: Callable[[ObjectProgress, dict[str, str]], Awaitable[None]],
    ) -> None: ...


class ImportJob:
    def __init__(
        self,
        client: BraintrustClient,
        options: ImportOptions,
        progress: Progress,
        *,
        objects: ObjectLoader | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.progress = progress
        self._objects = objects  # None: objects are loaded in this process, one after another
        self.storage: Storage
        self.request_limit = 0
        self.load_run: LoadRun  # the state, pool and attachment copier of the run

    async def run(self) -> LoadSummary:
        """The import, holding its state file's lease from before the state is read until it
        ends, however it ends (:meth:`LoadRun.begin`)."""
        async with AsyncExitStack() as exits:
            return await self._run(exits)

    async def _run(self, exits: AsyncExitStack) -> LoadSummary:
        started = time.monotonic()
        opts = self.options
        storage, prefix = await anyio.to_thread.run_sync(open_input, opts.input)
        self.storage = storage
        found = await anyio.to_thread.run_sync(find_inputs, storage, prefix, opts.until)
        scope = await anyio.to_thread.run_sync(read_scope, storage, prefix, opts.until)
        project_id = chosen_project(scope, opts.from_project, opts.input)
        inputs = select_inputs(one_project(scope, found, project_id), opts.objects)
        kinds = config_selection(opts.objects)
        config = await anyio.to_thread.run_sync(
            find_config, storage, prefix, kinds + lookup_kinds(kinds), opts.until, project_id
        )
        if not inputs and not any(k in config.entries for k in kinds):
            raise UsageError(f"{opts.input}: the input holds no objects to import")
        refuse_other_shapes(scope, inputs, opts.input)
        await anyio.to_thread.run_sync(refuse_other_shapes_within, opts.input, inputs)
        to_object = parse_one_object(opts.to_object) if opts.to_object else None
        if to_object is not None and len(inputs) > 1:
            raise UsageError(f"--to-object names one destination but the input holds {len(inputs)} objects")
        for obj in inputs:
            if obj.object_type is None and to_object is None:
                raise UsageError(
                    f"{obj.files[0]}: not in an export's object_type=/object_id= layout; pass --to-object"
                )
        source = {
            "input": location(storage, prefix) if prefix else storage.url,
            "objects": opts.objects,
            "to_object": opts.to_object,
            **({"until": opts.until} if opts.until else {}),
            **({"from_project": opts.from_project} if opts.from_project else {}),
        }
        damaged: list[Damage] = []

        async def check(saved: JobState) -> None:
            """Damaged or malformed input stops the import before the project is created."""
            damaged.extend(await self._damaged(storage, inputs, saved.objects))
            config_damage = await damaged_config(storage, config)
            for damage in config_damage:
                config.entries = {
                    k: e for k, e in config.entries.items() if e.file is None or e.file.path != damage.path
                }
            damaged.extend(config_damage)
            if damaged and not opts.skip_damaged:
                others = len(damaged) - 1
                more = f" ({others} more damaged file{'s' if others > 1 else ''})" if others else ""
                raise DamagedFileError(
                    f"{damaged[0]}{more}; no rows were sent (--skip-damaged imports the other objects)"
                )

        run, project = await LoadRun.begin(
            self.client, opts.load, self.progress, exits=exits,
            job="import", source=source, to_project=opts.to_project, create_project=opts.create_project,
            attachments=ExportedAttachments(storage, opts.load.attachment_limit), check=check,
        )  # fmt: skip
        state = run.state
        self.load_run = run
        run.summary.damaged = [str(d) for d in damaged]
        broken = {d.path for d in damaged}
        inputs = [obj for obj in inputs if broken.isdisjoint(obj.files)]

        copy = None
        if any(k in config.entries for k in kinds):
            objects = await anyio.to_thread.run_sync(read_config, storage, config)
            lookup = objects.take(lookup_kinds(kinds))
            copy = ConfigCopy(self.client, project, objects, workers=opts.load.config_workers, lookup=lookup)
            await copy.check()

        async def remember(key: str, destination_id: str) -> None:
            state.created[key] = destination_id
            await state.save()

        copied = {obj.id for obj in inputs}
        uncopied = {k: v for k, v in scope.named_objects(project_id).items() if k not in copied}
        elsewhere = await counterparts(
            self.client, project, uncopied, run.summary.warnings, [o.info for o in inputs]
        )
        wanted = [_wanted(obj, to_object) for obj in inputs]
        wanted = [
            replace(w, info=await run.attachments.carried(w.info, f"{w.kind} {w.name!r}")) for w in wanted
        ]
        destinations = await ensure_objects(
            self.client, project, wanted, id_map=dict(elsewhere),
            into_existing=opts.load.into_existing, ours=state.created, remember=remember,
            warnings=run.summary.warnings, verb="imported",
        )  # fmt: skip
        plans = [(obj, destinations[obj.key].ref, destinations[obj.key].created) for obj in inputs]
        copies = {
            **elsewhere,
            **{obj.id: ref.id for obj, ref, _ in plans if obj.id is not None},
        }  # for origins
        id_map = dict(copies)  # and the configuration, as it is written
        if copy is not None:
            if config.project_id is not None:
                id_map[config.project_id] = project["id"]
            id_map.update(await copy.visibility_ids(None, map_users=False))  # no source org to ask
            run.summary.add_config(await copy.apply(id_map, run.attachments.carried))
        await link_parameters(self.client, [(obj.info, ref) for obj, ref, _ in plans if obj.object_type == "experiment"],
                              id_map, run.summary.warnings, None if copy is None else copy.versions)  # fmt: skip
        results = [ObjectResult(obj.label, ref.label, ref.id, created, 0, 0) for obj, ref, created in plans]
        self.request_limit = run.summary.request_limit

        async def load(obj: InputObject, ref: ObjectRef) -> None:
            record = state.objects.setdefault(obj.key, ObjectProgress(destination=ref.id))
            if record.destination != ref.id:
                raise UsageError(
                    f"{state.location}: {obj.label} was being imported into another object; pass --restart"
                )
            task = self.progress.add(f"{obj.label} -> {ref.label}", obj.rows, done=record.rows)
            if self._objects is None:
                batcher = run.batcher(record, ref, task)
                await feed_runs(
                    run.pool,
                    batcher,
                    object_runs(storage, obj, ref, record.position, run.attachments, copies),
                )
            else:

                async def save(newer: ObjectProgress, attachments: dict[str, str]) -> None:
                    task.advance(newer.rows - state.objects[obj.key].rows)
                    state.objects[obj.key] = newer
                    run.attachments.mapping.update(attachments)
                    await state.save()

                await self._objects(self, obj, ref, record, copies, save)
            task.finish()
            await state.save()

        async def produce() -> None:
            if self._objects is None:
                for obj, ref, _created in plans:
                    await load(obj, ref)
                return
            async with anyio.create_task_group() as tg:  # each object in a task of its own
                for obj, ref, _created in plans:
                    tg.start_soon(load, obj, ref)

        async def link_versions(summary: LoadSummary) -> None:
            await link_dataset_versions(
                self.client, _version_links(inputs, destinations, scope), summary.warnings
            )

        summary = await run.complete(
            produce, started, [obj.key for obj, _ref, _created in plans], results, link_versions
        )
        if self._objects is not None:
            summary.comments = None  # sent by the tasks that loaded the objects, not counted here
        return summary

    @staticmethod
    async def _damaged(
        storage: Storage, inputs: list[InputObject], progress: dict[str, ObjectProgress]
    ) -> list[Damage]:
        """The input files still to be read (from a resumed object's mark on) that differ from
        their manifest entry."""
        damaged: list[Damage] = []
        for obj in inputs:
            record = progress.get(obj.key)
            mark = record.position if record is not None else None
            start = obj.files.index(mark.path) if mark is not None and mark.path in obj.files else 0
            damaged += await find_damaged(storage, obj, start)
        return damaged


def object_runs(
    storage: Storage,
    obj: InputObject,
    ref: ObjectRef,
    mark: FilePosition | None,
    attachments: AttachmentCopier,
    copies: Mapping[str, str],
) -> Iterator[AsyncIterator[list[Item]]]:
    """A reader of ``obj``'s items for ``ref`` per run (:mod:`pipeline.load.ordered`), from
    ``mark`` on, their attachments copied by ``attachments``: what an import feeds its
    batcher, in this process or in a Ray task. Before each run, the deletes of the rows it
    writes again that lost comments at the source go out as a run of their own. ``copies``:
    the objects the load copies (source id -> destination id), for the rows' ``origin``."""
    source = SourceObject(obj.object_type or ref.object_type, obj.id, copies)
    files = obj.files
    start_file, after = 0, -1
    if mark is not None:
        if mark.path not in files:
            raise UsageError(f"{mark.path}: in the saved state but not in the input any more; pass --restart")
        start_file, after = files.index(mark.path), mark.position
    spans = run_spans(files, obj.runs, start_file)
    if len(spans) <= 1:  # no later run to write a row again: no comments to keep track of
        yield from (_chunks(storage, obj, source, span, after, attachments, None) for span in spans)
        return
    ledger = CommentLedger()
    try:
        # A resumed restore applied the deletes of its mark's run before that run's rows; those
        # of a later run need what the earlier runs gave.
        if mark is not None:
            yield _replayed(ledger, storage, obj, (mark.path, mark.position))
        for span in spans:
            skip_to = after if span.start == start_file else -1
            data = [files[i] for i in span if files[i] not in obj.deletes]
            first = skip_to if data and data[0] == files[span.start] else -1
            yield renewed_deletes(storage, obj, data, first, ledger)
            yield _chunks(storage, obj, source, span, skip_to, attachments, ledger)
    finally:
        ledger.close()


async def _replayed(
    ledger: CommentLedger, storage: Storage, obj: InputObject, upto: tuple[str, int]
) -> AsyncIterator[list[Item]]:
    """No items: notes in ``ledger`` the comments a resumed restore gave before it stopped."""
    await anyio.to_thread.run_sync(replay_given, ledger, storage, obj, upto)
    return
    yield


async def _chunks(
    storage: Storage,
    obj: InputObject,
    source: SourceObject,
    span: range,
    after: int,
    attachments: AttachmentCopier,
    ledger: CommentLedger | None,
) -> AsyncIterator[list[Item]]:
    """The items of ``obj.files[i]`` for each ``i`` of ``span``, after row ``after`` of the first."""
    for index in span:
        path = obj.files[index]
        skip_to = after if index == span.start else -1
        deletes = path in obj.deletes
        reader = iter_rows(storage, path, table=obj.table)
        while True:
            items = await anyio.to_thread.run_sync(
                _next_items, reader, source, storage, skip_to, deletes, ledger
            )
            if items is None:
                break
            if items:
                yield await attachments.rewrite(items)


def _wanted(obj: InputObject, to_object: tuple[ObjectType, str | None] | None) -> Wanted:
    """The destination ``obj`` goes to. Its ``dataset_version`` is left out: a source version
    means nothing at the destination (see :func:`_version_links`)."""
    kind = to_object[0] if to_object else obj.object_type
    assert kind is not None
    name = (to_object[1] if to_object else None) or obj.name or obj.id or "imported"
    info = {key: value for key, value in obj.info.items() if key != "dataset_version"}
    if obj.id is not None:
        info["id"] = obj.id
    return Wanted(obj.key, kind, name, info, counterpart=to_object is None)


def _version_links(
    inputs: list[InputObject], destinations: dict[str, Destination], scope: InputScope
) -> list[VersionLink]:
    """Each imported experiment whose source pinned a ``dataset_version`` of a dataset imported
    with it, with the version that dataset was exported at."""
    datasets = {obj.id: obj for obj in inputs if obj.id is not None and obj.object_type == "dataset"}
    links = []
    for obj in inputs:
        experiment = destinations[obj.key].ref
        dataset = datasets.get(obj.info.get("dataset_id") or "")
        pinned = obj.info.get("dataset_version")
        if experiment.object_type == "experiment" and dataset is not None and pinned is not None:
            links.append(VersionLink(experiment, destinations[dataset.key].ref, dataset.label, str(pinned),
                                     scope.exported_version(dataset.id)))  # fmt: skip
    return links


def _next_items(
    reader: Iterator[list[SourceRow]],
    source: SourceObject,
    storage: Storage,
    skip_to: int,
    deletes: bool,
    ledger: CommentLedger | None,
) -> list[Item] | None:
    """Read one chunk and turn it into items, deletes of its ids for a tombstone file, noted
    in ``ledger`` when there is one (runs in a worker thread)."""
    chunk = next(reader, None)
    if chunk is None:
        return None
    items = []
    for row, path, position in chunk:
        if position <= skip_to:
            continue
        event_id = row.get("id")
        if not isinstance(event_id, str):
            raise UsageError(f"{location(storage, path)}:{position}: row has no string id")
        where = f"{location(storage, path)}:{position}"
        if deletes:
            items.append(delete_item(event_id, where, FilePosition(path, position)))
            continue
        event = to_event(row, source)
        data, refused = encode_checked(event)
        item = Item(
            data, event_id, where, FilePosition(path, position), refused, comment_rows(row), logs3_merges(row)
        )
        items.append(item)
    if ledger is not None:
        note_given(ledger, items, deletes)
    return items
