"""Where import and migrate keep their resume state: one small file per job in ``--state-dir``.

The state lives in ``--state-dir`` (default ``.btpipe-state/`` in the current directory),
not beside the input, because an input (a mounted backup, a bucket) is often read-only. The
file name is a hash of what identifies the job (input or source, destination URL and
project, object selection), so re-running the same command finds its state and a different
job never picks up another's. It holds a :class:`~pipeline.common.state.LoadState`: per
source object the destination object and the contiguous prefix applied so far, and the
destination objects the job created, which a resumed run writes into without
``--into-existing`` (:mod:`pipeline.load.destinations`). The file is deleted when the job
completes, so a later identical command starts afresh.

Two runs of one job must not share the file: they would send the same rows, overwrite each
other's progress, and one would delete the state while the other goes on. So a run holds the
job's lease (``<job>-<hash>.lease`` beside it, :mod:`pipeline.common.lease`) while it
loads, saves and deletes the state, and every save checks it; another run of the same job
waits for it or stops with a line naming the holder. Different jobs have different leases and
share a state directory freely.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson

from pipeline.common.errors import UsageError
from pipeline.common.lease import guarded, hold
from pipeline.common.state import LoadState, ObjectProgress, StateFormatError, StateStore
from pipeline.common.storage import open_storage


def job_key(kind: str, identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return f"{kind}-{digest}.json"


class JobState:
    """The state of one load job; saves are serialised."""

    def __init__(self, state_dir: str, kind: str, identity: dict[str, Any]) -> None:
        self.kind = kind
        self.storage = open_storage(state_dir)
        self.store = StateStore(self.storage, job_key(kind, identity), LoadState)
        self.state = LoadState(identity)
        self._lock = anyio.Lock()

    @asynccontextmanager
    async def held(self, *, wait: float) -> AsyncIterator[None]:
        """Hold this job's lease for the block (waiting up to ``wait`` seconds for another run
        of the job); the state is saved and deleted only while it is still ours."""
        stem = self.store.relpath.removesuffix(".json")
        async with hold(
            self.storage, f"{stem}.lease", command=self.kind, wait=wait, where=self.location
        ) as lease:
            # what a killed run of this job left half-written (its state's and lease's temp files)
            await anyio.to_thread.run_sync(self.storage.cleanup_temp, f".{stem}.")
            self.store = StateStore(guarded(self.storage, lease), self.store.relpath, LoadState)
            yield

    @property
    def location(self) -> str:
        return self.store.location

    @property
    def objects(self) -> dict[str, ObjectProgress]:
        """Progress by source object key."""
        return self.state.objects

    @property
    def created(self) -> dict[str, str]:
        """Destination ids of the objects this job created, by source object key."""
        return self.state.created

    @property
    def attachments(self) -> dict[str, str]:
        """Destination keys of the attachments this job uploaded, by source key."""
        return self.state.attachments

    async def load(self, *, restart: bool) -> bool:
        """Load a saved state (True when resuming); ``restart`` discards it unread."""
        if restart:
            return False
        try:
            saved = await anyio.to_thread.run_sync(self.store.load)
        except StateFormatError as exc:
            raise UsageError(f"{exc}; pass --restart") from None
        if saved is None:
            return False
        if saved.identity != self.state.identity:
            raise UsageError(f"{self.location}: state file does not belong to this job; pass --restart")
        self.state = saved
        return bool(saved.objects)

    async def save(self) -> None:
        async with self._lock:
            await self.store.save_async(self.state)

    async def clear(self) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self.store.delete)
