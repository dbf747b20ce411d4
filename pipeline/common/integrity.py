"""Integrity on read: a published file checked against its manifest entry before it is used.

An export records each file it publishes (:class:`~pipeline.common.manifest.FileInfo`: path,
rows, bytes, SHA-256) in its state and then its manifest. Whoever reads the file again
(import, verify, an export resuming its run) first checks it against that entry, so a file
edited, cut short, emptied, replaced or deleted since it was written is reported instead of
being read as if it were the export's. A file outside any manifest has nothing to be checked
against.

The check streams the file once in 1 MiB chunks (memory stays flat whatever its size) and
stops reading as soon as it holds more bytes than recorded. The row count is compared where
it costs nothing more: plain JSONL counts its lines while it is hashed, and Parquet keeps the
count in its footer; compressed JSONL relies on the hash. Checking blocks: async callers use
:func:`find_damage`, which checks in worker threads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from pipeline.common.manifest import FileInfo
from pipeline.common.storage import Storage, location

_CHUNK = 1024 * 1024
#: Files checked at once by :func:`find_damage` (object storage answers each read slowly).
_PARALLEL = 4


@dataclass(frozen=True)
class Damage:
    """What is wrong with one file: ``path`` relative to the storage root, ``where`` its full
    name for messages, ``reason`` in a few words."""

    path: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def check_file(storage: Storage, info: FileInfo) -> Damage | None:
    """``info``'s file as its manifest entry says it was written, or what differs (blocking)."""
    where = location(storage, info.path)

    def damage(reason: str) -> Damage:
        return Damage(info.path, where, reason)

    digest = hashlib.sha256()
    size = lines = 0
    whole = False  # read to the end (rather than stopped past the recorded size)
    try:
        with storage.open_read(info.path) as fh:
            while size <= info.bytes:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    whole = True
                    break
                digest.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
    except FileNotFoundError:
        return damage("missing")
    except OSError as exc:
        return damage(f"cannot be read ({exc.strerror or exc})")
    if size != info.bytes:
        found = f"{size:,}" if whole else f"at least {size:,}"
        return damage(f"size {found} bytes, the manifest says {info.bytes:,}")
    if digest.hexdigest() != info.sha256:
        return damage("sha256 differs from the manifest")
    rows = lines if info.path.endswith(".jsonl") else _parquet_rows(storage, info.path)
    if rows is not None and rows != info.rows:
        return damage(f"{rows:,} rows, the manifest says {info.rows:,}")
    return None


def _parquet_rows(storage: Storage, relpath: str) -> int | None:
    """The row count in a Parquet file's footer; None for other files or a footer that does
    not parse (the hash matched, so the file is as written: a reader will say what is wrong)."""
    if not relpath.endswith(".parquet"):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with storage.open_read(relpath) as fh:
            return int(pq.read_metadata(fh).num_rows)
    except (pa.ArrowException, OSError):
        return None


async def find_damage(storage: Storage, infos: Sequence[FileInfo]) -> list[Damage]:
    """The damaged files among ``infos``, in their order; each is checked in a worker thread."""
    found: list[Damage | None] = [None] * len(infos)
    limiter = anyio.CapacityLimiter(_PARALLEL)

    async def check(index: int) -> None:
        found[index] = await anyio.to_thread.run_sync(check_file, storage, infos[index], limiter=limiter)

    async with anyio.create_task_group() as tg:
        for index in range(len(infos)):
            tg.start_soon(check, index)
    return [d for d in found if d is not None]
