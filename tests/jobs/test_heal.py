"""Nightly jobs heal: an object deleted at the source while a run is unfinished is recorded
as gone and the run finishes the rest; ``btpipe run --restart`` discards an unfinished run.

Each test stops a real ``btpipe run`` part way (a separate process, Ctrl-C once it has
published a file, against a slowed emulator of its own), so the output root holds an
unfinished run exactly as a killed cron job leaves it.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.rowwrite import Target
from pipeline.emulator.sample import bulk_load, generate_traces
from pipeline.emulator.server import RunningServer, ServerConfig
from tests.helpers import all_rows, insert, post, read_export_files, unique
from tests.reliability.support import cli_env, command, run_cli

KEY = "bt-local-key"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """An emulator of this test's own, since it is slowed down while a run is stopped."""
    with RunningServer(ServerConfig(port=0, db=str(tmp_path / "emulator.db"))) as running:
        yield running


def seed(server: RunningServer) -> dict[str, Any]:
    """A project with 600 log spans, a 600-row dataset ``golden`` and a 30-row experiment."""
    project = post(server.url, KEY, "/v1/project", {"name": unique("heal")})
    logs = Target("project_logs", project["id"], project["id"], project["org_id"])
    bulk_load(server.store, logs, islice(generate_traces(5, 600), 600))
    dataset = post(server.url, KEY, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    rows = Target("dataset", dataset["id"], project["id"], project["org_id"])
    bulk_load(server.store, rows, ({"id": f"d{i:04d}", "input": i, "expected": -i} for i in range(600)))
    experiment = post(server.url, KEY, "/v1/experiment", {"project_id": project["id"], "name": "exp"})
    insert(server.url, KEY, "experiment", experiment["id"], [{"id": f"e{i}", "input": i} for i in range(30)])
    return {"project": project, "dataset": dataset, "experiment": experiment}


def job_file(tmp_path: Path, project: str, out: Path) -> Path:
    path = tmp_path / "nightly.toml"
    path.write_text(
        f"""
[source]
api_key_env = "BRAINTRUST_API_KEY"

[job.nightly]
kind = "export"
projects = ["{project}"]
objects = ["logs", "datasets", "experiments"]
out = "{out}"
format = "jsonl"
incremental = true
page_limit = 20
file_rows = 40
"""
    )
    return path


def unfinished(out: Path, project_id: str) -> dict[str, Any] | None:
    try:
        run: dict[str, Any] | None = orjson.loads(
            (out / "_state" / f"export-{project_id}.json").read_bytes()
        )["run"]
        return run
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def published(run: dict[str, Any] | None) -> list[str]:
    objects = run["objects"] if run else []
    return [f["path"] for obj in objects for rng in obj["ranges"] for f in rng["files"]]


def stop_part_way(
    server: RunningServer, env: dict[str, str], job: Path, out: Path, project_id: str
) -> dict[str, Any]:
    """Start ``btpipe run``, Ctrl-C it once it has published a file; the unfinished run."""
    server.faults.replace(FaultConfig(latency_ms=40))
    proc = subprocess.Popen(command("run", str(job), "--quiet"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (
            not published(unfinished(out, project_id)) and proc.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.faults.replace(FaultConfig())
    assert proc.returncode == 5, err
    run = unfinished(out, project_id)
    assert run is not None
    return run


def delete(server: RunningServer, kind: str, object_id: str) -> None:
    request = urllib.request.Request(
        f"{server.url}/v1/{kind}/{object_id}", method="DELETE", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200


def manifests(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted((out / "_manifests").glob("*.json"))]


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {r["id"]: r for r in rows}
    assert len(found) == len(rows), "a row was written twice"
    return found


def test_a_dataset_deleted_during_an_unfinished_run_is_recorded_as_gone(
    server: RunningServer, tmp_path: Path
) -> None:
    made = seed(server)
    project, dataset, experiment = made["project"], made["dataset"], made["experiment"]
    out = tmp_path / "backup"
    job = job_file(tmp_path, project["name"], out)
    env = cli_env(server.url, KEY)
    run = stop_part_way(server, env, job, out, project["id"])
    (planned,) = [o for o in run["objects"] if o["object_type"] == "dataset"]
    assert not all(r["done"] for r in planned["ranges"]), "the dataset was read whole before the stop"
    logs = all_rows(server.url, KEY, "project_logs", project["id"])
    experiment_rows = all_rows(server.url, KEY, "experiment", experiment["id"])
    delete(server, "dataset", dataset["id"])

    healed = run_cli(env, "run", str(job), "--json")
    assert healed.returncode == 0, healed.stderr
    (result,) = orjson.loads(healed.stdout)
    assert result["ok"] is True
    assert result["warnings"] == [
        f"job.nightly: dataset:golden ({dataset['id']}) was deleted at the source; "
        f"recorded as gone in run {run['run_id']}"
    ]
    (summary,) = result["runs"]
    assert (summary["run_id"], summary["resumed"]) == (run["run_id"], True)
    assert summary["gone"] == [f"dataset:golden ({dataset['id']})"]
    (manifest,) = manifests(out)
    entries = {o["object_type"]: o for o in manifest["objects"]}
    assert entries["dataset"]["gone"] is True and entries["dataset"]["files"] == []
    assert entries["dataset"]["rows_written"] == 0
    assert not entries["project_logs"]["gone"] and not entries["experiment"]["gone"]
    assert not [p for p in (out / f"object_type=dataset/object_id={dataset['id']}").rglob("*") if p.is_file()]
    # the rest is backed up exactly: every row once, as the server holds it
    assert by_id(read_export_files(out, "project_logs", project["id"])) == logs
    assert by_id(read_export_files(out, "experiment", experiment["id"])) == experiment_rows
    assert entries["project_logs"]["rows_written"] == len(logs)

    # the next run goes on as usual (the dataset is no longer listed) and backs up new logs
    insert(server.url, KEY, "project_logs", project["id"], [{"id": "late-1", "input": "x"}])
    again = run_cli(env, "run", str(job), "--json")
    assert again.returncode == 0, again.stderr
    (next_result,) = orjson.loads(again.stdout)
    assert next_result["warnings"] == [] and next_result["rows"] == 1
    assert by_id(read_export_files(out, "project_logs", project["id"])) == all_rows(
        server.url, KEY, "project_logs", project["id"]
    )

    # a restore of the root brings back the rest; no run holds any of the dataset
    restored = run_cli(env, "import", "--in", str(out), "--to-project", unique("healed"), "--create-project",
                       "--state-dir", str(tmp_path / "state"), "--json")  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    copies = {o["source"]: o["rows"] for o in orjson.loads(restored.stdout)["objects"]}
    assert copies == {"logs": len(logs) + 1, "experiment:exp": len(experiment_rows)}


def test_run_restart_discards_the_unfinished_run(server: RunningServer, tmp_path: Path) -> None:
    made = seed(server)
    project = made["project"]
    out = tmp_path / "backup"
    job = job_file(tmp_path, project["name"], out)
    env = cli_env(server.url, KEY)
    run = stop_part_way(server, env, job, out, project["id"])
    discarded = published(run)

    restarted = run_cli(env, "run", str(job), "--restart", "--json")
    assert restarted.returncode == 0, restarted.stderr
    (result,) = orjson.loads(restarted.stdout)
    (summary,) = result["runs"]
    assert summary["resumed"] is False and summary["run_id"] != run["run_id"]
    assert not [path for path in discarded if (out / path).exists()]
    assert [m["run_id"] for m in manifests(out)] == [summary["run_id"]]
    for kind, obj in (
        ("project_logs", project),
        ("dataset", made["dataset"]),
        ("experiment", made["experiment"]),
    ):
        assert by_id(read_export_files(out, kind, obj["id"])) == all_rows(server.url, KEY, kind, obj["id"])
    assert unfinished(out, project["id"]) is None


def test_a_run_stopped_during_its_second_job_lists_the_first_under_json(
    server: RunningServer, tmp_path: Path
) -> None:
    """``run --json`` stopped part way prints one JSON list: the jobs done before, then the
    one it stopped in (its error and exit code), not the error alone."""
    first = post(server.url, KEY, "/v1/project", {"name": unique("first")})
    insert(server.url, KEY, "project_logs", first["id"], [{"id": f"f{i}", "input": i} for i in range(10)])
    second = seed(server)
    jobs = tmp_path / "two.toml"
    jobs.write_text(
        f'[job.a]\nprojects = ["{first["name"]}"]\nout = "{tmp_path / "a"}"\nobjects = "logs"\n'
        f'[job.b]\nprojects = ["{second["project"]["name"]}"]\nout = "{tmp_path / "b"}"\nobjects = "logs"\n'
        'format = "jsonl"\npage_limit = 20\nfile_rows = 40\n'
    )
    server.faults.replace(FaultConfig(latency_ms=40))
    env = cli_env(server.url, KEY)
    proc = subprocess.Popen(command("run", str(jobs), "--json"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (
            not published(unfinished(tmp_path / "b", second["project"]["id"])) and time.monotonic() < deadline
        ):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.faults.replace(FaultConfig())
    assert proc.returncode == 5, err
    done, stopped = orjson.loads(out)
    assert (done["name"], done["ok"], done["rows"]) == ("a", True, 10)
    assert (stopped["name"], stopped["ok"], stopped["exit_code"]) == ("b", False, 5)
    assert "interrupted" in stopped["error"]
