"""The ``--on-error skip`` file: one JSON line per event a load could not write, so nothing is
dropped silently.

A line is in the file whole or not at all. A write that fails part way (a full disk) is cut
back to where the line started and stops the run with one line naming the file; a file left
with a torn last line (a process killed mid-write) has that line cut off when a later run
opens it. Its event is not lost: the line was not yet covered by the checkpoint, so the
resumed run meets the event again. A resumed run also meets again every event recorded after
the checkpoint; one already in the file (same id and position) is not written twice, so the
file ends up holding each skipped event once, however many runs it took.
"""

from __future__ import annotations

import os
import stat
import threading

import anyio
import orjson

from pipeline.common.errors import BtpipeError, UsageError
from pipeline.load.batcher import Item

Key = tuple[str, str]  # (event id, where it came from)


class ErrorLog:
    """Appends skipped events to ``path``; ``count`` is how many this run recorded."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._fd: int | None = None
        self._recorded: set[Key] = set()
        self._lock = threading.Lock()  # workers record from several threads

    async def record(self, item: Item, reason: str) -> None:
        entry = {
            "id": item.id,
            "where": item.where,
            "bytes": len(item.data),
            "error": reason,
            "event": orjson.Fragment(item.data) if item.data else None,
        }
        await anyio.to_thread.run_sync(self._append, (item.id, item.where), orjson.dumps(entry) + b"\n")
        self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _append(self, key: Key, line: bytes) -> None:
        with self._lock:
            fd = self._fd if self._fd is not None else self._open()
            if key in self._recorded:
                return
            start = _end(fd)
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
            except OSError as exc:
                try:
                    if start is not None:
                        os.ftruncate(fd, start)
                except OSError:
                    pass  # the torn line is cut off when the file is next opened
                raise self._failed("cannot write", exc) from exc
            self._recorded.add(key)

    def _open(self) -> int:
        """Open for appending, cut a torn last line, and learn which events the file holds."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot open error file {self.path}: {exc.strerror or exc}") from exc
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):  # not /dev/stderr, a pipe or /dev/full
                self._recorded, whole = _read_keys(fd)
                if whole < os.fstat(fd).st_size:
                    os.ftruncate(fd, whole)
        except OSError as exc:
            os.close(fd)
            raise self._failed("cannot read", exc) from exc
        self._fd = fd
        return fd

    def _failed(self, doing: str, exc: OSError) -> BtpipeError:
        return BtpipeError(f"{doing} error file {self.path}: {exc.strerror or exc}")


def _end(fd: int) -> int | None:
    """Where the next line starts, to cut back to; None where a file has no end to seek."""
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return None


def _read_keys(fd: int) -> tuple[set[Key], int]:
    """The (id, where) of every whole line, and the length of the file's whole lines."""
    keys: set[Key] = set()
    whole = 0
    with os.fdopen(os.dup(fd), "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            whole += len(line)
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line some other program wrote: kept, not ours to judge
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                keys.add((entry["id"], str(entry.get("where"))))
    return keys, whole
