"""One writer per root: two runs into one output root (or one state file) never both write.

Every test runs btpipe as separate processes, as cron jobs on one host would, against an
emulator slowed down so the runs overlap. The loser must exit with the documented one line
naming the holder (host, pid, since when), the winner must leave exactly the source rows once,
every file matching its manifest entry, and nothing else: no temporary files, no lease.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from pipeline.common import lease
from pipeline.common.errors import EXIT_BUSY, EXIT_INTERRUPTED, LeaseLost
from pipeline.common.manifest import Manifest
from pipeline.common.storage import open_storage
from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer, ServerConfig
from pipeline.jobs.retention import project_runs, prune_runs
from tests.helpers import all_rows, moto_s3, post, s3_client, unique
from tests.reliability.support import cli_env, command, hashes, run_cli, seed_logs

KEY = "bt-local-key"
ROWS = 1_200
HOST = socket.gethostname()
BUCKET = "leases"
#: Sequential small pages and files: one export is ~30 requests and several publishes.
EXPORT_FLAGS = ("--objects", "logs", "--format", "jsonl", "--page-limit", "50", "--file-rows", "300",
                "--workers", "1", "--quiet")  # fmt: skip
LOAD_FLAGS = ("--batch-rows", "100", "--workers", "1", "--create-project", "--quiet")
#: Enough latency that a run lasts a few seconds, well beyond the other's start-up.
SLOW = FaultConfig(latency_ms=120)
#: The stale bound the takeover tests use instead of the default two minutes.
SHORT_STALE = {"BTPIPE_LEASE_STALE_SECONDS": "2"}


@dataclass(frozen=True)
class Finished:
    pid: int
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("leases") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db))) as running:
        yield running


@pytest.fixture(scope="module")
def project(server: RunningServer) -> dict[str, Any]:
    return seed_logs(server, KEY, ROWS)


@pytest.fixture(scope="module")
def source(server: RunningServer, project: dict[str, Any]) -> dict[str, str]:
    return hashes(all_rows(server.url, KEY, "project_logs", project["id"]).values())


@pytest.fixture
def slow(server: RunningServer) -> Iterator[None]:
    server.faults.replace(SLOW)
    try:
        yield
    finally:
        server.faults.replace(FaultConfig())


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with moto_s3(BUCKET) as env:
        yield env


def export_cmd(project: dict[str, Any], out: str, *extra: str) -> list[str]:
    return command("export", "--project", project["name"], "--out", out, *EXPORT_FLAGS, *extra)


def race(env: dict[str, str], *commands: list[str]) -> list[Finished]:
    """Start every command at once and wait for all of them."""
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]  # fmt: skip
    finished = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        finished.append(Finished(proc.pid, proc.returncode, out, err))
    return finished


def winner_and_loser(results: list[Finished]) -> tuple[Finished, Finished]:
    assert sorted(r.code for r in results) == [0, EXIT_BUSY], [(r.code, r.stderr[-500:]) for r in results]
    winner = next(r for r in results if r.code == 0)
    loser = next(r for r in results if r.code == EXIT_BUSY)
    return winner, loser


def busy_line(where: str, what: str, host: str, pid: int, job: str | None = None) -> re.Pattern[str]:
    """The one line a run refused by a held lease prints (``btpipe run``'s names its ``job``)."""
    named = f"job {re.escape(job)}: " if job else ""
    return re.compile(
        rf"btpipe: error: {named}{where} is in use by {what} on host {re.escape(host)}, pid {pid}, "
        r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(last heartbeat \d+s ago\); "
        r"wait for it with --wait-lease SECONDS\n"
    )


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_local_root(
    root: Path, project: dict[str, Any], source: dict[str, str], runs: int = 1, *, pruned: bool = False
) -> None:
    """``root`` holds ``runs`` complete runs, every file matching its manifest, the record of
    pruned runs when some were (``pruned``), and nothing else."""
    manifests = [Manifest.from_json(p.read_bytes()) for p in sorted((root / "_manifests").glob("*.json"))]
    assert len(manifests) == runs
    expected = {f"_state/export-{project['id']}.json", *(["_pruned.json"] if pruned else [])}
    for manifest in manifests:
        (obj,) = manifest.objects
        assert obj.rows_written == len(source)
        expected.add(manifest.relpath)
        for info in obj.files:
            data = (root / info.path).read_bytes()
            assert (len(data), sha256(data)) == (info.bytes, info.sha256), info.path
            expected.add(info.path)
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == expected
    for manifest in manifests:
        run_dir = root / f"object_type=project_logs/object_id={project['id']}/run={manifest.run_id}"
        rows = [orjson.loads(line) for p in sorted(run_dir.iterdir()) for line in p.read_bytes().splitlines()]
        assert hashes(rows) == source


def test_two_exports_into_one_local_root_one_runs_and_the_other_names_the_holder(
    server: RunningServer, project: dict[str, Any], source: dict[str, str], tmp_path: Path, slow: None
) -> None:
    root = tmp_path / "out"
    winner, loser = winner_and_loser(race(cli_env(server.url, KEY), export_cmd(project, str(root)),
                                          export_cmd(project, str(root))))  # fmt: skip
    assert busy_line(re.escape(str(root)), "export", HOST, winner.pid).fullmatch(loser.stderr), loser.stderr
    assert winner.stderr == ""
    check_local_root(root, project, source)


def test_two_exports_into_one_s3_prefix_one_runs_and_the_other_names_the_holder(
    server: RunningServer,
    project: dict[str, Any],
    source: dict[str, str],
    s3_env: dict[str, str],
    slow: None,
) -> None:
    prefix = unique("race")
    out = f"s3://{BUCKET}/{prefix}"
    env = cli_env(server.url, KEY, **s3_env)
    winner, loser = winner_and_loser(race(env, export_cmd(project, out), export_cmd(project, out)))
    assert busy_line(re.escape(out), "export", HOST, winner.pid).fullmatch(loser.stderr), loser.stderr

    s3 = s3_client(s3_env)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
    keys = {o["Key"][len(prefix) + 1 :] for page in pages for o in page.get("Contents", [])}
    keys -= {""}  # the marker pyarrow leaves for the parent of a deleted object (the lease)
    (manifest_key,) = [k for k in keys if k.startswith("_manifests/")]

    def body(key: str) -> bytes:
        data: bytes = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()
        return data

    (obj,) = Manifest.from_json(body(manifest_key)).objects
    assert obj.rows_written == len(source)
    rows = []
    for info in obj.files:
        data = body(info.path)
        assert (len(data), sha256(data)) == (info.bytes, info.sha256), info.path
        rows.extend(orjson.loads(line) for line in data.splitlines())
    assert hashes(rows) == source
    assert keys == {manifest_key, f"_state/export-{project['id']}.json", *(f.path for f in obj.files)}


def test_a_killed_holder_leaves_a_stale_lease_the_next_run_takes_over(
    server: RunningServer, project: dict[str, Any], source: dict[str, str], tmp_path: Path, slow: None
) -> None:
    root = tmp_path / "out"
    env = cli_env(server.url, KEY, **SHORT_STALE)
    holder = subprocess.Popen(export_cmd(project, str(root)), env=env, stderr=subprocess.PIPE)
    lease_file = root / "_lease.json"
    wait_for(lambda: any(root.glob("object_type=*/*/*/*.jsonl")))  # part way: a file is published
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    held = orjson.loads(lease_file.read_bytes())
    assert (held["host"], held["pid"], held["command"]) == (HOST, holder.pid, "export")
    assert set(held) == {"owner", "host", "pid", "pid_namespace", "command", "started", "heartbeat"}
    assert KEY not in lease_file.read_text()

    after = run_cli(env, *export_cmd(project, str(root))[3:])
    assert after.returncode == 0, after.stderr
    assert re.fullmatch(
        rf"btpipe: warning: {re.escape(str(root))}: taking over the lease of export on host "
        rf"{re.escape(HOST)}, pid {holder.pid}, since \S+Z: that process is gone\n",
        after.stderr,
    ), after.stderr
    check_local_root(root, project, source)


def foreign_lease(**fields: Any) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps({"owner": "f" * 32, "host": "backup-02", "pid": 4321, "pid_namespace": None,
                         "command": "run", "started": now, "heartbeat": now, **fields})  # fmt: skip


def test_a_lease_from_another_host_is_honoured_until_its_heartbeat_is_older_than_the_bound(
    server: RunningServer, project: dict[str, Any], source: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "out"
    root.mkdir()
    lease_file = root / "_lease.json"
    lease_file.write_bytes(foreign_lease())
    env = cli_env(server.url, KEY)
    where = re.escape(str(root))

    refused = run_cli(env, *export_cmd(project, str(root))[3:])
    assert refused.returncode == EXIT_BUSY
    assert busy_line(where, "run", "backup-02", 4321).fullmatch(refused.stderr), refused.stderr
    waited = run_cli(env, *export_cmd(project, str(root), "--wait-lease", "1")[3:])
    assert waited.returncode == EXIT_BUSY
    assert re.fullmatch(
        rf"btpipe: error: {where} is in use by run on host backup-02, pid 4321, since \S+Z "
        r"\(last heartbeat \d+s ago\); gave up after waiting 1s\n",
        waited.stderr,
    ), waited.stderr
    assert os.listdir(root) == ["_lease.json"]

    # No heartbeat for longer than the bound: taken over while waiting, with a warning.
    lease_file.write_bytes(foreign_lease())
    taken = run_cli(
        cli_env(server.url, KEY, **SHORT_STALE), *export_cmd(project, str(root), "--wait-lease", "60")[3:]
    )
    assert taken.returncode == 0, taken.stderr
    assert re.fullmatch(
        rf"btpipe: warning: {where}: taking over the lease of run on host backup-02, pid 4321, "
        r"since \S+Z: no heartbeat for \d+s\n",
        taken.stderr,
    ), taken.stderr
    check_local_root(root, project, source)

    # Without waiting: a lease already older than the bound is taken over at once.
    other = tmp_path / "other"
    other.mkdir()
    (other / "_lease.json").write_bytes(foreign_lease())
    old = time.time() - 30
    os.utime(other / "_lease.json", (old, old))
    at_once = run_cli(cli_env(server.url, KEY, **SHORT_STALE), *export_cmd(project, str(other))[3:])
    assert at_once.returncode == 0, at_once.stderr
    assert re.search(r"since \S+Z: no heartbeat for \d+s\n$", at_once.stderr), at_once.stderr
    check_local_root(other, project, source)


def test_wait_lease_waits_for_a_holder_that_finishes(
    server: RunningServer, project: dict[str, Any], source: dict[str, str], tmp_path: Path, slow: None
) -> None:
    root = tmp_path / "out"
    env = cli_env(server.url, KEY)
    first = subprocess.Popen(export_cmd(project, str(root)), env=env, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (root / "_lease.json").exists())
    second = run_cli(env, *export_cmd(project, str(root), "--wait-lease", "300")[3:])
    _, first_err = first.communicate(timeout=300)
    assert (first.returncode, first_err) == (0, "")
    assert (second.returncode, second.stderr) == (0, "")
    check_local_root(root, project, source, runs=2)


def test_ctrl_c_and_errors_release_the_lease(
    server: RunningServer, project: dict[str, Any], tmp_path: Path, slow: None
) -> None:
    root = tmp_path / "out"
    env = cli_env(server.url, KEY)
    holder = subprocess.Popen(export_cmd(project, str(root)), env=env, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(root.glob("object_type=*/*/*/*.jsonl")) and (root / "_lease.json").exists())
    holder.send_signal(signal.SIGINT)
    _, err = holder.communicate(timeout=60)
    assert holder.returncode == EXIT_INTERRUPTED, err
    assert not (root / "_lease.json").exists()
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]

    missing = run_cli(env, "export", "--project", unique("missing"), "--out", str(root), "--quiet")
    assert missing.returncode == 4, missing.stderr
    assert not (root / "_lease.json").exists()


@pytest.mark.parametrize("kind", ["import", "migrate"])
def test_two_loads_with_one_state_dir_one_runs_and_the_other_names_the_holder(
    server: RunningServer,
    project: dict[str, Any],
    source: dict[str, str],
    tmp_path: Path,
    kind: str,
) -> None:
    env = cli_env(server.url, KEY)
    exported = tmp_path / "export"
    assert run_cli(env, *export_cmd(project, str(exported))[3:]).returncode == 0
    dest, state = unique(f"lease-{kind}"), tmp_path / "state"
    if kind == "import":
        load = command("import", "--in", str(exported), "--to-project", dest, "--state-dir", str(state),
                       *LOAD_FLAGS)  # fmt: skip
    else:
        load = command("migrate", "--from-project", project["name"], "--to-project", dest, "--objects", "logs",
                       "--page-limit", "100", "--state-dir", str(state), *LOAD_FLAGS)  # fmt: skip
    server.faults.replace(SLOW)
    try:
        winner, loser = winner_and_loser(race(env, load, load))
    finally:
        server.faults.replace(FaultConfig())
    where = re.escape(str(state)) + rf"/{kind}-[0-9a-f]{{16}}\.json"
    assert busy_line(where, kind, HOST, winner.pid).fullmatch(loser.stderr), loser.stderr
    restored = post(server.url, KEY, "/v1/project", {"name": dest})
    assert hashes(all_rows(server.url, KEY, "project_logs", restored["id"]).values()) == source
    assert list(state.iterdir()) == []  # state deleted, lease released


def job_file(tmp_path: Path, project: dict[str, Any], root: Path, keep_runs: int) -> str:
    path = tmp_path / "job.toml"
    path.write_text(
        '[source]\napi_key_env = "BRAINTRUST_API_KEY"\n\n[job.nightly]\nkind = "export"\n'
        f'projects = ["{project["name"]}"]\nobjects = ["logs"]\nout = "{root}"\nformat = "jsonl"\n'
        f"page_limit = 50\nfile_rows = 300\nworkers = 1\nkeep_runs = {keep_runs}\n"
    )
    return str(path)


def test_btpipe_run_holds_its_output_root_through_export_and_retention(
    server: RunningServer, project: dict[str, Any], source: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "out"
    config = job_file(tmp_path, project, root, keep_runs=1)
    env = cli_env(server.url, KEY)
    server.faults.replace(SLOW)
    try:
        winner, loser = winner_and_loser(race(env, command("run", config, "--quiet"),
                                              command("run", config, "--quiet")))  # fmt: skip
        assert busy_line(re.escape(str(root)), "run", HOST, winner.pid, "nightly").fullmatch(loser.stderr), (
            loser.stderr
        )
        check_local_root(root, project, source)

        # An export holding the root: the scheduled run neither exports nor prunes.
        before = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
        holder = subprocess.Popen(export_cmd(project, str(root)), env=env, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: (root / "_lease.json").exists())
        refused = run_cli(env, "run", config, "--quiet")
        assert refused.returncode == EXIT_BUSY
        assert busy_line(re.escape(str(root)), "export", HOST, holder.pid, "nightly").fullmatch(
            refused.stderr
        )
        assert set(before) <= {p.relative_to(root) for p in root.rglob("*") if p.is_file()}
        _, err = holder.communicate(timeout=300)
        assert (holder.returncode, err) == (0, "")
    finally:
        server.faults.replace(FaultConfig())

    pruned = run_cli(env, "run", config, "--quiet", "--json")  # keep_runs = 1: the two older runs go
    assert pruned.returncode == 0, pruned.stderr
    (job,) = orjson.loads(pruned.stdout)
    assert len(job["pruned_runs"]) == 2
    check_local_root(root, project, source, pruned=True)


def test_retention_deletes_nothing_once_the_lease_is_lost(
    server: RunningServer, project: dict[str, Any], source: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "out"
    env = cli_env(server.url, KEY)
    for _ in range(2):
        assert run_cli(env, *export_cmd(project, str(root))[3:]).returncode == 0
    before = sorted(p for p in root.rglob("*") if p.is_file())

    async def prune() -> None:
        storage = open_storage(str(root))
        async with lease.hold(storage, lease.ROOT_LEASE, command="run", wait=0) as held:
            (root / "_lease.json").write_bytes(foreign_lease())  # taken over meanwhile
            runs = project_runs(storage, project["id"])
            with pytest.raises(LeaseLost, match="backup-02"):
                prune_runs(lease.guarded(storage, held), runs[:1])

    anyio.run(prune)
    assert orjson.loads((root / "_lease.json").read_bytes())["host"] == "backup-02"  # left to its holder
    (root / "_lease.json").unlink()
    assert sorted(p for p in root.rglob("*") if p.is_file()) == before


def test_runs_taking_over_one_stale_lease_at_once_leave_exactly_one_holder(tmp_path: Path) -> None:
    """Many runs find the same stale lease at the same moment (say, all waiting on a holder that
    died): exactly one takes it over, the others find it held. Repeated, to meet the
    interleavings where a run moves aside the lease another has just taken."""
    storage = open_storage(str(tmp_path))

    def take(barrier: threading.Barrier, won: list[bool]) -> None:
        barrier.wait()
        mine = lease.Holder.for_this_process("export")
        won.append(lease.attempt(storage, lease.ROOT_LEASE, mine, 120.0, str(tmp_path)) is None)

    for _ in range(60):
        (tmp_path / "_lease.json").write_bytes(foreign_lease())
        old = time.time() - 300
        os.utime(tmp_path / "_lease.json", (old, old))
        barrier, won = threading.Barrier(8), []
        threads = [threading.Thread(target=take, args=(barrier, won)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert won.count(True) == 1
        assert [p.name for p in tmp_path.iterdir()] == ["_lease.json"]  # no temporary file left
        (tmp_path / "_lease.json").unlink()


def test_a_write_that_fails_because_the_root_was_taken_over_says_so(tmp_path: Path) -> None:
    """The lease is checked, then another run takes the root over and its clean-up deletes this
    run's temporary file before it is renamed: the failed write is reported as the lost lease,
    not as a file that cannot be written."""
    storage = open_storage(str(tmp_path))
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 1:  # passes; the takeover comes right after it
            for temp in tmp_path.rglob("*.tmp"):
                temp.unlink()
            return
        raise LeaseLost("the lease was taken over by backup-02")

    with pytest.raises(LeaseLost, match="backup-02"):
        lease.GuardedStorage(storage, check).write_bytes("_state/export-p.json", b"{}")
    assert not (tmp_path / "_state" / "export-p.json").exists()
