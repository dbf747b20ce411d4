"""JSONL part files: page bytes go to disk exactly as the server sent them.

No row is parsed or re-encoded, so the copy is byte-exact and costs next to nothing; rows are
counted by newlines. Compression (gzip or zstd) goes through ``pyarrow.CompressedOutputStream``.
``max_file_bytes`` bounds the uncompressed bytes of a part (so a compressed part is smaller
still); a part only exceeds it when one page alone does. ``max_file_rows`` is exact: a page is
split at a line boundary when it would overflow the part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pipeline.common.errors import UsageError
from pipeline.common.manifest import FileInfo
from pipeline.common.storage import Storage
from pipeline.sinks.base import CountingWriter, PartFileSink

if TYPE_CHECKING:
    import pyarrow as pa

Compression = Literal["gzip", "zstd"] | None
EXTENSIONS: dict[str | None, str] = {None: ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024


class JsonlSink(PartFileSink):
    """Writes ``/btql`` ``fmt=jsonl`` pages to ``{directory}/{prefix}-{part:05d}.jsonl[.gz|.zst]``."""

    def __init__(
        self,
        storage: Storage,
        directory: str,
        *,
        prefix: str = "part",
        first_part: int = 0,
        compression: Compression = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_file_rows: int | None = None,
    ) -> None:
        if compression not in EXTENSIONS:
            raise UsageError(f"unknown JSONL compression {compression!r} (use gzip or zstd)")
        if max_file_bytes <= 0 or (max_file_rows is not None and max_file_rows <= 0):
            raise UsageError("max_file_bytes and max_file_rows must be positive")
        super().__init__(storage, directory, prefix=prefix, first_part=first_part)
        self.extension = EXTENSIONS[compression]
        self.compression = compression
        self.max_file_bytes = max_file_bytes
        self.max_file_rows = max_file_rows
        self._stream: pa.NativeFile | CountingWriter | None = None
        self._part_bytes = 0

    def _start(self, out: CountingWriter) -> None:
        if self.compression:
            import pyarrow as pa  # only compressed output needs it; plain JSONL starts faster

            self._stream = pa.CompressedOutputStream(out, self.compression)
        else:
            self._stream = out
        self._part_bytes = 0

    def _finish(self) -> None:
        if self._stream is not None:
            self._stream.close()  # writes the compression trailer; the atomic file stays open
            self._stream = None

    _abandon = _finish

    def _room(self) -> int | None:
        return None if self.max_file_rows is None else self.max_file_rows - self._part_rows

    def write_page(self, page: bytes, rows: int | None = None) -> list[FileInfo]:
        """Append one page (rows end at newlines; a missing final newline is added). ``rows``
        is the page's line count when the caller has counted them already."""
        if not page or page.isspace():  # isspace stops at the first other byte; strip would copy
            return []
        data = page if page.endswith(b"\n") else page + b"\n"
        published: list[FileInfo] = []
        while data:
            if self._part_rows and self._part_bytes + len(data) > self.max_file_bytes:
                published += self._publish()
            room = self._room()
            if room is None and rows is not None:
                chunk, data, taken = data, b"", rows
            else:
                chunk, data, taken = _split_lines(data, room)
            self._ensure_open()
            assert self._stream is not None
            self._stream.write(chunk)
            self._part_rows += taken
            self._part_bytes += len(chunk)
            if self._room() == 0 or self._part_bytes >= self.max_file_bytes:
                published += self._publish()
        return published


def _split_lines(data: bytes, rows: int | None) -> tuple[bytes, bytes, int]:
    """The first ``rows`` lines of ``data`` (all of it when ``rows`` is None), the rest, and
    how many lines the first part holds."""
    if rows is None:
        return data, b"", data.count(b"\n")
    end = -1
    for taken in range(rows):
        end = data.find(b"\n", end + 1)
        if end == -1:
            return data, b"", taken
    return data[: end + 1], data[end + 1 :], rows
