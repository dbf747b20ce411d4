"""Resume state for import and migrate: one small JSON file per job in ``--state-dir``.

The state lives in ``--state-dir`` (default ``.btpipe-state/`` in the current directory),
not beside the input, because an input (a mounted backup, a bucket) is often read-only. The
file name is a hash of what identifies the job (input or source, destination URL and
project, object selection), so re-running the same command finds its state and a different
job never picks up another's. Per source object it records the destination object and the
contiguous prefix applied so far (``rows``, and the mark: a file position or a page cursor).
The file is deleted when the job completes, so a later identical command starts afresh.
"""

from __future__ import annotations

import hashlib
from typing import Any

import anyio
import orjson

from pipeline.common.errors import UsageError
from pipeline.common.state import StateStore
from pipeline.common.storage import open_storage

STATE_FORMAT = 1


def job_key(kind: str, identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return f"{kind}-{digest}.json"


class JobState:
    """``objects`` maps a source object key to its progress record; saves are serialised."""

    def __init__(self, state_dir: str, kind: str, identity: dict[str, Any]) -> None:
        self.store = StateStore(open_storage(state_dir), job_key(kind, identity))
        self.identity = identity
        self.objects: dict[str, dict[str, Any]] = {}
        self._lock = anyio.Lock()

    @property
    def location(self) -> str:
        return self.store.location

    async def load(self, *, restart: bool) -> bool:
        """Load a saved state (True when resuming); ``restart`` discards it."""
        data = await anyio.to_thread.run_sync(self.store.load)
        if data is None or restart:
            return False
        if data.get("format") != STATE_FORMAT or data.get("identity") != self.identity:
            raise UsageError(f"{self.location}: state file does not belong to this job; pass --restart")
        self.objects = data.get("objects", {})
        return bool(self.objects)

    async def save(self) -> None:
        async with self._lock:
            document = {"format": STATE_FORMAT, "identity": self.identity, "objects": self.objects}
            snapshot = orjson.loads(orjson.dumps(document))
            await anyio.to_thread.run_sync(self.store.save, snapshot)

    async def clear(self) -> None:
        async with self._lock:
            if await anyio.to_thread.run_sync(self.store.storage.exists, self.store.relpath):
                await anyio.to_thread.run_sync(self.store.storage.delete, self.store.relpath)
