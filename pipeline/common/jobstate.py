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
"""

from __future__ import annotations

import hashlib
from typing import Any

import anyio
import orjson

from pipeline.common.errors import UsageError
from pipeline.common.state import LoadState, ObjectProgress, StateFormatError, StateStore
from pipeline.common.storage import open_storage


def job_key(kind: str, identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return f"{kind}-{digest}.json"


class JobState:
    """The state of one load job; saves are serialised."""

    def __init__(self, state_dir: str, kind: str, identity: dict[str, Any]) -> None:
        self.store = StateStore(open_storage(state_dir), job_key(kind, identity), LoadState)
        self.state = LoadState(identity)
        self._lock = anyio.Lock()

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
