"""JSONL part files: page bytes go to disk exactly as the server sent them.

No row is parsed or re-encoded, so the copy is byte-exact and costs next to nothing; rows are
counted by newlines unless the caller has counted them. Compression (gzip or zstd) goes through
``pyarrow.CompressedOutputStream``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pipeline.common.errors import UsageError
from pipeline.common.storage import Storage
from pipeline.sinks.base import CountingWriter, PartFileSink

if TYPE_CHECKING:
    import pyarrow as pa

Compression = Literal["gzip", "zstd"] | None
EXTENSIONS: dict[str | None, str] = {None: ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}


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
    ) -> None:
        if compression not in EXTENSIONS:
            raise UsageError(f"unknown JSONL compression {compression!r} (use gzip or zstd)")
        super().__init__(storage, directory, prefix=prefix, first_part=first_part)
        self.extension = EXTENSIONS[compression]
        self.compression = compression
        self._stream: pa.NativeFile | CountingWriter | None = None

    def _start(self, out: CountingWriter) -> None:
        if self.compression:
            import pyarrow as pa  # only compressed output needs it; plain JSONL starts faster

            self._stream = pa.CompressedOutputStream(out, self.compression)
        else:
            self._stream = out

    def _finish(self) -> None:
        if self._stream is not None:
            self._stream.close()  # writes the compression trailer; the atomic file stays open
            self._stream = None

    _abandon = _finish

    def write_page(self, page: bytes, rows: int | None = None) -> None:
        """Append one page (rows end at newlines; a missing final newline is added). ``rows``
        is the page's line count when the caller has counted them already."""
        if not page or page.isspace():  # isspace stops at the first other byte; strip would copy
            return
        data = page if page.endswith(b"\n") else page + b"\n"
        self._ensure_open()
        assert self._stream is not None
        self._stream.write(data)
        self._part_rows += data.count(b"\n") if rows is None else rows
