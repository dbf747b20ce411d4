"""Restoring a chain of runs gives the source's state at a run, whatever the request timing.

A project's logs and dataset go through a full run and incremental runs with updates, merges
and deletes between them (an id deleted and later re-created among them). Restored into a new
project with up to 80 ms of jittered latency on every request, so that requests overtake each
other, the root must equal what the source held at the newest run, read pinned at the
manifest's snapshot version; with ``--until`` an older run, what it held then. Rows deleted
before the newest full run do not come back. An ad-hoc partial or filtered export into a
nightly root is no base for the objects it did not fully read, and the nightly job does not
prune the chain for it. Runs are ordered by snapshot version: a host whose clock is two hours
behind neither restores its runs out of order nor prunes its own runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from pipeline.cli.jobs import run as run_command
from pipeline.common import layout
from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer, ServerConfig
from pipeline.export import runner as export_runner
from pipeline.querylang.ast import from_object
from tests.conftest import PROFILES
from tests.helpers import all_rows, btpipe, insert, post, unique
from tests.reliability.support import hashes

KEY = "bt-local-key"
#: Import flags that put many small batches in flight at once, so that without an order
#: between runs a newer version of a row can land before an older one.
SCATTER = ("--batch-rows", "5", "--workers", "16", "--max-backoff", "0.05")


@dataclass(frozen=True)
class Server:
    url: str
    running: RunningServer
    key: str = KEY


@pytest.fixture(scope="module", params=PROFILES)
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    """An emulator of this module's own, so its jitter slows nobody else's tests; of each
    capability profile in turn, so that both ways of reading incremental runs are restored."""
    db = tmp_path_factory.mktemp("restore-chain") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), profile=request.param)) as running:
        yield Server(running.url, running)


@dataclass
class Source:
    """A project with logs and a dataset ("golden"), and what was written to them."""

    server: Server
    project: dict[str, Any]
    dataset: dict[str, Any]

    @property
    def objects(self) -> dict[str, tuple[str, str]]:
        return {"logs": ("project_logs", self.project["id"]), "dataset": ("dataset", self.dataset["id"])}

    def write(self, label: str, events: list[dict[str, Any]]) -> None:
        insert(self.server.url, self.server.key, *self.objects[label], events)

    def delete(self, label: str, ids: list[str]) -> None:
        self.write(label, [{"id": i, "_object_delete": True} for i in ids])

    def live(self) -> dict[str, dict[str, str]]:
        """By label, what the source holds now (id -> content hash)."""
        return {
            label: hashes(all_rows(self.server.url, self.server.key, *obj).values())
            for label, obj in self.objects.items()
        }


def make_source(server: Server, logs: int = 150, dataset: int = 40) -> Source:
    project = post(server.url, server.key, "/v1/project", {"name": unique("chain")})
    made = post(server.url, server.key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    source = Source(server, project, made)
    source.write("logs", [log_row(i, "a") for i in range(logs)])
    source.write("dataset", [{"id": f"d-{i}", "input": i, "expected": {"v": i}} for i in range(dataset)])
    return source


def log_row(i: int, version: str) -> dict[str, Any]:
    return {"id": f"log-{i}", "input": {"q": i}, "output": f"{version}{i}", "metadata": {"v": version}}


def rows_at(server: Server, object_type: str, object_id: str, version: str | None) -> dict[str, str]:
    """What the source held of one object at ``version`` (read pinned), id -> content hash.

    A snapshot version is the newest row's: deletes after it do not move it, so a read pinned
    there still sees the rows they deleted. The tests here make an object's newest write
    before a run an insert or a merge, so that this reads exactly what the source held at the
    run (``test_deletes_alone_between_runs_are_restored`` covers the other case)."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"from": from_object(object_type, object_id), "select": [{"op": "star"}],
                                 "limit": 1000}  # fmt: skip
        if cursor:
            query["cursor"] = cursor
        body: dict[str, Any] = {"query": query, "fmt": "json"}
        if version is not None:
            body["version"] = version
        page = post(server.url, server.key, "/btql", body)
        rows.extend(page["data"])
        cursor = page.get("cursor")
        if not page["data"] or not cursor:
            return hashes(rows)


def export(server: Server, source: Source, root: Path, *args: str) -> str:
    """One export run into ``root``; its run id."""
    result = btpipe(server, "export", "--project", source.project["name"], "--objects", "logs,datasets",
                    "--out", str(root), "--format", "jsonl", "--json", "--quiet", *args)  # fmt: skip
    assert result.exit_code == 0, result.output
    run_id: str = orjson.loads(result.stdout)["run_id"]
    return run_id


def state_at(server: Server, source: Source, root: Path, run_id: str) -> dict[str, dict[str, str]]:
    """By label, what the source held at run ``run_id``: each object read pinned at the
    snapshot version its manifest records."""
    manifest = orjson.loads((root / "_manifests" / f"{run_id}.json").read_bytes())
    versions = {o["object_id"]: o["snapshot_version"] for o in manifest["objects"]}
    return {
        label: rows_at(server, object_type, object_id, versions[object_id])
        for label, (object_type, object_id) in source.objects.items()
    }


@dataclass(frozen=True)
class Restore:
    """A project an import restored a root into, and the import's summary."""

    project: str
    summary: dict[str, Any]


def restore(server: Server, root: Path, state_dir: Path, *args: str, jitter_ms: float = 80) -> Restore:
    """Import ``root`` into a new project with jittered latency on every request."""
    project = unique("restored")
    server.running.faults.replace(FaultConfig(jitter_ms=jitter_ms, seed=11))
    try:
        result = btpipe(server, "import", "--in", str(root), "--to-project", project, "--create-project",
                        "--state-dir", str(state_dir), "--json", "--quiet", *SCATTER, *args)  # fmt: skip
    finally:
        server.running.faults.replace(FaultConfig())
    assert result.exit_code == 0, result.output
    return Restore(project, orjson.loads(result.stdout))


def restored(server: Server, done: Restore) -> dict[str, dict[str, str]]:
    """By label (logs, dataset), the rows the import's destination objects hold."""
    found: dict[str, dict[str, str]] = {}
    for obj in done.summary["objects"]:
        label = "logs" if obj["source"] == "logs" else "dataset"
        object_type = "project_logs" if label == "logs" else "dataset"
        found[label] = hashes(all_rows(server.url, server.key, object_type, obj["destination_id"]).values())
    return found


def test_a_chain_restores_to_the_state_at_its_newest_run_and_until_an_older_one(
    server: Server, tmp_path: Path
) -> None:
    source = make_source(server)
    root = tmp_path / "root"
    first = export(server, source, root, "--incremental")

    source.write("logs", [log_row(i, "b") for i in range(100)])  # 100 rows updated
    source.write("dataset", [{"id": f"d-{i}", "_is_merge": True, "metadata": {"seen": 1}} for i in range(20)])
    source.delete("logs", [f"log-{i}" for i in range(140, 146)])  # log-145 comes back later
    source.delete("dataset", ["d-30", "d-31", "d-32"])
    source.write("logs", [log_row(i, "n") for i in range(150, 160)])
    source.write("dataset", [{"id": f"d-{i}", "input": i} for i in range(50, 55)])
    second = export(server, source, root, "--incremental")

    source.write("logs", [log_row(i, "c") for i in range(100)])  # the same 100 rows again
    source.write("logs", [log_row(145, "again")])  # deleted before the second run, re-created
    source.delete("logs", ["log-150"])  # first written in the second run
    source.delete("dataset", ["d-50", "d-0"])
    source.write(
        "dataset", [{"id": f"d-{i}", "_is_merge": True, "metadata": {"seen": 2}} for i in range(1, 10)]
    )
    source.write("logs", [log_row(160, "n")])
    third = export(server, source, root, "--incremental")

    at_third = state_at(server, source, root, third)
    assert at_third == source.live()
    assert "log-145" in at_third["logs"] and "log-150" not in at_third["logs"]
    newest = restore(server, root, tmp_path / "state-newest")
    assert restored(server, newest) == at_third
    verified = btpipe(server, "verify", "--in", str(root), "--to-project", newest.project, "--json")
    assert verified.exit_code == 0 and orjson.loads(verified.stdout)["ok"], verified.output

    at_second = state_at(server, source, root, second)
    assert "log-145" not in at_second["logs"] and "d-30" not in at_second["dataset"]
    done = restore(server, root, tmp_path / "state-second", "--until", second)
    assert restored(server, done) == at_second

    done = restore(server, root, tmp_path / "state-first", "--until", first, jitter_ms=0)
    assert restored(server, done) == state_at(server, source, root, first)


def test_rows_deleted_before_the_newest_full_run_do_not_come_back(server: Server, tmp_path: Path) -> None:
    source = make_source(server, logs=60, dataset=20)
    root = tmp_path / "root"
    export(server, source, root)
    source.delete("logs", [f"log-{i}" for i in range(10)])
    source.delete("dataset", ["d-0", "d-1"])
    source.write("logs", [log_row(i, "b") for i in range(10, 20)])
    source.write("dataset", [{"id": "d-2", "input": "b"}])  # the newest write is no delete: see below
    full = export(server, source, root)  # a second full run: the base
    source.write("logs", [log_row(i, "c") for i in range(20, 25)])
    newest = export(server, source, root, "--incremental")

    at_newest = state_at(server, source, root, newest)
    assert not {f"log-{i}" for i in range(10)} & set(at_newest["logs"])
    assert restored(server, restore(server, root, tmp_path / "state", jitter_ms=0)) == at_newest
    done = restore(server, root, tmp_path / "state-full", "--until", full, jitter_ms=0)
    assert restored(server, done) == state_at(server, source, root, full)


def test_deletes_alone_between_runs_are_restored(server: Server, tmp_path: Path) -> None:
    """The newest writes are deletes: no row is newer than the last run, yet the rows it
    deleted are recorded as gone, so the restore equals what the source holds after it."""
    source = make_source(server, logs=40, dataset=10)
    root = tmp_path / "root"
    export(server, source, root, "--incremental")
    source.delete("logs", ["log-3", "log-4"])
    source.delete("dataset", ["d-9"])
    export(server, source, root, "--incremental")
    after = source.live()
    assert "log-3" not in after["logs"] and "d-9" not in after["dataset"]
    assert restored(server, restore(server, root, tmp_path / "state", jitter_ms=0)) == after


def test_an_old_row_deleted_after_the_newest_insert_is_recorded_gone(server: Server, tmp_path: Path) -> None:
    """A row is inserted, then an older one deleted: the newest row's version predates the
    delete and the run's own rows (those since the last run) do not show it, yet the run
    records the deleted row as gone, so the restore and ``verify`` equal the source now."""
    source = make_source(server, logs=30, dataset=10)
    root = tmp_path / "root"
    export(server, source, root, "--incremental")
    source.write("logs", [log_row(30, "n")])
    source.delete("logs", ["log-3"])
    source.write("dataset", [{"id": "d-10", "input": 10}])
    source.delete("dataset", ["d-4"])
    export(server, source, root, "--incremental")
    after = source.live()
    assert "log-3" not in after["logs"] and "log-30" in after["logs"] and "d-4" not in after["dataset"]
    done = restore(server, root, tmp_path / "state", jitter_ms=0)
    assert restored(server, done) == after
    verified = btpipe(server, "verify", "--in", str(root), "--to-project", done.project, "--json")
    assert verified.exit_code == 0 and orjson.loads(verified.stdout)["ok"], verified.output


def test_a_restore_refuses_a_broken_chain_and_an_unknown_run(server: Server, tmp_path: Path) -> None:
    source = make_source(server, logs=20, dataset=5)
    root = tmp_path / "root"
    first = export(server, source, root, "--incremental")
    source.write("logs", [log_row(1, "b")])
    second = export(server, source, root, "--incremental")
    source.write("logs", [log_row(2, "b")])
    third = export(server, source, root, "--incremental")

    result = btpipe(server, "import", "--in", str(root), "--to-project", unique("r"), "--create-project",
                    "--state-dir", str(tmp_path / "s1"), "--until", "20200101T000000000000Z")  # fmt: skip
    assert result.exit_code == 2
    assert "--until: no run 20200101T000000000000Z" in result.stderr and len(result.stderr.splitlines()) == 1

    (root / "_manifests" / f"{second}.json").unlink()  # the middle of the chain is gone
    result = btpipe(server, "import", "--in", str(root), "--to-project", unique("r"), "--create-project",
                    "--state-dir", str(tmp_path / "s2"))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"run {third} continues run {second}, which is not in" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    done = restore(server, root, tmp_path / "s3", "--until", first, jitter_ms=0)
    assert restored(server, done) == state_at(server, source, root, first)

    # Continuing the broken chain could not find the deletes since: the run fails, one line.
    source.write("logs", [log_row(3, "b")])
    result = btpipe(server, "export", "--project", source.project["name"], "--objects", "logs,datasets",
                    "--out", str(root), "--format", "jsonl", "--incremental", "--quiet")  # fmt: skip
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert f"run {third} continues run {second}" in result.stderr and "--restart" in result.stderr
    assert {p.stem for p in (root / "_manifests").iterdir()} == {first, third}
    fresh = export(server, source, root, "--restart")
    assert restored(server, restore(server, root, tmp_path / "s4", jitter_ms=0)) == state_at(
        server, source, root, fresh
    )


# -- a nightly job and its root ------------------------------------------------------------


def job_file(tmp_path: Path, source: Source, root: Path, **settings: Any) -> Path:
    lines = [
        "[source]",
        f'api_url = "{source.server.url}"',
        'api_key_env = "BRAINTRUST_API_KEY"',
        "[job.nightly]",
        'kind = "export"',
        f'projects = ["{source.project["name"]}"]',
        'objects = ["logs", "datasets"]',
        f'out = "{root}"',
        'format = "jsonl"',
        "incremental = true",
        *(f"{name} = {value}" for name, value in settings.items()),
    ]
    path = tmp_path / "nightly.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def nightly(server: Server, config: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        run_command, [str(config), "--json", "--quiet"],
        env={"BRAINTRUST_API_URL": server.url, "BRAINTRUST_API_KEY": server.key, "BTPIPE_OUT": None},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (job,) = orjson.loads(result.stdout)
    assert isinstance(job, dict)
    return job


def test_an_ad_hoc_partial_export_is_no_base_and_breaks_no_chain(server: Server, tmp_path: Path) -> None:
    source = make_source(server, logs=50, dataset=30)
    root = tmp_path / "root"
    config = job_file(tmp_path, source, root, keep_runs=1)
    first = nightly(server, config)["runs"][0]["run_id"]
    source.write("logs", [log_row(i, "b") for i in range(10)])
    logs_only = export(server, source, root, "--objects", "logs")
    filtered = export(server, source, root, "--filter", "input.q < 5")
    source.delete("dataset", ["d-1"])
    source.write("dataset", [{"id": "d-0", "_is_merge": True, "metadata": {"x": 1}}])
    source.write("logs", [log_row(i, "c") for i in range(5, 15)])
    job = nightly(server, config)
    newest = job["runs"][0]["run_id"]

    assert job["pruned_runs"] == []  # the chain still needs the first run; the others are apart
    manifests = {p.stem for p in (root / "_manifests").iterdir()}
    assert manifests == {first, logs_only, filtered, newest}
    at_newest = state_at(server, source, root, newest)
    assert restored(server, restore(server, root, tmp_path / "state", jitter_ms=0)) == at_newest


def test_runs_are_ordered_by_snapshot_version_not_by_the_clock(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(server, logs=40, dataset=10)
    root = tmp_path / "root"
    config = job_file(tmp_path, source, root, keep_runs=1, full_every=1)
    first = nightly(server, config)["runs"][0]["run_id"]
    source.write("logs", [log_row(i, "b") for i in range(20)])
    source.delete("dataset", ["d-2"])
    source.write("dataset", [{"id": "d-20", "input": 20}])

    behind = timedelta(hours=2)
    real_run_id = layout.new_run_id

    class Behind(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Behind:
            return super().now(tz) - behind  # type: ignore[return-value]

    monkeypatch.setattr(layout, "new_run_id", lambda now=None: real_run_id(now or datetime.now(UTC) - behind))
    monkeypatch.setattr(export_runner, "datetime", Behind)
    job = nightly(server, config)
    second = job["runs"][0]["run_id"]
    manifest = orjson.loads((root / "_manifests" / f"{second}.json").read_bytes())
    assert second < first and manifest["started_at"] < (datetime.now(UTC) - behind / 2).isoformat()

    assert job["pruned_runs"] == [first]  # its own run is the newest, whatever its clock says
    assert {p.stem for p in (root / "_manifests").iterdir()} == {second}
    at_second = state_at(server, source, root, second)
    assert restored(server, restore(server, root, tmp_path / "state", jitter_ms=0)) == at_second


def test_an_incremental_run_from_a_host_behind_is_restored_after_the_run_it_follows(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(server, logs=40, dataset=10)
    root = tmp_path / "root"
    export(server, source, root, "--incremental")
    source.write("logs", [log_row(i, "b") for i in range(30)])
    real_run_id = layout.new_run_id
    monkeypatch.setattr(
        layout, "new_run_id", lambda now=None: real_run_id(now or datetime.now(UTC) - timedelta(hours=2))
    )
    second = export(server, source, root, "--incremental")
    assert restored(server, restore(server, root, tmp_path / "state")) == state_at(
        server, source, root, second
    )
