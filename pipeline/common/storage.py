"""Where exported files live: a local directory or an object-storage prefix, behind one small interface.

Every file is published atomically, so a reader (or a resumed run) never sees half a file:

* local disk writes to a hidden temp name in the destination directory, fsyncs it, renames it
  into place with ``os.replace`` and fsyncs the directory;
* object storage (``s3://``, ``gs://`` through ``pyarrow.fs``) spools the bytes to a local temp
  file and uploads them only when the ``with`` block exits cleanly, so an aborted write never
  creates an object.

A file whose name depends on its content (an attachment named by its SHA-256) is written with
``open_atomic(relpath, final=name)``: the bytes go to a temp name beside ``relpath`` and are
published under ``name()``, asked for once the ``with`` block has written everything.

Temp names start with ``.`` and end with ``.tmp``; ``list_files`` never returns them and
``cleanup_temp`` removes the ones a killed run left behind. Everything here blocks; async callers
use ``anyio.to_thread.run_sync``.

Failures are one line naming the file: a write that fails (a full disk) publishes nothing and
raises :class:`~pipeline.common.errors.BtpipeError`; object storage that cannot be reached
does too, after the retries :class:`Retries` allows, which come from the API client's retry
settings, so ``--max-retries`` bounds a run whatever it talks to. A missing file stays
``FileNotFoundError``, for callers that expect one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Final, Protocol, cast
from urllib.parse import urlparse

from pipeline.common import defaults
from pipeline.common.errors import BtpipeError, UsageError

TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
_COPY_CHUNK = 8 * 1024 * 1024
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Where the Google Cloud clients look for a GCS emulator (``http://host:port``).
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


@dataclass(frozen=True)
class Retries:
    """How long a call to object storage may keep retrying: the API client's ``--max-retries``
    and ``--max-backoff``. S3 counts attempts; GCS takes only a time limit (by default a
    quarter of an hour), here the longest the API client would wait between its attempts."""

    attempts: int = defaults.MAX_RETRIES.default
    max_backoff: float = defaults.MAX_BACKOFF.default

    @property
    def seconds(self) -> float:
        return max(1.0, (self.attempts - 1) * self.max_backoff)


class Storage(Protocol):
    """A root under which files are published atomically and read back by relative path."""

    url: str

    def open_atomic(
        self, relpath: str, *, final: Callable[[], str] | None = None
    ) -> AbstractContextManager[BinaryIO]: ...
    def write_bytes(self, relpath: str, data: bytes) -> None: ...
    def read_bytes(self, relpath: str) -> bytes: ...
    def exists(self, relpath: str) -> bool: ...
    def list_files(self, prefix: str = "") -> list[str]: ...
    def delete(self, relpath: str) -> None: ...
    def open_read(self, relpath: str) -> AbstractContextManager[BinaryIO]: ...
    def cleanup_temp(self, prefix: str = "") -> list[str]: ...
    def table_location(self, relpath: str) -> TableLocation: ...  # "": the root itself


@dataclass(frozen=True)
class TableLocation:
    """Where a Delta table under the root lives, as ``deltalake`` takes it: its URI and the
    ``storage_options`` (endpoint, region, credentials) the root was opened with. ``repr``
    leaves the options out, so a credential never reaches a message."""

    uri: str
    options: dict[str, str] = field(default_factory=dict, repr=False)


def location(storage: Storage, relpath: str) -> str:
    """The full, user-facing name of ``relpath`` (for messages; never carries credentials)."""
    return f"{storage.url.rstrip('/')}/{relpath}" if relpath else storage.url


def is_temp_name(relpath: str) -> bool:
    """True for the hidden names ``open_atomic`` writes before publishing."""
    name = relpath.rsplit("/", 1)[-1]
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def _clean_relpath(relpath: str) -> str:
    """Refuse paths that could escape the root; normalise separators."""
    parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UsageError(f"invalid storage path {relpath!r}")
    return "/".join(parts)


def _matches(relpath: str, prefix: str) -> bool:
    return relpath.startswith(prefix) and not is_temp_name(relpath)


def why_not_written(exc: OSError, path: str) -> str:
    """Why a directory or file could not be made at ``path``: the OS's words, except where a
    file stands in the way of a directory, which they say as "File exists" or "Not a directory"."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        for parent in (path, *(str(p) for p in Path(path).parents)):
            if os.path.exists(parent) and not os.path.isdir(parent):
                return f"{parent} is a file, not a directory"
    return exc.strerror or str(exc)


class LocalStorage:
    """Files under a local directory; the directory is created on first write."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = self.root

    def _path(self, relpath: str) -> str:
        return os.path.join(self.root, *_clean_relpath(relpath).split("/"))

    @contextmanager
    def open_atomic(self, relpath: str, *, final: Callable[[], str] | None = None) -> Iterator[BinaryIO]:
        target = self._path(relpath)
        directory = os.path.dirname(target)
        temp = os.path.join(
            directory, f"{TEMP_PREFIX}{os.path.basename(target)}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        )
        try:
            os.makedirs(directory, exist_ok=True)
            fh = open(temp, "xb")  # noqa: SIM115 - closed below on every path
        except OSError as exc:
            error = BtpipeError if exc.errno in _OUT_OF_SPACE else UsageError
            raise error(f"cannot write to {directory}: {why_not_written(exc, directory)}") from exc
        try:
            yield cast(BinaryIO, fh)
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            if final is not None:
                target = self._path(final())
                os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(temp, target)
            _fsync_dir(os.path.dirname(target))
        except BaseException as exc:
            try:
                fh.close()  # flushes what is buffered, which fails again on a full disk
            except OSError:
                pass
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            if isinstance(exc, OSError):  # a write, flush or rename: no space, quota, I/O error
                raise BtpipeError(f"cannot write {target}: {exc.strerror or exc}") from exc
            raise

    def write_bytes(self, relpath: str, data: bytes) -> None:
        with self.open_atomic(relpath) as fh:
            fh.write(data)

    def read_bytes(self, relpath: str) -> bytes:
        path = self._path(relpath)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except NotADirectoryError as exc:  # a parent is a file: nothing can be stored there
            raise FileNotFoundError(path) from exc

    def exists(self, relpath: str) -> bool:
        return os.path.isfile(self._path(relpath))

    def _walk(self, prefix: str) -> Iterator[str]:
        """Relative paths of every file (temp names included) whose path starts with ``prefix``."""
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = os.path.join(self.root, *base_dir.split("/")) if base_dir else self.root
        for dirpath, _dirs, files in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in files:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if rel.startswith(prefix):
                    yield rel

    def list_files(self, prefix: str = "") -> list[str]:
        return sorted(p for p in self._walk(prefix) if not is_temp_name(p))

    def delete(self, relpath: str) -> None:
        os.unlink(self._path(relpath))

    @contextmanager
    def open_read(self, relpath: str) -> Iterator[BinaryIO]:
        with open(self._path(relpath), "rb") as fh:
            yield fh

    def cleanup_temp(self, prefix: str = "") -> list[str]:
        removed = sorted(p for p in self._walk(prefix) if is_temp_name(p))
        for rel in removed:
            try:
                os.unlink(os.path.join(self.root, *rel.split("/")))
            except FileNotFoundError:
                pass
        return removed

    def table_location(self, relpath: str) -> TableLocation:
        return TableLocation(self._path(relpath) if relpath else self.root)


@contextmanager
def no_empty_root_left(storage: Storage) -> Iterator[None]:
    """A local root that did not exist before and is still empty when the block fails (a run
    that stopped before writing anything, its lease's directory aside) is removed again."""
    root = storage.root if isinstance(storage, LocalStorage) else ""
    fresh = bool(root) and not os.path.exists(root)
    try:
        yield
    except BaseException:
        if fresh:
            for directory, _, _ in sorted(os.walk(root), key=lambda found: -len(found[0])):
                with contextlib.suppress(OSError):  # not empty: something was written
                    os.rmdir(directory)
        raise


def _fsync_dir(directory: str) -> None:
    """Make a rename durable; some platforms cannot open a directory, which is then a no-op."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: How S3 and GCS say a key may not do what was asked.
_DENIED: Final = ("ACCESS_DENIED", "AccessDenied", "PERMISSION_DENIED", "403", "Forbidden")


class ObjectStorage:
    """Objects under ``bucket/prefix`` of a ``pyarrow.fs`` filesystem (S3 or GCS)."""

    def __init__(self, url: str, fs: object, base: str, table_options: dict[str, str] | None = None) -> None:
        import pyarrow.fs as pafs

        self.url = url.rstrip("/")
        self.fs: pafs.FileSystem = cast(pafs.FileSystem, fs)
        self.base = base.strip("/")
        self._table_options = dict(table_options or {})

    def _path(self, relpath: str) -> str:
        return f"{self.base}/{_clean_relpath(relpath)}"

    @contextmanager
    def _remote(self, doing: str, relpath: str) -> Iterator[None]:
        """A failed call (unreachable, refused, retries spent) as one line naming the object;
        a missing object stays ``FileNotFoundError``."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as exc:
            detail = " ".join(str(exc).split()).split(" error_info=")[0][:300]  # GCS appends its metadata
            raise BtpipeError(f"cannot {doing} {location(self, relpath)}: {detail}") from exc

    @contextmanager
    def open_atomic(self, relpath: str, *, final: Callable[[], str] | None = None) -> Iterator[BinaryIO]:
        with (
            self._remote("write", relpath),
            tempfile.TemporaryFile(prefix="btpipe-", suffix=TEMP_SUFFIX) as spool,
        ):
            yield cast(BinaryIO, spool)
            spool.flush()
            spool.seek(0)
            target = self._path(final() if final is not None else relpath)
            # compression=None: pyarrow would otherwise gzip a ".gz" name a second time.
            with self.fs.open_output_stream(target, compression=None) as out:
                shutil.copyfileobj(spool, out, _COPY_CHUNK)

    def write_bytes(self, relpath: str, data: bytes) -> None:
        with self.open_atomic(relpath) as fh:
            fh.write(data)

    def read_bytes(self, relpath: str) -> bytes:
        with self.open_read(relpath) as fh:
            return fh.read()

    def exists(self, relpath: str) -> bool:
        import pyarrow.fs as pafs

        with self._remote("read", relpath):
            return bool(self.fs.get_file_info(self._path(relpath)).type == pafs.FileType.File)

    def has_bucket(self) -> bool:
        """Whether the bucket exists: listing one that does not finds no files, as an empty
        prefix would, so a reader that must find something asks first. A key that may read
        its prefix but not ask about the bucket (a denied HeadBucket) cannot tell: yes."""
        import pyarrow.fs as pafs

        try:
            found = self.fs.get_file_info(self.base.split("/", 1)[0])
        except OSError as exc:
            if any(word in str(exc) for word in _DENIED):
                return True
            raise BtpipeError(
                f"cannot read {location(self, '')}: {' '.join(str(exc).split())[:300]}"
            ) from exc
        return bool(found.type != pafs.FileType.NotFound)

    def list_files(self, prefix: str = "") -> list[str]:
        import pyarrow.fs as pafs

        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        selector = pafs.FileSelector(
            f"{self.base}/{base_dir}".rstrip("/"), recursive=True, allow_not_found=True
        )
        cut = len(self.base) + 1
        with self._remote("list", base_dir):
            infos = self.fs.get_file_info(selector)
        found = (info.path[cut:] for info in infos if info.type == pafs.FileType.File)
        return sorted(p for p in found if _matches(p, prefix))

    def delete(self, relpath: str) -> None:
        if not self.exists(relpath):
            raise FileNotFoundError(location(self, relpath))
        with self._remote("delete", relpath):
            self.fs.delete_file(self._path(relpath))

    @contextmanager
    def open_read(self, relpath: str) -> Iterator[BinaryIO]:
        if not self.exists(relpath):
            raise FileNotFoundError(location(self, relpath))
        with self._remote("read", relpath), self.fs.open_input_file(self._path(relpath)) as fh:
            yield cast(BinaryIO, fh)

    def cleanup_temp(self, prefix: str = "") -> list[str]:
        """Nothing to do: object uploads are spooled locally and never leave a partial object."""
        return []

    def table_location(self, relpath: str) -> TableLocation:
        scheme = urlparse(self.url).scheme
        path = self._path(relpath) if relpath else self.base
        return TableLocation(f"{scheme}://{path}", dict(self._table_options))


@dataclass(frozen=True)
class _S3Settings:
    """Where and as whom S3 is reached: the options given, else the usual AWS variables."""

    endpoint: str | None
    region: str | None
    credentials: dict[str, str]

    @classmethod
    def of(cls, options: dict[str, object]) -> _S3Settings:
        endpoint = (
            options.get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        region = options.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        credentials = {
            key: str(options[key])
            for key in ("access_key", "secret_key", "session_token")
            if options.get(key)
        }
        return cls(str(endpoint) if endpoint else None, str(region) if region else None, credentials)

    def table_options(self, retries: Retries) -> dict[str, str]:
        """The same settings as ``deltalake`` ``storage_options``; credentials not given as
        options it finds in the environment as pyarrow does."""
        found = {"max_retries": str(max(0, retries.attempts - 1))}
        if self.endpoint:
            found["AWS_ENDPOINT_URL"] = self.endpoint
            if self.endpoint.startswith("http://"):
                found["AWS_ALLOW_HTTP"] = "true"
        if self.region:
            found["AWS_REGION"] = self.region
        names = {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY",
                 "session_token": "AWS_SESSION_TOKEN"}  # fmt: skip
        found.update({names[key]: value for key, value in self.credentials.items()})
        return found


def _s3_filesystem(settings: _S3Settings, retries: Retries) -> object:
    import pyarrow.fs as pafs

    kwargs: dict[str, object] = {}
    if settings.endpoint:
        parsed = urlparse(settings.endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if settings.region:
        kwargs["region"] = settings.region
    kwargs.update(settings.credentials)
    kwargs["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=retries.attempts)
    return pafs.S3FileSystem(**kwargs)


def _gcs_filesystem(options: dict[str, object], retries: Retries) -> object:
    import pyarrow.fs as pafs

    kwargs = {k: v for k, v in options.items() if k in ("endpoint_override", "scheme", "project_id")}
    emulator = os.environ.get(GCS_EMULATOR_ENV)
    if emulator and "endpoint_override" not in kwargs:  # as the Google clients do: no credentials
        parsed = urlparse(emulator if "://" in emulator else f"http://{emulator}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme, anonymous=True)
    return pafs.GcsFileSystem(**kwargs, retry_time_limit=timedelta(seconds=retries.seconds))


def open_storage(url: str, *, retries: Retries | None = None, **options: object) -> Storage:
    """Storage for a local path, ``file://`` URL, ``s3://bucket/prefix`` or ``gs://bucket/prefix``.

    S3 options (or the usual AWS environment variables): ``endpoint_url``, ``region``,
    ``access_key``, ``secret_key``, ``session_token``. GCS options: ``endpoint_override``,
    ``scheme``, ``project_id`` (or ``$STORAGE_EMULATOR_HOST``). ``retries`` bounds every
    object-storage call (default: the API client's default retry settings). An empty ``url``
    is refused: it would mean the current directory, which nobody names by leaving it out.
    """
    if not url.strip():
        raise UsageError("an empty path was given where a directory, s3:// or gs:// location belongs")
    retries = retries or Retries()
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # one letter: a Windows drive
        return LocalStorage(parsed.path if parsed.scheme == "file" else url)
    if parsed.scheme not in ("s3", "gs"):
        raise UsageError(f"unsupported storage URL scheme {parsed.scheme!r} in {url}")
    if not parsed.netloc:
        raise UsageError(f"storage URL {url} names no bucket")
    base = f"{parsed.netloc}/{parsed.path.strip('/')}"
    if parsed.scheme == "gs":
        return ObjectStorage(url, _gcs_filesystem(options, retries), base)
    settings = _S3Settings.of(options)
    return ObjectStorage(url, _s3_filesystem(settings, retries), base, settings.table_options(retries))
