"""Attachments in import and migrate: uploaded to the destination once each, keys rewritten.

Before a chunk of events goes to the batcher, :meth:`AttachmentCopier.rewrite` looks for
:data:`~pipeline.common.attachments.MARKER` in each encoded event (one substring search; a
chunk without it is passed on as it is). An event that has it is decoded, every
``braintrust_attachment`` reference in it is uploaded to the destination if it is not there
yet, and the event is encoded again with the destination's keys; the upload is finished
(``upload_status: done``) before the event can be sent, so a row never refers to bytes the
destination does not hold.

The destination key of a source key is derived (a UUID5 of the destination project and the
source key), so every run of the same load picks the same one: a re-run, even after the
state file was deleted by a completed run, finds it uploaded (``GET /attachment`` says
``done``) and uploads nothing; within a run, the state's ``attachments`` map (checkpointed
with the rows) saves even that request. Where the bytes come from is a :class:`Source`:
an export's ``_attachments/`` (:class:`ExportedAttachments`) or the source deployment itself
(:class:`SourceAttachments`, streamed from download to upload with no file in between).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

import anyio

from pipeline.api import attachments as api
from pipeline.api.client import BraintrustClient
from pipeline.common import jsoncodec, layout
from pipeline.common.attachments import MARKER, Entry, Reference, find_references, key_digest, rewrite
from pipeline.common.errors import AttachmentUnavailable, DamagedFileError
from pipeline.common.storage import Storage, location
from pipeline.load.batcher import Item
from pipeline.load.transform import encode_checked

#: Namespace of the derived destination keys.
_NAMESPACE: Final = uuid.UUID("6f1d3c52-8a0e-4b8e-9a57-2f3b1d7c9e40")


def destination_key(project_id: str, source_key: str) -> str:
    """The key ``source_key`` gets in destination project ``project_id``: the same every run."""
    return str(uuid.uuid5(_NAMESPACE, f"{project_id}/{source_key}"))


class Source(Protocol):
    """Where a load reads attachment bytes from."""

    async def copy(self, ref: Reference, destination: BraintrustClient, new: Reference, org_id: str) -> int:
        """Upload ``ref``'s bytes to ``destination`` as ``new``; the byte count."""
        ...


class ExportedAttachments:
    """The ``_attachments/`` of an export root: bytes by SHA-256, found through the key index."""

    def __init__(self, storage: Storage, limit: int) -> None:
        self.storage = storage
        self.limit = limit

    def _entry(self, ref: Reference) -> Entry:
        index = layout.attachment_index_path(key_digest(ref.key))
        try:
            entry = Entry.from_json(self.storage.read_bytes(index))
        except FileNotFoundError:  # left out on purpose (or its index removed): the row's choice
            raise AttachmentUnavailable(
                f"{location(self.storage, index)}: {api.describe(ref)} is not in the export "
                "(exported with --attachments skip, or removed)"
            ) from None
        if not self.storage.exists(layout.attachment_path(entry.sha256)):
            raise DamagedFileError(
                f"{location(self.storage, layout.attachment_path(entry.sha256))}: missing; "
                f"{api.describe(ref)} cannot be uploaded"
            )
        return entry

    async def copy(self, ref: Reference, destination: BraintrustClient, new: Reference, org_id: str) -> int:
        entry = await anyio.to_thread.run_sync(self._entry, ref)
        if entry.bytes > self.limit:
            raise api.too_large(ref, entry.bytes, self.limit)
        path = layout.attachment_path(entry.sha256)
        digests: list[str] = []

        async def body() -> AsyncIterator[bytes]:
            digest = hashlib.sha256()
            read = 0
            reader = self.storage.open_read(path)
            fh = await anyio.to_thread.run_sync(reader.__enter__)
            try:
                while chunk := await anyio.to_thread.run_sync(fh.read, api.CHUNK_BYTES):
                    digest.update(chunk)
                    read += len(chunk)
                    if read >= entry.bytes:
                        # before the last chunk goes: the upload may end once it has sent the
                        # size it announced, without asking this generator for more
                        digests.append(digest.hexdigest())
                    yield chunk
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(reader.__exit__, None, None, None)
            digests.append(digest.hexdigest())  # all of it read (an empty file too)

        url, headers = await api.start_upload(destination, new, org_id)
        await api.put_file(destination, new, url, headers, body, entry.bytes)
        if not digests or digests[-1] != entry.sha256:
            raise DamagedFileError(
                f"{location(self.storage, path)}: its bytes do not match the SHA-256 in their name "
                "(changed or cut short); the upload was left unfinished"
            )
        await api.finish_upload(destination, new, org_id)
        return entry.bytes


class SourceAttachments:
    """The source deployment: each attachment streamed from its download to the upload."""

    def __init__(self, client: BraintrustClient, org_id: str, limit: int) -> None:
        self.client = client
        self.org_id = org_id
        self.limit = limit

    async def copy(self, ref: Reference, destination: BraintrustClient, new: Reference, org_id: str) -> int:
        return await api.copy(self.client, ref, self.org_id, destination, new, org_id, self.limit)


@dataclass
class AttachmentCounts:
    """What a load did with attachments: ``uploaded`` (and their ``bytes``), and ``present``,
    found already uploaded by an earlier run."""

    uploaded: int = 0
    bytes: int = 0
    present: int = 0


class AttachmentCopier:
    """One load's attachments; ``mapping`` (source key -> destination key) is the state's."""

    def __init__(
        self, source: Source, destination: BraintrustClient, project: dict[str, str], *,
        mapping: dict[str, str], workers: int, skip: bool = False,
    ) -> None:  # fmt: skip
        self.source = source
        self.destination = destination
        self.project_id = str(project["id"])
        self.org_id = str(project.get("org_id") or "")
        self.mapping = mapping
        self.counts = AttachmentCounts()
        #: Source keys whose bytes cannot be read there (why): the rows naming them are refused.
        self.unavailable: dict[str, str] = {}
        #: Go past an object naming such a key (``--on-error skip``), listed in ``uncarried``.
        self.skip = skip
        self.uncarried: list[str] = []
        self._limiter = anyio.CapacityLimiter(workers)
        self._pending: dict[str, anyio.Event] = {}

    async def rewrite(self, items: list[Item]) -> list[Item]:
        """``items`` with every attachment reference uploaded and rewritten. The attachments of
        all the items are copied together (``workers`` at a time), not one item after another.
        An item naming an attachment the source cannot give (its upload failed there) is
        refused, so the load stops naming it or, with ``--on-error skip``, records it."""
        if not any(MARKER in item.data for item in items):
            return items
        found: list[tuple[int, dict[str, Any], dict[str, Reference]]] = []
        for index, item in enumerate(items):
            if item.refused is None and MARKER in item.data:
                event = jsoncodec.loads(item.data)
                refs = find_references(event)
                if refs:
                    found.append((index, event, refs))
        await self._ensure(list({ref.key: ref for _, _, refs in found for ref in refs.values()}.values()))
        out = list(items)
        for index, event, refs in found:
            lost = next((self.unavailable[r.key] for r in refs.values() if r.key in self.unavailable), None)
            if lost is not None:
                out[index] = replace(items[index], refused=f"refers to {lost}, whose bytes cannot be copied")
                continue
            data, refused = encode_checked(rewrite(event, self.mapping))
            out[index] = replace(items[index], data=data, refused=refused)
        return out

    async def carried(self, value: Any, what: str) -> Any:
        """``value`` (an object's fields: a dataset's metadata, a prompt) with every attachment
        it refers to uploaded and its key rewritten, as :meth:`rewrite` does for rows. One the
        source cannot give stops the load, naming ``what`` refers to it; with ``skip`` (as
        ``--on-error skip`` lets a load go past a row) the object keeps that reference as it
        was, and the line goes to :attr:`uncarried` (the load exits 1)."""
        refs = find_references(value)
        if not refs:
            return value
        await self._ensure(list(refs.values()))
        for ref in refs.values():
            if ref.key in self.unavailable:
                why = f"{what} refers to {self.unavailable[ref.key]}, whose bytes cannot be copied"
                if not self.skip:
                    raise AttachmentUnavailable(why)
                self.uncarried.append(f"{why}; that reference is left as it was")
        return rewrite(value, self.mapping)

    async def _ensure(self, refs: list[Reference]) -> None:
        missing = [ref for ref in refs if ref.key not in self.mapping]
        if missing:
            async with anyio.create_task_group() as tg:
                for ref in missing:
                    tg.start_soon(self._one, ref)

    async def _one(self, ref: Reference) -> None:
        pending = self._pending.get(ref.key)
        if pending is not None:
            await pending.wait()
            return
        self._pending[ref.key] = done = anyio.Event()
        try:
            async with self._limiter:
                new = Reference(destination_key(self.project_id, ref.key), ref.filename, ref.content_type)
                if await api.is_uploaded(self.destination, new, self.org_id):
                    self.counts.present += 1
                else:
                    try:
                        size = await self.source.copy(ref, self.destination, new, self.org_id)
                    except AttachmentUnavailable as exc:
                        self.unavailable[ref.key] = str(exc)
                        return
                    self.counts.bytes += size  # after the await: ``x += await`` reads x before it
                    self.counts.uploaded += 1
                self.mapping[ref.key] = new.key
        finally:
            del self._pending[ref.key]
            done.set()
