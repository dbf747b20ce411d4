"""``--engine ray``: export and import write the same files and rows as the local engine,
under the same lease, state and manifest, and a killed driver resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.attachments.seed import PNG, upload
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, read_export_files, unique, visible_files
from tests.ray.conftest import log_rows, seeded_project

pytestmark = pytest.mark.usefixtures("local_ray")

SMALL_FILES = ("--ranges-per-object", "3", "--min-rows-per-range", "100", "--page-limit", "50",
               "--file-rows", "100")  # fmt: skip


def layout(root: Path) -> list[str]:
    """The files of an export root, with run ids and the state and lease left out."""
    run_dirs = [p for p in visible_files(root) if "/run=" in p]
    return sorted(p.split("/run=")[0] + "/" + p.rsplit("/", 1)[1] for p in run_dirs)


def manifest(root: Path) -> dict[str, Any]:
    (path,) = (root / "_manifests").glob("*.json")
    return dict(json.loads(path.read_text()))


def test_export_and_import_with_ray_match_the_local_engine(emulator: Emulator, tmp_path: Path) -> None:
    project = seeded_project(emulator, 700)
    dataset = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    records = [{"id": r["id"], "input": r["input"], "expected": r["output"], "metadata": r["metadata"]}
               for r in log_rows(120, "ds")]  # fmt: skip
    insert(emulator.url, emulator.key, "dataset", dataset["id"], records)
    png = upload(emulator.url, emulator.key, PNG, "a.png", "image/png")
    insert(emulator.url, emulator.key, "project_logs", project["id"],
           [{"id": "with-file", "input": {"image": png}}, {"id": "again", "metadata": {"same": png}}])  # fmt: skip
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    for out, engine in ((local, "local"), (on_ray, "ray")):
        result = btpipe(emulator, "export", "--project", project["name"], "--out", str(out), "--objects",
                        "logs,datasets", "--engine", engine, "--quiet", *SMALL_FILES)  # fmt: skip
        assert result.exit_code == 0, result.output
    assert layout(on_ray) == layout(local) and len(layout(local)) > 3
    for object_type, object_id in (("project_logs", project["id"]), ("dataset", dataset["id"])):
        assert read_export_files(on_ray, object_type, object_id) == read_export_files(
            local, object_type, object_id
        )
    ray_objects = {o["object_id"]: o for o in manifest(on_ray)["objects"]}
    for obj in manifest(local)["objects"]:
        theirs = ray_objects[obj["object_id"]]
        assert (theirs["rows_written"], theirs["rows_expected"]) == (
            obj["rows_written"],
            obj["rows_expected"],
        )
        assert [f["sha256"] for f in theirs["files"]] == [f["sha256"] for f in obj["files"]]
    assert manifest(on_ray)["attachments"] == manifest(local)["attachments"]
    assert manifest(local)["attachments"]["count"] == 1
    stored = [
        sorted(p.name for p in (root / "_attachments").rglob("*") if p.is_file()) for root in (local, on_ray)
    ]
    assert stored[0] == stored[1] and stored[0]
    assert not list((on_ray / "_state").glob("*.lease"))

    by_local, by_ray = unique("import-local"), unique("import-ray")
    for name, engine in ((by_local, "local"), (by_ray, "ray")):
        result = btpipe(emulator, "import", "--in", str(on_ray), "--to-project", name, "--create-project",
                        "--engine", engine, "--state-dir", str(tmp_path / "state"), "--batch-rows", "64",
                        "--json")  # fmt: skip
        assert result.exit_code == 0, result.output
        # Ray's tasks send the rows' comments; the driver does not count them, and says so
        assert (orjson.loads(result.stdout)["comments"] is None) == (engine == "ray")
    result = btpipe(
        emulator, "verify", "--project", by_local, "--to-project", by_ray, "--objects", "logs,datasets"
    )
    assert result.exit_code == 0, result.output
    result = btpipe(emulator, "verify", "--in", str(on_ray), "--to-project", by_ray)
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "state").glob("*.json"))  # the finished import cleared its state


def _published(root: Path) -> int:
    """Files the state of an unfinished export says were published."""
    count = 0
    for path in (root / "_state").glob("export-*.json"):
        try:
            state = json.loads(path.read_text())
        except ValueError:
            continue
        run = state.get("run") or {}
        count += sum(len(r.get("files", [])) for o in run.get("objects", []) for r in o.get("ranges", []))
    return count


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_driver_resumes_from_its_checkpoint(
    emulator: Emulator, tmp_path: Path, faults: Any, stop: signal.Signals
) -> None:
    """kill -9 of the driver and its local Ray, or SIGTERM of the driver (which Ray's own
    handler made exit at once, saying nothing): the re-run resumes from the checkpoint."""
    project = seeded_project(emulator, 1200, "killed")
    out = tmp_path / "out"
    env = {**os.environ, "BRAINTRUST_API_URL": emulator.url, "BRAINTRUST_API_KEY": emulator.key,
           "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
    command = [sys.executable, "-m", "pipeline", "export", "--project", project["name"], "--out", str(out),
               "--engine", "ray", "--quiet", *SMALL_FILES]  # fmt: skip
    faults(latency_ms=40)  # slow enough to be killed half-way
    driver = subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _published(out) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if stop == signal.SIGTERM:
            driver.send_signal(stop)
            _, stderr = driver.communicate(timeout=120)
            assert driver.returncode == 5, stderr
            assert "btpipe: interrupted; state saved" in stderr
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait()
    done_before = _published(out)
    assert done_before >= 2 and not (out / "_manifests").exists()
    faults()
    result = btpipe(emulator, "export", "--project", project["name"], "--out", str(out), "--engine", "ray",
                    "--wait-lease", "0", "--json", *SMALL_FILES)  # fmt: skip
    if result.exit_code == 6:  # the killed run's lease: taken over once stale
        pytest.fail(result.output)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["resumed"] is True and summary["rows"] == 1200
    rows = read_export_files(out, "project_logs", project["id"])
    assert sorted(r["id"] for r in rows) == sorted(
        all_rows(emulator.url, emulator.key, "project_logs", project["id"])
    )


def _range_task_pids() -> list[int]:
    """Processes running an export range task of this machine's Ray (by their title)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::_export_range"):
                found.append(int(entry.name))
    return found


def test_a_range_task_lost_with_its_worker_runs_again_from_its_checkpoint(
    emulator: Emulator, tmp_path: Path, faults: Any
) -> None:
    project = seeded_project(emulator, 900, "lost")
    out = tmp_path / "out"
    faults(latency_ms=30, rate=0.2, kinds=("429", "500", "drop"), retry_after=0, seed=5)
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(btpipe(
        emulator, "export", "--project", project["name"], "--out", str(out), "--engine", "ray", "--quiet",
        *SMALL_FILES)))  # fmt: skip
    runner.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and runner.is_alive() and time.monotonic() < deadline:
        pids = _range_task_pids()
        if pids and _published(out) >= 1:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    runner.join()
    faults()
    assert killed is not None, "no range task was seen running"
    (result,) = results
    assert result.exit_code == 0, result.output
    assert [o["rows_written"] for o in manifest(out)["objects"]] == [900]
    rows = read_export_files(out, "project_logs", project["id"])
    assert sorted(r["id"] for r in rows) == sorted(
        all_rows(emulator.url, emulator.key, "project_logs", project["id"])
    )


def test_an_origin_naming_a_dataset_the_ray_import_copies_names_the_copy(
    emulator: Emulator, tmp_path: Path
) -> None:
    """As with the local engine: an eval row's ``origin`` names the copy of its dataset."""
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("ray-origin")})
    dataset = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    insert(emulator.url, emulator.key, "dataset", dataset["id"], [{"id": "rec1", "input": 1, "expected": 2}])
    exp = post(emulator.url, emulator.key, "/v1/experiment",
               {"project_id": project["id"], "name": "e", "dataset_id": dataset["id"]})  # fmt: skip
    insert(emulator.url, emulator.key, "experiment", exp["id"],
           [{"id": "r1", "input": 1, "origin": {"object_type": "dataset", "object_id": dataset["id"], "id": "rec1"}}])  # fmt: skip
    out = tmp_path / "out"
    result = btpipe(emulator, "export", "--project", project["name"], "--objects", "datasets,experiments",
                    "--out", str(out), "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = btpipe(emulator, "import", "--in", str(out), "--to-project", unique("ray-origin-copy"),
                    "--create-project", "--engine", "ray", "--state-dir", str(tmp_path / "state"), "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    ids = {o["source"]: o["destination_id"] for o in orjson.loads(result.stdout)["objects"]}
    (row,) = all_rows(emulator.url, emulator.key, "experiment", ids["experiment:e"]).values()
    assert row["origin"] == {"object_type": "dataset", "object_id": ids["dataset:golden"], "id": "rec1"}
