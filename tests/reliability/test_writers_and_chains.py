"""Exports and restores while other clients write: each run holds its snapshot exactly, each
restore equals the source at the run it names.

Two other clients (plain HTTP, one per object) write a project's logs and a dataset without a
break: every request inserts new rows (some re-creating ids deleted before), overwrites one
row, merges two (``_is_merge``) and deletes one. Meanwhile a series of full and incremental
exports (separate processes, as cron runs them) goes into one root, each split into several
ranges read in small pages, under injected faults: 429, 5xx, dropped connections, truncated
bodies and pages cut short. Then, checked against the server read pinned through ``/btql``:

* every run's files hold exactly the rows the source held at the run's ``snapshot_version``
  (a full run all of them, an incremental run those written since the version of the run it
  continues), each id once, each row's content hash equal; an incremental run's tombstones
  are exactly the ids there at the previous run's version and gone at its own;
* restoring the root (``import --in ROOT``, and ``--until`` randomly chosen earlier runs) into
  fresh projects, with jittered latency so that requests overtake each other, gives exactly
  the rows the source held at that run: updated rows as they were then, deleted rows absent,
  including rows deleted before the chain's base, which runs older than it still hold.

Each writer request deletes fewer rows than it inserts, so an object's newest write is never
a delete alone and its row count never falls while it is read: reads stay pinned, and the
state at a run is the read pinned at its version. Objects whose newest writes are deletes are
read unpinned; ``tests/export/test_concurrent_writers.py`` and ``test_restore_chain.py``
cover them.
"""

from __future__ import annotations

import random
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.emulator.faults import ALL_KINDS, FaultConfig
from pipeline.emulator.rowwrite import Target
from pipeline.emulator.sample import bulk_load
from pipeline.emulator.server import RunningServer, ServerConfig
from tests.conftest import PROFILES
from tests.helpers import all_rows, post, unique
from tests.reliability.support import (
    RETRY_FLAGS,
    SCALES,
    Scale,
    cli_env,
    hashes,
    record,
    rows_at,
    run_cli,
)

KEY = "bt-local-key"
LABELS = {"logs": "project_logs", "dataset": "dataset"}
#: Every fault kind, pages cut short among them, on 15% of the exports' requests.
FAULTS = dict(rate=0.15, kinds=ALL_KINDS, retry_after=0, latency_ms=1, jitter_ms=4)
#: Several ranges per object, each many small pages, a few at a time.
EXPORT_FLAGS = ("--format", "jsonl", "--min-rows-per-range", "100", "--ranges-per-object", "4",
                "--workers", "3", "--page-limit", "37", "--json", "--quiet", *RETRY_FLAGS)  # fmt: skip
#: Many small batches in flight at once, so that without an order between runs a newer version
#: of a row could land before an older one.
RESTORE_FLAGS = ("--batch-rows", "40", "--workers", "12", "--json", "--quiet", *RETRY_FLAGS)
#: Every how many runs one reads everything again (a new base); the others are incremental.
FULL_EVERY = 3
BASE_TIME = datetime(2026, 1, 5, 6, tzinfo=UTC)


def created(i: int) -> str:
    """Seeded rows' ``created``: ten seconds apart, so ranges split by time hold many rows."""
    return (BASE_TIME + timedelta(seconds=10 * i)).isoformat()


#: The field holding a row's answer: logs have an output, datasets an expected value.
ANSWER = {"project_logs": "output", "dataset": "expected"}


def new_row(object_type: str, n: int, rng: random.Random, seeded: int) -> dict[str, Any]:
    """A row a writer adds: half created now, half back among the seeded times (so that
    ranges split by ``created`` get new rows in the middle as well as at the end)."""
    row: dict[str, Any] = {"id": f"w{object_type[0]}{n:07d}", "input": {"q": n},
                           ANSWER[object_type]: f"new {n}", "metadata": {"by": "writer", "n": n}}  # fmt: skip
    if rng.random() < 0.5:
        row["created"] = created(rng.randrange(seeded))
    return row


@dataclass(frozen=True)
class Server:
    url: str
    running: RunningServer
    profile: str
    key: str = KEY


@pytest.fixture(scope="module", params=PROFILES, ids=[f"{p}-profile" for p in PROFILES])
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    """An emulator of this module's own (its faults and jitter slow nobody else), of each
    capability profile: ``_xact_id`` ranges and counts at a version, or neither."""
    db = tmp_path_factory.mktemp("writers") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), profile=request.param)) as running:
        yield Server(running.url, running, request.param)


class Writer(threading.Thread):
    """Another client writing one object in a loop over plain HTTP until stopped. It knows
    which ids are there (nobody else writes the object), so that what it deletes, merges and
    overwrites exists, and what it re-creates was deleted."""

    def __init__(self, server: Server, object_type: str, object_id: str, ids: list[str], seed: int) -> None:
        super().__init__(daemon=True)
        self.server, self.object_type, self.object_id = server, object_type, object_id
        self.live, self.deleted = list(ids), list[str]()
        self.seeded = len(ids)
        self.rng = random.Random(seed)
        self.events = 0  # events written: inserts, overwrites, merges, deletes
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def request(self, n: int) -> list[dict[str, Any]]:
        """Two inserts (one re-creating a deleted id, every fifth request), an overwrite, two
        merges and a delete, of distinct ids: the row count grows by one."""
        rng = self.rng
        changed = rng.sample(self.live, 4)
        overwritten, merged, gone = changed[0], changed[1:3], changed[3]
        added = [new_row(self.object_type, 2 * n + i, rng, self.seeded) for i in range(2)]
        if n % 5 == 4 and self.deleted:
            added[1]["id"] = self.deleted.pop(rng.randrange(len(self.deleted)))
        self.live.remove(gone)
        self.deleted.append(gone)
        self.live.extend(row["id"] for row in added)
        return [
            *added,
            {"id": overwritten, "input": {"overwritten": n}, ANSWER[self.object_type]: f"overwritten {n}"},
            *({"id": i, "_is_merge": True, "metadata": {"merged": n}} for i in merged),
            {"id": gone, "_object_delete": True},
        ]

    def run(self) -> None:
        try:
            n = 0
            while not self.stopping.is_set():
                events = self.request(n)
                post(self.server.url, self.server.key, self.path, {"events": events})
                self.events += len(events)
                n += 1
                self.stopping.wait(0.01)
        except BaseException as exc:  # reported by the fixture, which runs in another thread
            self.error = exc

    @property
    def path(self) -> str:
        return f"/v1/{self.object_type}/{self.object_id}/insert"


@dataclass(frozen=True)
class Run:
    """One export of the series: its id, whether it was asked to be incremental, its summary
    and manifest, and how many events the writers wrote while it ran."""

    run_id: str
    incremental: bool
    summary: dict[str, Any]
    manifest: dict[str, Any]
    writes: int

    def object(self, object_id: str) -> dict[str, Any]:
        (found,) = [o for o in self.manifest["objects"] if o["object_id"] == object_id]
        return dict(found)


@dataclass
class Series:
    """A source, the root its runs went to, the runs in order, and the source's rows at each
    version asked for (a version's rows never change, so each is read once)."""

    server: Server
    scale: Scale
    project: dict[str, Any]
    objects: dict[str, str]  # label -> object id
    root: Path
    runs: list[Run] = field(default_factory=list)
    faults: int = 0
    _at: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def at(self, label: str, version: str) -> dict[str, Any]:
        """The source's rows of object ``label`` at ``version``, by id."""
        key = (label, version)
        if key not in self._at:
            server = self.server
            self._at[key] = rows_at(server.url, server.key, LABELS[label], self.objects[label], version)
        return self._at[key]

    def version(self, run: Run, label: str) -> str:
        found: str = run.object(self.objects[label])["snapshot_version"]
        return found

    def state(self, run: Run) -> dict[str, dict[str, str]]:
        """By label, the source's rows at ``run`` (id -> content hash)."""
        return {label: hashes(self.at(label, self.version(run, label)).values()) for label in self.objects}


def seed(server: Server, rows: int) -> tuple[dict[str, Any], dict[str, str], dict[str, list[str]]]:
    """A project with ``rows`` log rows and a dataset of a quarter as many, written straight
    into the store: the project, object ids by label, and the ids by label."""
    project: dict[str, Any] = post(server.url, server.key, "/v1/project", {"name": unique("writers")})
    dataset = post(server.url, server.key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    objects = {"logs": project["id"], "dataset": dataset["id"]}
    ids: dict[str, list[str]] = {}
    for label, count in (("logs", rows), ("dataset", rows // 4)):
        target = Target(LABELS[label], objects[label], project["id"], project["org_id"])
        ids[label] = [f"{label[0]}{i:06d}" for i in range(count)]
        bulk_load(server.running.store, target, (
            {"id": row_id, "created": created(i), "input": {"q": i, "text": "x" * (i % 50)},
             ANSWER[target.object_type]: f"seeded {i}", "metadata": {"group": i % 7}}
            for i, row_id in enumerate(ids[label])
        ))  # fmt: skip
    return project, objects, ids


def export(env: dict[str, str], project: str, root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """One export run into ``root``, as a separate process; one that does not end fails."""
    try:
        return run_cli(env, "export", "--project", project, "--objects", "logs,datasets", "--out", str(root),
                       *EXPORT_FLAGS, *flags, timeout=600)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError("an export did not end within 10 minutes") from None


@pytest.fixture(scope="module", params=SCALES)
def series(
    server: Server, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Series:
    """``Scale.writer_runs`` exports into one root while the writers write, under faults: the
    first and every ``FULL_EVERY``-th read everything, the others are incremental."""
    scale: Scale = request.param
    project, objects, ids = seed(server, scale.writer_rows)
    found = Series(server, scale, project, objects, tmp_path_factory.mktemp("writers-root") / "root")
    writers = [
        Writer(server, LABELS[label], objects[label], ids[label], seed=n) for n, label in enumerate(ids)
    ]
    exempt = tuple(w.path for w in writers)  # the writers are other clients: faults are the exports'
    env = cli_env(server.url, server.key)
    for writer in writers:
        writer.start()
    try:
        for n in range(scale.writer_runs):
            incremental = n % FULL_EVERY != 0
            before = sum(w.events for w in writers)
            server.running.faults.replace(FaultConfig(**FAULTS, seed=n, exempt=exempt))
            done = export(env, project["name"], found.root, *(["--incremental"] if incremental else []))
            found.faults += sum(server.running.faults.statistics().faults.values())
            server.running.faults.replace(FaultConfig())
            assert done.returncode == 0, done.stderr
            assert not [w.error for w in writers if w.error], [w.error for w in writers]
            summary = orjson.loads(done.stdout)
            manifest = orjson.loads((found.root / summary["manifest"]).read_bytes())
            writes = sum(w.events for w in writers) - before
            found.runs.append(Run(summary["run_id"], incremental, summary, manifest, writes))
    finally:
        for writer in writers:
            writer.stopping.set()
        for writer in writers:
            writer.join(timeout=60)
    for writer in writers:
        assert writer.error is None, f"a writer failed: {writer.error!r}"
    return found


def file_rows(root: Path, obj: dict[str, Any]) -> dict[str, str]:
    """The rows of one object's files in one run, id -> content hash; an id twice fails."""
    lines = [
        line for f in obj["files"] for line in (root / f["path"]).read_bytes().splitlines() if line.strip()
    ]
    return hashes(orjson.loads(line) for line in lines)


def tombstones(runs: list[Run]) -> int:
    """How many ids ``runs`` recorded as deleted since the run before each."""
    return sum(o["tombstones"]["rows"] for r in runs for o in r.manifest["objects"] if o["tombstones"])


def tombstone_ids(root: Path, obj: dict[str, Any]) -> set[str]:
    lines = (root / obj["tombstones"]["path"]).read_bytes().splitlines()
    return {orjson.loads(line)["id"] for line in lines if line.strip()}


def test_every_run_under_writers_holds_its_snapshot_exactly(series: Series) -> None:
    checked = 0
    for n, run in enumerate(series.runs):
        assert run.writes > 0, f"run {n}: nothing was written while it ran"
        for label, object_id in series.objects.items():
            obj = run.object(object_id)
            version = obj["snapshot_version"]
            (summary,) = [o for o in run.summary["objects"] if o["id"] == object_id]
            assert version is not None and summary["version"] == version  # read pinned
            at = series.at(label, version)
            if n == 0 or not run.incremental:
                assert obj["complete"] and obj["tombstones"] is None
                expected = at
            else:
                previous = series.runs[n - 1]
                assert not obj["complete"] and obj["previous_run"] == previous.run_id
                since = series.version(previous, label)
                expected = {i: row for i, row in at.items() if int(row["_xact_id"]) > int(since)}
                assert tombstone_ids(series.root, obj) == set(series.at(label, since)) - set(at)
            assert expected, f"run {n}: nothing to read in {label}"
            assert file_rows(series.root, obj) == hashes(expected.values()), f"run {n}: {label}"
            assert obj["rows_written"] == len(expected)
            checked += len(expected)
    assert series.faults > 0, "no fault was injected"
    assert tombstones(series.runs) > 0, "no incremental run found a delete"
    record("runs checked", len(series.runs))
    record("rows checked", checked)
    record("concurrent writes during exports", sum(run.writes for run in series.runs))


def restore(series: Series, state_dir: Path, *until: str) -> dict[str, dict[str, str]]:
    """Import the root into a new project with up to 80 ms of jittered latency on every
    request and many small batches in flight: by label, what the copy holds."""
    server = series.server
    server.running.faults.replace(FaultConfig(jitter_ms=80, seed=len(until)))
    try:
        done = run_cli(cli_env(server.url, server.key), "import", "--in", str(series.root), "--to-project",
                       unique("restored"), "--create-project", "--state-dir", str(state_dir), *RESTORE_FLAGS,
                       *until)  # fmt: skip
    finally:
        server.running.faults.replace(FaultConfig())
    assert done.returncode == 0, done.stderr
    copies = {o["source"]: o["destination_id"] for o in orjson.loads(done.stdout)["objects"]}
    assert set(copies) == {"logs", "dataset:golden"}, copies
    return {
        label: hashes(all_rows(server.url, server.key, LABELS[label], copies[name]).values())
        for label, name in (("logs", "logs"), ("dataset", "dataset:golden"))
    }


def test_restores_of_the_chain_equal_the_source_at_the_chosen_run(series: Series, tmp_path: Path) -> None:
    runs = series.runs
    rng = random.Random(f"{series.server.profile}-{len(runs)}")
    earlier = rng.sample(range(len(runs) - 1), min(series.scale.earlier_restores, len(runs) - 1))
    checked = deletes = 0
    for n in [len(runs) - 1, *sorted(earlier)]:
        run = runs[n]
        base = max(i for i in range(n + 1) if i == 0 or not runs[i].incremental)
        state = series.state(run)
        if base > 0:  # rows older runs hold but deleted before the base: they must not come back
            older = {i for r in runs[:base] for o in r.manifest["objects"] for i in file_rows(series.root, o)}
            assert older - {i for rows in state.values() for i in rows}, "no row was deleted before the base"
        until = () if n == len(runs) - 1 else ("--until", run.run_id)
        assert restore(series, tmp_path / f"state-{n}", *until) == state, f"restore of run {n}"
        checked += sum(map(len, state.values()))
        deletes += tombstones(runs[base + 1 : n + 1])
    record("restores checked", 1 + len(earlier))
    record("rows checked", checked)
    record("deletes applied", deletes)
