"""One writer per root: the lease a run holds on its output root or state file from start to end.

Two runs writing one root (two cron hosts overlapping, an ad-hoc export into the backup root)
would resume the same unfinished run, overwrite each other's part files, state and manifest,
and delete each other's temporary files. So every writer first takes the root's lease and
keeps it until it has published its last byte: ``export`` and ``btpipe run`` hold
``_lease.json`` under the output root (``btpipe run`` through its exports and retention);
import and migrate hold one beside their state file in ``--state-dir``. A run that finds the
lease held waits up to ``--wait-lease`` seconds for it, then exits with one line naming the
holder (:class:`~pipeline.common.errors.LeaseHeld`, exit 6).

The lease is one small JSON document, :class:`Holder`: a random owner id, the host, pid and
pid namespace, the command, when the run started and its last heartbeat; never a credential.
How it is taken depends on the storage:

* a local directory: the document is written to a temporary file and hard-linked to the
  lease's name, which fails when the name exists, so exactly one run creates it, whole;
* object storage (``s3://``, ``gs://``): pyarrow's filesystems offer no conditional write, so
  the run writes the lease, waits :data:`SETTLE_SECONDS` and reads it back: of runs writing
  at about the same moment, the last write wins and the others read an owner that is not
  theirs. The residual race: a run whose read (lease absent or stale) and write are further
  apart than the settle time (a process paused in between) can overwrite a lease another run
  has just confirmed. Both then believe they hold it until the first one's next check, which
  fails, so it stops before its next publish; a publish already past its check completes.

The holder refreshes the heartbeat from a background thread every :func:`heartbeat_seconds`
(after checking the lease is still its own), and checks the lease again before every publish:
:func:`guarded` wraps the run's storage so that each file, state save, manifest and deletion
is preceded by a read of the lease (:class:`LeaseLost` when another run owns it now).

A lease is stale, and is taken over with a warning, when its last write is older than the
stale bound (``$BTPIPE_LEASE_STALE_SECONDS``, default two minutes), measured by the storage's
own clock (the file's or object's modification time) against this host's; or, on the same
host and pid namespace, when its process is gone. It is released (deleted if still ours) on
every way out: success, error, Ctrl-C. A ``kill -9`` leaves it behind, stale at once for a
run on the same host and after the bound for any other.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import BinaryIO, Protocol, TypeVar

import anyio
import orjson

from pipeline.common.defaults import LEASE_STALE, BadValue
from pipeline.common.errors import BtpipeError, LeaseHeld, LeaseLost, UsageError
from pipeline.common.storage import LocalStorage, ObjectStorage, Storage, TableLocation, why_not_written

#: The output root's lease, relative to the root.
ROOT_LEASE = "_lease.json"
#: Object storage: how long a run waits between writing the lease and reading it back.
SETTLE_SECONDS = 1.0
#: Longest pause between heartbeats and between looks at a held lease while waiting.
MAX_INTERVAL_SECONDS = 10.0

log = logging.getLogger(__name__)
T = TypeVar("T")


def stale_seconds() -> float:
    """The stale bound: ``$BTPIPE_LEASE_STALE_SECONDS`` or the default."""
    text = os.environ.get(str(LEASE_STALE.envvar))
    if text is None:
        return LEASE_STALE.default
    try:
        return LEASE_STALE.parse(text)
    except BadValue as exc:
        raise UsageError(f"${LEASE_STALE.envvar}: {exc}") from None


def heartbeat_seconds(stale_after: float) -> float:
    """A quarter of the stale bound, at most ten seconds: several beats fit in the bound."""
    return min(MAX_INTERVAL_SECONDS, stale_after / 4)


_TIME = "%Y-%m-%dT%H:%M:%SZ"


def _now() -> str:
    return datetime.now(UTC).strftime(_TIME)


def _parse_time(text: str) -> float:
    try:
        return datetime.strptime(text, _TIME).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return time.time()


def _pid_namespace() -> str | None:
    """This process's pid namespace (Linux), so a pid is only judged where it means the same process."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_gone(pid: int) -> bool:
    if pid <= 0:  # not a process of its own: cannot be judged
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    try:  # a killed process its parent has not reaped yet still answers
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class Holder:
    """The lease document: who holds it. ``owner`` is random per run, so a run knows its own
    lease from another's of the same host and pid."""

    owner: str
    host: str
    pid: int
    pid_namespace: str | None
    command: str
    started: str
    heartbeat: str

    @classmethod
    def for_this_process(cls, command: str) -> Holder:
        now = _now()
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid(), _pid_namespace(), command, now, now)

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """The holder in ``data``; None when it is not a lease document."""
        try:
            raw = orjson.loads(data)
            holder = cls(**{name: raw[name] for name in cls.__dataclass_fields__})
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return None
        texts = (holder.owner, holder.host, holder.command, holder.started, holder.heartbeat)
        if type(holder.pid) is not int or not all(isinstance(t, str) for t in texts):
            return None
        return holder

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    def beat(self) -> Holder:
        return replace(self, heartbeat=_now())

    def describe(self) -> str:
        return f"{self.command} on host {self.host}, pid {self.pid}, since {self.started}"

    def gone(self) -> bool:
        """True when the holder ran on this host and pid namespace and its process has ended."""
        return (
            self.host == socket.gethostname()
            and self.pid_namespace == _pid_namespace()
            and _process_gone(self.pid)
        )


@dataclass(frozen=True)
class Seen:
    """A lease as read: its holder (None: unreadable) and seconds since it was last written."""

    data: bytes
    holder: Holder | None
    age: float

    def stale(self, stale_after: float) -> str | None:
        """Why the lease may be taken over, or None while its holder counts as alive."""
        if self.holder is not None and self.holder.gone():
            return "that process is gone"
        if self.age > stale_after:
            return f"no heartbeat for {int(self.age)}s"
        return None

    def describe(self) -> str:
        return "another run (its lease cannot be read)" if self.holder is None else self.holder.describe()


# -- where a lease lives -------------------------------------------------------------------


class _Place(Protocol):
    """The storage operations a lease needs, per kind of storage."""

    @property
    def storage(self) -> Storage: ...

    def read(self) -> Seen | None: ...
    def create(self, data: bytes) -> bool: ...
    def take_over(self, stale: Seen, data: bytes) -> bool: ...
    def rewrite(self, data: bytes) -> None: ...
    def remove(self) -> None: ...


@contextmanager
def _one_at_a_time(directory: str) -> Iterator[None]:
    """Serialise the runs of this host taking over a lease in ``directory``: a lock on the
    directory itself, so no lock file is left behind, released when the process ends however it
    ends. Where the filesystem refuses it (some network filesystems) nothing is locked."""
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)


class _LocalPlace:
    """A lease file in a local directory: created by hard link, so only if absent."""

    def __init__(self, storage: LocalStorage, relpath: str) -> None:
        self.path = os.path.join(storage.root, *relpath.split("/"))
        self.storage = storage
        self.relpath = relpath

    def _temp(self) -> str:
        directory, name = os.path.split(self.path)
        return os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")  # a temp name: cleaned if left

    def read(self) -> Seen | None:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
                modified = os.fstat(fh.fileno()).st_mtime
        except (FileNotFoundError, NotADirectoryError):  # a file where a directory goes: create says so
            return None
        return Seen(data, Holder.parse(data), max(0.0, time.time() - modified))

    @contextmanager
    def _written(self, data: bytes) -> Iterator[str]:
        """A durable temporary file holding ``data``, removed on the way out."""
        temp = self._temp()
        os.makedirs(os.path.dirname(temp), exist_ok=True)
        try:
            with open(temp, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            yield temp
        finally:
            try:
                os.unlink(temp)
            except FileNotFoundError:  # already gone: linked and unlinked, or cleaned by a holder
                pass

    def create(self, data: bytes) -> bool:
        with self._written(data) as temp:
            try:
                os.link(temp, self.path)
            except FileExistsError:
                return False
            except FileNotFoundError:  # the temp file was cleaned away under us: try again
                return False
        return True

    def take_over(self, stale: Seen, data: bytes) -> bool:
        """Replace the stale lease with ours, one run at a time: a run that comes second finds
        the lease changed since it judged it and takes nothing. The stale lease is moved aside
        (atomic) and compared again; if its holder beat meanwhile it is put back."""
        with _one_at_a_time(os.path.dirname(self.path)):
            current = self.read()
            if current is None or current.data != stale.data:
                return False
            aside = self._temp()
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return False
            try:
                with open(aside, "rb") as fh:
                    moved = fh.read()
                if moved != stale.data:
                    try:
                        os.link(aside, self.path)
                    except FileExistsError:  # a new run created one meanwhile: its holder wins
                        pass
                    return False
            finally:
                os.unlink(aside)
            return self.create(data)

    def rewrite(self, data: bytes) -> None:
        self.storage.write_bytes(self.relpath, data)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _ObjectPlace:
    """A lease object: written, then read back after a settle time (no conditional writes)."""

    def __init__(self, storage: ObjectStorage, relpath: str) -> None:
        self.storage = storage
        self.relpath = relpath

    def read(self) -> Seen | None:
        import pyarrow.fs as pafs

        try:
            data = self.storage.read_bytes(self.relpath)
        except FileNotFoundError:
            return None
        info = self.storage.fs.get_file_info(f"{self.storage.base}/{self.relpath}")
        holder = Holder.parse(data)
        if info.type == pafs.FileType.File and info.mtime is not None:
            written = info.mtime.timestamp()  # by the storage's clock
        else:  # a store that keeps no time: the holder's own
            written = _parse_time(holder.heartbeat) if holder is not None else time.time()
        return Seen(data, holder, max(0.0, time.time() - written))

    def create(self, data: bytes) -> bool:
        self.storage.write_bytes(self.relpath, data)
        time.sleep(SETTLE_SECONDS)
        back = self.read()
        return back is not None and back.data == data

    def take_over(self, stale: Seen, data: bytes) -> bool:
        current = self.read()
        if current is not None and current.data != stale.data:  # its holder beat meanwhile
            return False
        return self.create(data)

    def rewrite(self, data: bytes) -> None:
        self.storage.write_bytes(self.relpath, data)

    def remove(self) -> None:
        try:
            self.storage.delete(self.relpath)
        except FileNotFoundError:
            pass


def _place(storage: Storage, relpath: str) -> _Place:
    inner = storage.inner if isinstance(storage, GuardedStorage) else storage
    if isinstance(inner, LocalStorage):
        return _LocalPlace(inner, relpath)
    if isinstance(inner, ObjectStorage):
        return _ObjectPlace(inner, relpath)
    raise TypeError(f"no lease for storage {type(inner).__name__}")


# -- holding a lease ----------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """What a process other than the holder needs to check the lease before it publishes
    (the export's encoder processes); pickles."""

    relpath: str
    owner: str
    where: str
    stale_after: float

    def lost(self, seen: Seen | None) -> str | None:
        """Why ``seen`` is not this run's lease any more, or None while it is."""
        if seen is not None and seen.holder is not None and seen.holder.owner == self.owner:
            return None
        taker = "removed" if seen is None else f"taken over by {seen.describe()}"
        return f"{self.where}: this run's lease was {taker}; stopped before publishing more"

    def verify(self, storage: Storage) -> None:
        """Raise :class:`LeaseLost` unless the lease is still ours and fresh."""
        try:
            seen = _place(storage, self.relpath).read()
        except OSError as exc:
            raise BtpipeError(f"{self.where}: cannot read this run's lease: {exc.strerror or exc}") from exc
        lost = self.lost(seen)
        if lost is not None:
            raise LeaseLost(lost)
        assert seen is not None
        if seen.age > self.stale_after:
            raise LeaseLost(
                f"{self.where}: this run's lease was not renewed for {int(seen.age)}s and may be taken "
                "over; stopped before publishing more"
            )


class Lease:
    """A held lease. :meth:`check` before each publish; the heartbeat thread keeps it fresh
    until :meth:`release`."""

    def __init__(self, place: _Place, holder: Holder, guard: Guard) -> None:
        self._place = place
        self.holder = holder
        self.guard = guard
        self._lost: str | None = None
        self._io = threading.Lock()  # a beat never writes after the release removed the lease
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="btpipe-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is still this run's (re-read from storage)."""
        if self._lost is not None:
            raise LeaseLost(self._lost)
        try:
            self.guard.verify(self._place.storage)
        except LeaseLost as exc:
            self._lost = str(exc)
            raise

    def _beat(self) -> None:
        interval = heartbeat_seconds(self.guard.stale_after)
        while not self._released.wait(interval):
            with self._io:
                if self._released.is_set():
                    return
                try:
                    self._lost = self.guard.lost(self._place.read())
                    if self._lost is not None:
                        return
                    beat = self.holder.beat()
                    self._place.rewrite(beat.to_bytes())
                    self.holder = beat
                except (OSError, BtpipeError):  # unreachable for a moment: the next beat tries again
                    continue

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._released.set()
        with self._io:
            try:
                if self.guard.lost(self._place.read()) is None:
                    self._place.remove()
            except (OSError, BtpipeError) as exc:  # left behind: stale once its heartbeat is old
                log.warning("%s: could not release the lease (%s)", self.guard.where, exc)


def attempt(storage: Storage, relpath: str, mine: Holder, stale_after: float, where: str) -> Seen | None:
    """One try at the lease at ``relpath`` for ``mine`` (blocking): None when it is now ours,
    else the lease that stands in the way."""
    place = _place(storage, relpath)
    data = mine.to_bytes()
    seen = place.read()
    while seen is None:  # free: create it, unless another run is faster
        if place.create(data):
            return None
        seen = place.read()
    reason = seen.stale(stale_after)
    if reason is None:
        return seen
    if place.take_over(seen, data):
        log.warning("%s: taking over the lease of %s: %s", where, seen.describe(), reason)
        return None
    return place.read() or seen


def _storage_error(where: str, exc: OSError) -> BtpipeError:
    """A failed read or write of the lease as one line; a full disk is a failure, anything else
    (no permission, a file where a directory goes) a usage error, as for every other file."""
    error = BtpipeError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else UsageError
    return error(f"cannot write to {where}: {why_not_written(exc, where)}")


def _busy(where: str, seen: Seen, waited: float) -> LeaseHeld:
    then = f"gave up after waiting {waited:g}s" if waited else "wait for it with --wait-lease SECONDS"
    return LeaseHeld(f"{where} is in use by {seen.describe()} (last heartbeat {int(seen.age)}s ago); {then}")


async def acquire(storage: Storage, relpath: str, *, command: str, wait: float, where: str) -> Lease:
    """Take the lease at ``relpath`` under ``storage`` for ``command``, waiting up to ``wait``
    seconds while another run holds it; :class:`LeaseHeld` naming the holder after that.
    ``where`` names the root or file in messages."""
    stale_after = stale_seconds()
    place = _place(storage, relpath)
    mine = Holder.for_this_process(command)
    deadline = time.monotonic() + wait
    while True:
        try:
            seen = await anyio.to_thread.run_sync(attempt, storage, relpath, mine, stale_after, where)
        except OSError as exc:
            raise _storage_error(where, exc) from exc
        if seen is None:
            return Lease(place, mine, Guard(relpath, mine.owner, where, stale_after))
        left = deadline - time.monotonic()
        if left <= 0:
            raise _busy(where, seen, wait)
        await anyio.sleep(min(left, heartbeat_seconds(stale_after), 1.0))


@asynccontextmanager
async def hold(
    storage: Storage, relpath: str, *, command: str, wait: float, where: str | None = None
) -> AsyncIterator[Lease]:
    """Hold the lease at ``relpath`` for the ``async with`` block, released however it ends."""
    lease = await acquire(storage, relpath, command=command, wait=wait, where=where or storage.url)
    try:
        yield lease
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lease.release)


# -- publishing under a lease -------------------------------------------------------------


class GuardedStorage:
    """A storage whose every publish (a file, a state save, a manifest) and every deletion is
    preceded by ``check``, which raises when the lease is no longer this run's."""

    def __init__(self, inner: Storage, check: Callable[[], None]) -> None:
        self.inner = inner
        self.url = inner.url
        self._check = check

    @contextmanager
    def open_atomic(self, relpath: str, *, final: Callable[[], str] | None = None) -> Iterator[BinaryIO]:
        try:
            with self.inner.open_atomic(relpath, final=final) as fh:
                yield fh
                self._check()  # raising here discards the file unpublished
        except (BtpipeError, OSError) as exc:
            if not isinstance(exc, LeaseLost):
                # Another run may have taken the root over since the check, its clean-up
                # deleting this file before it was renamed: then that is what to report.
                self._check()
            raise

    def write_bytes(self, relpath: str, data: bytes) -> None:
        with self.open_atomic(relpath) as fh:
            fh.write(data)

    def delete(self, relpath: str) -> None:
        self._check()
        self.inner.delete(relpath)

    def read_bytes(self, relpath: str) -> bytes:
        return self.inner.read_bytes(relpath)

    def exists(self, relpath: str) -> bool:
        return self.inner.exists(relpath)

    def list_files(self, prefix: str = "") -> list[str]:
        return self.inner.list_files(prefix)

    def open_read(self, relpath: str) -> AbstractContextManager[BinaryIO]:
        return self.inner.open_read(relpath)

    def cleanup_temp(self, prefix: str = "") -> list[str]:
        return self.inner.cleanup_temp(prefix)

    def table_location(self, relpath: str) -> TableLocation:
        return self.inner.table_location(relpath)

    def check(self) -> None:
        """Raise unless the lease is still this run's: what a write made outside this
        interface (a Delta commit) checks first."""
        self._check()


def guarded(storage: Storage, lease: Lease) -> GuardedStorage:
    """``storage`` checking ``lease`` before every publish and deletion."""
    return GuardedStorage(storage, lease.check)


def with_guard(build: Callable[[Storage], T], guard: Guard, storage: Storage) -> T:
    """``build(storage)`` with ``storage`` checking the lease ``guard`` describes; as
    ``partial(with_guard, build, guard)`` it pickles, for sinks built in a worker process."""
    return build(GuardedStorage(storage, partial(guard.verify, storage)))
