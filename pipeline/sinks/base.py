"""What every sink shares: the sink interface and numbered part files.

A sink turns ``/btql`` pages into numbered part files (``{directory}/{prefix}-{part:05d}{ext}``).
Each part is written through ``Storage.open_atomic``, so it appears only once complete; the
``FileInfo`` returned for it is the manifest entry, and everything written before it is durable
by then. A sink never ends a part on its own: its caller decides where each file ends and
calls ``flush`` there. Format-specific sinks subclass ``PartFileSink`` and only encode bytes.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import ExitStack
from types import TracebackType
from typing import BinaryIO, Protocol, Self

from pipeline.common.errors import BtpipeError
from pipeline.common.manifest import FileInfo
from pipeline.common.storage import Storage, location

#: A part on local disk is flushed to it every this many bytes, so the ``fsync`` that
#: publishes it has little left to write: at 0 ms the ranges' parts all end together, and
#: their last sync was most of the run's tail.
SYNC_EVERY_BYTES = 8 * 2**20


class Sink(Protocol):
    """Writes pages to part files; all methods block (the export stage calls them in a thread).

    ``write_page`` adds a page to the open part (``rows`` is its line count, when the caller
    knows it); ``flush`` publishes that part, ``close`` flushes and releases, ``abort``
    discards the unpublished part."""

    def write_page(self, page: bytes, rows: int | None = None) -> None: ...
    def flush(self) -> list[FileInfo]: ...
    def close(self) -> list[FileInfo]: ...
    def abort(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class CountingWriter:
    """A write-only file object that hashes and counts what reaches storage.

    ``close`` does not close the destination: encoders (pyarrow streams, ParquetWriter) close
    their sink when they finish, but the atomic file must stay open until it is published.

    A write that fails (a full disk) is kept in ``failure`` and the writes after it are
    dropped, so an encoder writing through its own buffers (Arrow's) still finishes or is
    discarded quietly; the sink raises the failure instead of publishing the part.
    """

    def __init__(self, dest: BinaryIO) -> None:
        self._dest = dest
        self._hash = hashlib.sha256()
        self.bytes = 0
        self._unsynced = 0
        try:
            self._fileno: int | None = dest.fileno()
        except (AttributeError, OSError, ValueError):
            self._fileno = None
        self.closed = False
        self.failure: OSError | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.failure is not None:
            return len(data)
        try:
            self._dest.write(data)
        except OSError as exc:
            self.failure = exc
            return len(data)
        self._hash.update(data)
        self.bytes += len(data)
        self._unsynced += len(data)
        if self._unsynced >= SYNC_EVERY_BYTES and self._fileno is not None:
            self._unsynced = 0
            try:
                self._dest.flush()
                os.fdatasync(self._fileno)
            except OSError as exc:
                self.failure = exc
        return len(data)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self._dest.flush()

    def close(self) -> None:
        self.closed = True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class ClosingSink:
    """``with sink:`` publishes what is pending when the block succeeds and discards the
    unpublished part when it fails."""

    def close(self) -> list[FileInfo]:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            close_or_abort(self)
        else:
            self.abort()


def close_or_abort(sink: Sink | ClosingSink) -> list[FileInfo]:
    """``sink.close()``; if that fails (a full disk), ``sink.abort()``, so no half-written
    part file stays behind, and the error goes on."""
    try:
        return sink.close()
    except BaseException:
        sink.abort()
        raise


class _Aborted(Exception):
    """Thrown into an open atomic write to discard it."""


class PartFileSink(ClosingSink):
    """Opens, publishes and aborts numbered part files; subclasses encode into them.

    Subclasses implement ``_start(out)`` (begin encoding into a fresh part), ``_finish()``
    (write any trailer; the part must be complete afterwards), optionally ``_abandon()`` and
    ``_drain()``, and keep ``_part_rows`` up to date.
    """

    extension = ""

    def __init__(self, storage: Storage, directory: str, *, prefix: str, first_part: int) -> None:
        self.storage = storage
        self.directory = directory.strip("/")
        self.prefix = prefix
        self._next_part = first_part
        self._stack: ExitStack | None = None
        self._out: CountingWriter | None = None
        self._path = ""
        self._part_rows = 0
        self._closed = False

    # -- part lifecycle -------------------------------------------------------------------
    def _part_path(self, part: int) -> str:
        name = f"{self.prefix}-{part:05d}{self.extension}"
        return f"{self.directory}/{name}" if self.directory else name

    def _ensure_open(self) -> CountingWriter:
        """The current part's writer, opening the next part if none is open."""
        if self._closed:
            raise ValueError("sink is closed")
        self._check_output()
        if self._out is None:
            self._path = self._part_path(self._next_part)
            stack = ExitStack()
            dest = stack.enter_context(self.storage.open_atomic(self._path))
            self._stack, self._out, self._part_rows = stack, CountingWriter(dest), 0
            self._next_part += 1
            self._start(self._out)
        return self._out

    def _publish(self) -> list[FileInfo]:
        """Complete and publish the current part, if it has rows."""
        if self._out is None or self._stack is None:
            return []
        if self._part_rows == 0:
            self._discard()
            self._next_part -= 1
            return []
        self._finish()
        self._check_output()
        out, stack = self._out, self._stack
        self._out, self._stack = None, None
        stack.close()
        rows, self._part_rows = self._part_rows, 0
        return [FileInfo(self._path, rows, out.bytes, out.hexdigest())]

    def _check_output(self) -> None:
        """Raise the failure of a write to the current part, if one failed."""
        if self._out is not None and self._out.failure is not None:
            reason = self._out.failure.strerror or str(self._out.failure)
            raise BtpipeError(f"cannot write {location(self.storage, self._path)}: {reason}")

    def _discard(self) -> None:
        """Drop the current part without publishing anything."""
        stack, self._out, self._stack, self._part_rows = self._stack, None, None, 0
        if stack is not None:
            try:
                self._abandon()
            finally:  # the temporary file goes whatever the encoder says
                stack.__exit__(_Aborted, _Aborted(), None)

    # -- format hooks -----------------------------------------------------------------------
    def _start(self, out: CountingWriter) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _abandon(self) -> None:
        """Release encoder state of a part that is being discarded (its bytes are thrown away)."""

    def _drain(self) -> None:
        """Write anything buffered into the current part (formats that buffer override this)."""

    # -- public interface -------------------------------------------------------------------
    def flush(self) -> list[FileInfo]:
        """Publish the current part now (if it has rows); the next page starts a new one."""
        self._drain()
        return self._publish()

    def close(self) -> list[FileInfo]:
        """Flush and release; a second call does nothing."""
        if self._closed:
            return []
        try:
            return self.flush()
        finally:
            self._closed = True

    def abort(self) -> None:
        """Discard the unpublished part; files already published stay."""
        self._discard()
        self._closed = True
