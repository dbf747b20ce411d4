"""Attachments in an export: each one the rows refer to, downloaded once into the root.

The runner hands every written page to :meth:`AttachmentExport.take` before the page's file
is checkpointed, so a checkpointed row's attachments are already durable. A page without
:data:`~pipeline.common.attachments.MARKER` in its bytes costs one substring search.

Each attachment is streamed (chunk by chunk, hashed on the way) into a temp file published as
``_attachments/sha256=<hex>``, then its index file ``_attachments/keys/<hash of key>.json``
(:class:`~pipeline.common.attachments.Entry`) is published: a key whose index file names bytes
already in the root is never downloaded again, by this run after a resume or by a later run.
At most ``workers`` transfers run at once; each holds one chunk in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from typing import BinaryIO

import anyio

from pipeline.api.attachments import download, download_url
from pipeline.api.client import BraintrustClient
from pipeline.common import layout
from pipeline.common.attachments import Entry, Reference, key_digest, page_references
from pipeline.common.errors import AttachmentUnavailable
from pipeline.common.storage import Storage


class AttachmentExport:
    """The attachments of one export run; ``keys`` and ``skipped`` are the run state's lists."""

    def __init__(
        self, client: BraintrustClient, storage: Storage, org_id: str, *,
        download: bool, limit: int, workers: int, keys: list[str], skipped: list[str],
    ) -> None:  # fmt: skip
        self.client = client
        self.storage = storage
        self.org_id = org_id
        self.download = download
        self.limit = limit
        self.keys = keys
        self.skipped = skipped
        self._known = set(keys) | set(skipped)
        self._limiter = anyio.CapacityLimiter(workers)
        self._pending: dict[str, anyio.Event] = {}
        self.downloaded = 0
        self.downloaded_bytes = 0

    async def take(self, raw: bytes) -> None:
        """Make sure every attachment the JSONL page ``raw`` refers to is in the root."""
        refs = (
            page_references(raw)
            if len(raw) < 1 << 16
            else await anyio.to_thread.run_sync(page_references, raw)
        )
        new = [ref for key, ref in refs.items() if key not in self._known]
        if not new:
            return
        if not self.download:
            for ref in new:
                self._known.add(ref.key)
                self.skipped.append(ref.key)
            return
        async with anyio.create_task_group() as tg:
            for ref in new:
                tg.start_soon(self._one, ref)

    async def _one(self, ref: Reference) -> None:
        pending = self._pending.get(ref.key)
        if pending is not None:  # another range is fetching it
            await pending.wait()
            return
        self._pending[ref.key] = done = anyio.Event()
        try:
            async with self._limiter:
                if await anyio.to_thread.run_sync(self._present, ref.key) is None:
                    await self._download(ref)
            if ref.key not in self._known:
                self._known.add(ref.key)
                self.keys.append(ref.key)
        finally:
            del self._pending[ref.key]
            done.set()

    def _present(self, key: str) -> Entry | None:
        """The index entry of ``key`` when its bytes are already in the root."""
        try:
            entry = Entry.from_json(self.storage.read_bytes(layout.attachment_index_path(key_digest(key))))
        except FileNotFoundError:
            return None
        return entry if self.storage.exists(layout.attachment_path(entry.sha256)) else None

    async def _download(self, ref: Reference) -> None:
        try:
            url = await download_url(self.client, ref, self.org_id)
        except AttachmentUnavailable as exc:
            raise AttachmentUnavailable(
                f"{exc}; a row refers to it, so the run stopped: run again once its upload is done, "
                "or export with --attachments skip"
            ) from None
        result: list[Entry] = []

        async def consume(chunks: AsyncIterator[bytes], _size: int | None) -> None:
            digest = hashlib.sha256()
            size = 0
            writer = self.storage.open_atomic(
                layout.attachment_path("incoming"), final=lambda: layout.attachment_path(digest.hexdigest())
            )
            fh: BinaryIO = await anyio.to_thread.run_sync(writer.__enter__)
            try:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    await anyio.to_thread.run_sync(fh.write, chunk)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(writer.__exit__, type(exc), exc, exc.__traceback__)
                raise
            entry = Entry(ref.key, digest.hexdigest(), size, ref.filename, ref.content_type)
            with anyio.CancelScope(shield=True):  # a cancel here would leave the temp file behind
                await anyio.to_thread.run_sync(self._publish, writer, entry)
            result.append(entry)

        await download(self.client, ref, url, self.limit, consume)
        self.downloaded += 1
        self.downloaded_bytes += result[-1].bytes

    def _publish(self, writer: AbstractContextManager[BinaryIO], entry: Entry) -> None:
        """Publish the downloaded bytes, then their key's index file, in one call to a worker
        thread: a run cancelled once the bytes are whole (another attachment failed, the user
        stopped it) still records them, so the next run does not download them again."""
        writer.__exit__(None, None, None)
        self.storage.write_bytes(layout.attachment_index_path(key_digest(entry.key)), entry.to_json())

    def entries(self) -> list[Entry]:
        """The index entries of every attachment the run refers to (read back from the root)."""
        found = []
        for key in self.keys:
            entry = self._present(key)
            if entry is not None:
                found.append(entry)
        return found
