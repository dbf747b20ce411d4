"""Readers for what the sinks wrote: find the files of an export, then stream their rows.

``discover_files`` accepts a directory prefix, a single file, or a run manifest;
``iter_rows`` picks the reader by file extension, or reads a Delta table's data file
(:mod:`pipeline.sources.delta`). Both block: async callers use
``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.common import layout
from pipeline.common.errors import BtpipeError, UsageError
from pipeline.common.manifest import MANIFEST_DIR, read_manifest
from pipeline.common.rows import ObjectType
from pipeline.common.storage import Storage, location
from pipeline.sources import jsonl, parquet
from pipeline.sources.base import SourceRow

__all__ = ["SourceRow", "discover_files", "is_data_file", "iter_rows"]

PARQUET_EXTENSION = ".parquet"


def is_data_file(relpath: str) -> bool:
    """True for the file names the sinks write (JSONL, compressed JSONL, Parquet)."""
    return relpath.endswith(PARQUET_EXTENSION) or any(relpath.endswith(ext) for ext in jsonl.CODECS)


def iter_rows(
    storage: Storage, relpath: str, batch_rows: int = 1000, *, table: tuple[ObjectType, str] | None = None
) -> Iterator[list[SourceRow]]:
    """Batches of at most ``batch_rows`` rows from one file, read by the format its name says;
    ``table``: the file is a data file of a Delta table, of this object type and id."""
    if table is not None:
        from pipeline.sources import delta  # deltalake loads only for a Delta table

        return _named_if_missing(delta.iter_rows(storage, relpath, *table, batch_rows), storage, relpath)
    if relpath.endswith(PARQUET_EXTENSION):
        return _named_if_missing(parquet.iter_rows(storage, relpath, batch_rows), storage, relpath)
    if is_data_file(relpath):
        return _named_if_missing(jsonl.iter_rows(storage, relpath, batch_rows), storage, relpath)
    raise UsageError(f"{location(storage, relpath)}: not a .jsonl, .jsonl.gz, .jsonl.zst or .parquet file")


def _named_if_missing(
    batches: Iterator[list[SourceRow]], storage: Storage, relpath: str
) -> Iterator[list[SourceRow]]:
    """A file the input names but that is not there when read (a Delta log naming a file
    removed from the table's directory, or one deleted after the input was listed) stops the
    run with one line naming it."""
    try:
        yield from batches
    except FileNotFoundError:
        raise BtpipeError(
            f"{location(storage, relpath)}: missing (the input names it, but it is not there)"
        ) from None


def discover_files(storage: Storage, prefix: str = "") -> list[str]:
    """The data files to read for ``prefix``: a manifest's files in its order, one data file,
    or every data file under a directory prefix (sorted; manifests, tombstones, configuration
    and temp files excluded)."""
    if prefix.endswith(".json") and storage.exists(prefix):
        manifest = read_manifest(storage, prefix)
        return [info.path for obj in manifest.objects for info in obj.files]
    if is_data_file(prefix) and storage.exists(prefix):
        return [prefix]
    directory = prefix.strip("/")
    found = [
        path
        for path in storage.list_files(f"{directory}/" if directory else "")
        if is_data_file(path)
        and not path.startswith((f"{MANIFEST_DIR}/", f"{layout.TOMBSTONE_DIR}/", f"{layout.CONFIG_DIR}/"))
    ]
    if not found:
        raise UsageError(f"{location(storage, directory)}: no JSONL or Parquet files found")
    return found
