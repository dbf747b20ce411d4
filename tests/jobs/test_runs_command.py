"""``btpipe runs ROOT`` lists a root's runs in chain order, each with its kind, scope, snapshot
versions, rows, files, bytes and status (complete, unfinished, pruned), against the emulator
over loopback; every expected value comes from the server and the files on disk."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from click.testing import CliRunner, Result

from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.cli import main
from pipeline.cli.display import size
from pipeline.common.errors import EXIT_USAGE, BtpipeError
from pipeline.common.manifest import FileInfo, Manifest, ObjectManifest, write_manifest
from pipeline.common.progress import Progress
from pipeline.common.state import ExportState, Watermark, export_store
from pipeline.common.storage import LocalStorage
from pipeline.export.runner import ExportJob, ExportOptions
from pipeline.jobs.runs import PRUNED_RECORD, record_pruned
from pipeline.sinks.base import Sink
from tests.helpers import FullDiskSink, all_rows, btpipe, insert, make_project, moto_s3

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "nightly-backup.toml"
EVERY_OBJECT = "logs,datasets,experiments,config"
FILTER = "metadata.tag = 'keep'"


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def runs_json(emulator: Any, root: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = orjson.loads(ok(btpipe(emulator, "runs", root, "--json")).stdout)
    return listed


def newest_version(emulator: Any, object_type: str, object_id: str) -> str:
    """The snapshot version an export reads the object at: its newest row's ``_xact_id``."""
    rows = all_rows(emulator.url, emulator.key, object_type, object_id)
    return str(max(int(r["_xact_id"]) for r in rows.values()))


def files_on_disk(root: Path, run_id: str, object_id: str = "*") -> list[Path]:
    return sorted(p for p in root.glob(f"object_type=*/object_id={object_id}/run={run_id}/*") if p.is_file())


class _ExportOntoAFullDisk(ExportJob):
    def _open_sink(self, run: Any, obj: Any, rng: Any) -> Sink:
        return FullDiskSink(super()._open_sink(run, obj, rng), fail_at=3)


@dataclass
class Expected:
    """One run as the test made it: its objects' versions and rows by object id."""

    run_id: str
    kind: str
    status: str
    objects: str
    filter: str | None
    versions: dict[str, str]
    rows: dict[str, int]
    deleted: dict[str, int] = field(default_factory=dict)


@dataclass
class History:
    root: Path
    project: dict[str, Any]
    ids: dict[str, tuple[str, str]]  # object id -> (object type, name)
    runs: list[Expected]


def log_rows(start: int, count: int, tag: str = "other") -> list[dict[str, Any]]:
    return [{"id": f"l{i:03d}", "input": i, "metadata": {"tag": tag}} for i in range(start, start + count)]


@pytest.fixture(scope="module")
def history(emulator: Any, tmp_path_factory: pytest.TempPathFactory) -> History:
    """A root holding a full run, two incremental runs, an ad-hoc filtered run and an
    unfinished incremental run (its sink failed part way), made in that order."""
    root = tmp_path_factory.mktemp("runs") / "root"
    made = make_project(
        emulator.url, emulator.key, "runs", logs=log_rows(0, 12),
        dataset_rows=[{"id": f"d{i}", "input": i, "expected": -i} for i in range(5)],
        experiment_name="exp", experiment_rows=[{"id": f"e{i}", "input": i} for i in range(3)],
    )  # fmt: skip
    project, dataset, experiment = made["project"], made["dataset"], made["experiment"]
    ids = {
        project["id"]: ("project_logs", project["name"]),
        dataset["id"]: ("dataset", "golden"),
        experiment["id"]: ("experiment", "exp"),
    }

    def versions(*objects: str) -> dict[str, str]:
        return {oid: newest_version(emulator, ids[oid][0], oid) for oid in objects}

    def export(*args: str) -> str:
        result = ok(
            btpipe(emulator, "export", "--project", project["name"], "--out", str(root), "--json", *args)
        )
        run_id: str = orjson.loads(result.stdout)["run_id"]
        return run_id

    every = list(ids)
    expected = []
    full = export()
    expected.append(Expected(full, "full", "complete", EVERY_OBJECT, None, versions(*every),
                             {project["id"]: 12, dataset["id"]: 5, experiment["id"]: 3}))  # fmt: skip

    insert(emulator.url, emulator.key, "project_logs", project["id"], log_rows(12, 7))
    second = export("--incremental")
    expected.append(Expected(second, "incremental", "complete", EVERY_OBJECT, None, versions(*every),
                             {project["id"]: 7, dataset["id"]: 0, experiment["id"]: 0}))  # fmt: skip

    insert(
        emulator.url, emulator.key, "project_logs", project["id"], [{"id": "l000", "_object_delete": True}]
    )
    insert(emulator.url, emulator.key, "project_logs", project["id"], log_rows(19, 2))
    insert(
        emulator.url,
        emulator.key,
        "dataset",
        dataset["id"],
        [{"id": f"d{i}", "input": i} for i in range(5, 9)],
    )
    third = export("--incremental")
    expected.append(Expected(third, "incremental", "complete", EVERY_OBJECT, None, versions(*every),
                             {project["id"]: 2, dataset["id"]: 4, experiment["id"]: 0},
                             deleted={project["id"]: 1}))  # fmt: skip

    insert(emulator.url, emulator.key, "project_logs", project["id"], log_rows(21, 3, tag="keep"))
    filtered = export("--objects", "logs", "--filter", FILTER)
    expected.append(Expected(filtered, "full", "complete", "logs", FILTER, versions(project["id"]),
                             {project["id"]: 3}))  # fmt: skip

    insert(emulator.url, emulator.key, "project_logs", project["id"], log_rows(24, 25))
    planned = versions(*every)
    options = ExportOptions(project=project["name"], out=str(root), incremental=True, encoders=0,
                            workers=1, ranges_per_object=1, page_limit=5, file_rows=10)  # fmt: skip

    async def stopped() -> None:
        settings = ClientSettings(api_url=emulator.url, api_key=emulator.key)
        async with BraintrustClient(settings) as client:
            await _ExportOntoAFullDisk(client, options, Progress()).run()

    with pytest.raises(ExceptionGroup) as failed:
        anyio.run(stopped)
    assert failed.group_contains(BtpipeError, match="No space left on device")
    state = orjson.loads((root / "_state" / f"export-{project['id']}.json").read_bytes())
    unfinished = state["run"]["run_id"]
    # two pages of 5 rows made the first file of 10; the third page failed
    expected.append(Expected(unfinished, "incremental", "unfinished", EVERY_OBJECT, None, planned,
                             {project["id"]: 10, dataset["id"]: 0, experiment["id"]: 0}))  # fmt: skip
    return History(root, project, ids, expected)


def expected_json(history: History, run: Expected) -> dict[str, Any]:
    """What ``--json`` must say of ``run``, but its start and finish times."""
    reads = []
    for object_id, version in run.versions.items():
        object_type, name = history.ids[object_id]
        files = files_on_disk(history.root, run.run_id, object_id)
        incremental = run.kind == "incremental"
        reads.append({
            "object_type": object_type, "object_id": object_id, "name": name, "snapshot_version": version,
            "since_version": previous_version(history, run, object_id) if incremental else None,
            "rows": run.rows[object_id], "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "deleted": run.deleted.get(object_id, 0), "gone": False,
        })  # fmt: skip
    numeric = sorted(run.versions.values(), key=int)
    return {
        "run_id": run.run_id, "status": run.status, "kind": run.kind,
        "project_id": history.project["id"], "project_name": history.project["name"],
        "scope": {"objects": run.objects, "shape": "spans", "filter": run.filter}, "format": "parquet",
        "pruned_at": None, "versions": {"oldest": numeric[0], "newest": numeric[-1]},
        "rows": sum(r["rows"] for r in reads), "files": sum(r["files"] for r in reads),
        "bytes": sum(r["bytes"] for r in reads), "deleted": sum(r["deleted"] for r in reads), "objects": reads,
    }  # fmt: skip


def previous_version(history: History, run: Expected, object_id: str) -> str:
    """The version the run before ``run`` in its scope read ``object_id`` at: where it started."""
    earlier = [r for r in history.runs[: history.runs.index(run)] if r.filter == run.filter]
    return earlier[-1].versions[object_id]


def without_times(listed: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in listed.items() if k not in ("started_at", "finished_at")}


def test_json_lists_every_run_in_chain_order_with_exact_values(emulator: Any, history: History) -> None:
    listed = runs_json(emulator, str(history.root))
    assert [without_times(r) for r in listed] == [expected_json(history, run) for run in history.runs]
    for run in listed:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", run["started_at"])
        assert (run["finished_at"] is None) == (run["status"] == "unfinished")
    unfinished = listed[-1]
    assert unfinished["files"] == 1 and unfinished["rows"] == 10  # what it checkpointed before failing


def test_table_shows_each_run_on_one_aligned_line(emulator: Any, history: History) -> None:
    result = ok(btpipe(emulator, "runs", str(history.root)))
    header, *lines = result.stdout.splitlines()
    assert re.split(r"\s{2,}", header) == [
        "RUN",
        "KIND",
        "SCOPE",
        "VERSIONS",
        "ROWS",
        "FILES",
        "BYTES",
        "STATUS",
    ]
    assert len(lines) == len(history.runs)
    for line, run in zip(lines, history.runs, strict=True):
        expected = expected_json(history, run)
        oldest, newest = expected["versions"]["oldest"], expected["versions"]["newest"]
        scope = run.objects + (f" --filter {run.filter!r}" if run.filter else "")
        assert re.split(r"\s{2,}", line) == [
            run.run_id, run.kind, scope, newest if oldest == newest else f"{oldest}..{newest}",
            f"{expected['rows']:,}", f"{expected['files']:,}", size(expected["bytes"]), run.status,
        ]  # fmt: skip
    # aligned: every column starts where its header does
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    for line in lines:
        assert line[starts[1] - 2 : starts[1]] == "  " and line[starts[1]] != " "
    assert "bt-local-key" not in result.output


def test_a_root_with_no_runs_says_so_and_exits_0(emulator: Any, tmp_path: Path) -> None:
    assert ok(btpipe(emulator, "runs", str(tmp_path))).stdout == f"{tmp_path}: no runs yet\n"
    assert runs_json(emulator, str(tmp_path)) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "{path}: no such directory"),
        (lambda p: p / "file.txt", "{path} is a file, not an export root (give the directory --out named)"),
        (
            lambda p: p,
            "{path} is not an export root: it holds no _manifests/ and no export state "
            "(btpipe export --out writes them)",
        ),
    ],
    ids=["missing", "file", "other-files"],
)
def test_a_path_that_is_not_an_export_root_is_one_line_and_exit_2(
    emulator: Any, tmp_path: Path, make: Any, message: str
) -> None:
    (tmp_path / "file.txt").write_text("not a run")
    path = make(tmp_path)
    result = btpipe(emulator, "runs", str(path))
    assert (result.exit_code, result.stdout) == (EXIT_USAGE, "")
    assert result.stderr == f"btpipe: error: {message.format(path=path)}\n"


def test_a_damaged_pruned_record_is_one_line_and_exit_2(emulator: Any, tmp_path: Path) -> None:
    (tmp_path / PRUNED_RECORD).write_text('{"format": 1, "runs": [{"run_id": "r"}]}')
    result = btpipe(emulator, "runs", str(tmp_path))
    assert result.exit_code == EXIT_USAGE
    assert (
        result.stderr == f"btpipe: error: {tmp_path}/{PRUNED_RECORD}: not a record of pruned runs ('kind')\n"
    )


def manifest(
    run_id: str, started: str, version: int, *, since: int | None = None, previous: str | None = None
) -> Manifest:
    obj = ObjectManifest("project_logs", "p", name="proj", project_id="p", snapshot_version=str(version),
                         since_version=None if since is None else str(since), previous_run=previous, rows_written=2,
                         files=(FileInfo(f"object_type=project_logs/object_id=p/run={run_id}/r00-part-00000.parquet",
                                         2, 100, "0" * 64),))  # fmt: skip
    options = {"objects": "logs", "shape": "spans", "filter": None, "project_id": "p", "format": "parquet"}
    return Manifest(run_id, started, "http://127.0.0.1", options=options, objects=(obj,))


def test_runs_are_ordered_by_what_they_read_not_by_the_clock(emulator: Any, tmp_path: Path) -> None:
    """Hosts whose clocks disagree: the ids and start times say c, b, a; the versions a, b, c.
    A pruned run, known by its newest version only, takes its place among them."""
    storage = LocalStorage(str(tmp_path))
    runs = [manifest("c", "2026-01-03", 10), manifest("b", "2026-01-02", 20, since=10, previous="c"),
            manifest("a", "2026-01-01", 30, since=20, previous="b")]  # fmt: skip
    record_pruned(storage, [manifest("z", "2026-01-09", 15)])
    record_pruned(storage, [manifest("z", "2026-01-09", 15)])  # once on the record
    for run in runs:
        write_manifest(storage, run)
    listed = runs_json(emulator, str(tmp_path))
    assert [(r["run_id"], r["status"], r["kind"]) for r in listed] == [
        ("c", "complete", "full"), ("z", "pruned", "full"), ("b", "complete", "incremental"),
        ("a", "complete", "incremental"),
    ]  # fmt: skip
    assert orjson.loads((tmp_path / PRUNED_RECORD).read_bytes())["format"] == 1
    # a run on the record whose manifest is still there (retention stopped between the two)
    record_pruned(storage, [runs[0]])
    assert [r["status"] for r in runs_json(emulator, str(tmp_path))] == [
        "complete",
        "pruned",
        "complete",
        "complete",
    ]


def run_job(emulator: Any, project: str, root: Path) -> dict[str, Any]:
    env = {"BRAINTRUST_API_URL": emulator.url, "BRAINTRUST_API_KEY": emulator.key, "BTPIPE_OUT": None}
    args = [str(CONFIG), "--json", "--out", str(root), "--set", f"projects={project}",
            "--set", "keep_runs=1", "--set", "full_every=1"]  # fmt: skip
    result = ok(CliRunner().invoke(main, ["run", *args], env=env))
    (job,) = orjson.loads(result.stdout)
    return dict(job)


def test_runs_pruned_by_keep_runs_are_listed_as_pruned(emulator: Any, tmp_path: Path) -> None:
    made = make_project(emulator.url, emulator.key, "pruned", logs=log_rows(0, 6), dataset_rows=[{"id": "d", "input": 1}],
                        experiment_name="exp", experiment_rows=[])  # fmt: skip
    project = made["project"]
    first = run_job(emulator, project["name"], tmp_path)
    (before,) = runs_json(emulator, str(tmp_path))
    first_id = first["runs"][0]["run_id"]
    assert (before["run_id"], before["kind"], before["rows"], before["status"]) == (
        first_id,
        "full",
        7,
        "complete",
    )
    assert before["files"] == len(files_on_disk(tmp_path, first_id)) == 2
    assert before["bytes"] == sum(p.stat().st_size for p in files_on_disk(tmp_path, first_id))

    insert(emulator.url, emulator.key, "project_logs", project["id"], log_rows(6, 2))
    second = run_job(emulator, project["name"], tmp_path)
    assert second["pruned_runs"] == [first_id] and not files_on_disk(tmp_path, first_id)
    pruned, kept = runs_json(emulator, str(tmp_path))
    assert pruned["pruned_at"] is not None
    assert pruned == {**before, "status": "pruned", "pruned_at": pruned["pruned_at"], "objects": None}
    assert (kept["run_id"], kept["status"], kept["rows"]) == (second["runs"][0]["run_id"], "complete", 9)

    third = run_job(emulator, project["name"], tmp_path)
    listed = runs_json(emulator, str(tmp_path))
    assert [(r["run_id"], r["status"]) for r in listed] == [
        (first_id, "pruned"), (second["runs"][0]["run_id"], "pruned"), (third["runs"][0]["run_id"], "complete")
    ]  # fmt: skip
    table = ok(btpipe(emulator, "runs", str(tmp_path))).stdout.splitlines()
    assert [re.split(r"\s{2,}", line)[-1] for line in table] == ["STATUS", "pruned", "pruned", "complete"]


BUCKET = "runs"


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with moto_s3(BUCKET) as env:
        # credentials of their own, so that the test below can look for them in the output
        yield {**env, "AWS_ACCESS_KEY_ID": "testing-id", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


def test_an_s3_root_is_listed_like_a_local_one(
    emulator: Any, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    made = make_project(emulator.url, emulator.key, "s3runs", logs=log_rows(0, 4), dataset_rows=[],
                        experiment_name="exp", experiment_rows=[])  # fmt: skip
    root = f"s3://{BUCKET}/{made['project']['id']}"
    assert ok(btpipe(emulator, "runs", root)).stdout == f"{root}: no runs yet\n"
    result = ok(btpipe(emulator, "export", "--project", made["project"]["name"], "--out", root, "--json"))
    run_id = orjson.loads(result.stdout)["run_id"]
    (listed,) = runs_json(emulator, root)
    assert (listed["run_id"], listed["status"], listed["kind"], listed["rows"], listed["files"]) == (
        run_id, "complete", "full", 4, 1,
    )  # fmt: skip
    table = ok(btpipe(emulator, "runs", root))
    assert run_id in table.stdout
    for secret in ("testing-id", "testing-secret", emulator.key):
        assert secret not in table.output


def test_a_root_whose_runs_are_all_gone_still_is_one(emulator: Any, tmp_path: Path) -> None:
    """Export state with watermarks only (the manifests deleted by hand) and files: no runs."""
    storage = LocalStorage(str(tmp_path))
    export_store(storage, "p").save(ExportState("p", {"k": Watermark("10", "gone-run")}))
    storage.write_bytes("object_type=project_logs/object_id=p/run=gone-run/r00-part-00000.parquet", b"x")
    assert ok(btpipe(emulator, "runs", str(tmp_path))).stdout == f"{tmp_path}: no runs yet\n"


def test_runs_of_several_projects_get_a_project_column(emulator: Any, tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    write_manifest(storage, manifest("a", "2026-01-01", 10))
    other = manifest("b", "2026-01-02", 20)
    options = {**other.options, "project_id": "q", "project_name": "second"}
    write_manifest(
        storage, replace(other, options=options, objects=(replace(other.objects[0], object_id="q"),))
    )
    header, first, second = ok(btpipe(emulator, "runs", str(tmp_path))).stdout.splitlines()
    assert re.split(r"\s{2,}", header)[:3] == ["RUN", "PROJECT", "KIND"]
    assert re.split(r"\s{2,}", first)[:2] == ["a", "proj"] and re.split(r"\s{2,}", second)[:2] == [
        "b",
        "second",
    ]
