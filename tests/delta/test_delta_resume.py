"""A ``--format delta`` run stopped anywhere commits exactly once when resumed: killed at random
moments, or stopped between its Delta commit and its manifest."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from deltalake import DeltaTable

from pipeline.common.errors import BtpipeError
from pipeline.emulator.server import RunningServer
from pipeline.sinks.delta import APP_ID, run_number
from tests.conftest import Emulator
from tests.delta.test_delta_export import table_rows
from tests.helpers import all_rows, btpipe, insert
from tests.reliability.crashing import kill_and_resume, timed_run
from tests.reliability.support import cli_env, command, seed_logs


def _changes(emulator: Emulator | RunningServer, project_id: str, ids: list[str], key: str) -> None:
    """Updates, new rows and deletes in the logs of ``project_id``."""
    events: list[dict[str, Any]] = [{"id": i, "output": {"changed": True}} for i in ids[:40]]
    events += [{"id": f"new-{n}", "input": n} for n in range(30)]
    events += [{"id": i, "_object_delete": True} for i in ids[40:50]]
    insert(emulator.url, key, "project_logs", project_id, events)


def _only_manifest(root: Path) -> dict[str, Any]:
    manifests = sorted((root / "_manifests").glob("*.json"))
    data: dict[str, Any] = orjson.loads(manifests[-1].read_bytes())
    return data


def test_stopped_between_commit_and_manifest_the_rerun_commits_nothing_more(
    emulator: Emulator, emulator_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = seed_logs(emulator_server, emulator.key, 300)
    root = tmp_path / "out"
    args = ["export", "--project", project["name"], "--out", str(root), "--format", "delta", "--incremental",
            "--quiet"]  # fmt: skip
    assert btpipe(emulator, *args).exit_code == 0
    ids = sorted(table_rows(root, "project_logs", project["id"]))
    _changes(emulator, project["id"], ids, emulator.key)

    import pipeline.export.runner as runner

    def stop(*_: object) -> str:
        raise BtpipeError("stopped before the manifest")

    monkeypatch.setattr(runner, "write_manifest", stop)
    assert btpipe(emulator, *args).exit_code == 1
    table = DeltaTable(str(root / "delta" / "project_logs"))
    assert table.version() == 1  # committed, manifest not written
    monkeypatch.undo()

    assert btpipe(emulator, *args).exit_code == 0
    table = DeltaTable(str(root / "delta" / "project_logs"))
    assert table.version() == 1, "the resumed run committed a second time"
    manifest = _only_manifest(root)
    assert manifest["tables"] == {"project_logs": 1}
    assert table.transaction_version(APP_ID) == run_number(manifest["run_id"])
    assert table_rows(root, "project_logs", project["id"]) == all_rows(
        emulator.url, emulator.key, "project_logs", project["id"]
    )


def test_killed_at_random_moments_the_resumed_run_commits_once(
    emulator_server: RunningServer, tmp_path: Path
) -> None:
    key = "bt-local-key"
    project = seed_logs(emulator_server, key, 2_000)
    root = tmp_path / "out"
    env = cli_env(emulator_server.url, key)
    cmd = command("export", "--project", project["name"], "--out", str(root), "--format", "delta",
                  "--incremental", "--quiet", "--page-limit", "200")  # fmt: skip
    seconds = timed_run(cmd, env)
    ids = sorted(table_rows(root, "project_logs", project["id"]))
    _changes(emulator_server, project["id"], ids, key)
    killed = kill_and_resume(cmd, env, kills=4, seconds=seconds, rng=random.Random(23))
    assert killed >= 1
    table = DeltaTable(str(root / "delta" / "project_logs"))
    assert table.version() == 1, "the killed and resumed run committed more than once"
    # A run may finish before its kill comes; the runs after it find nothing new and commit
    # nothing, so the committing run's manifest need not be the newest.
    manifests = [orjson.loads(p.read_bytes()) for p in sorted((root / "_manifests").glob("*.json"))]
    (committed,) = [m for m in manifests if run_number(m["run_id"]) == table.transaction_version(APP_ID)]
    assert all(m["tables"] == {"project_logs": 1} for m in manifests[1:]) and committed is not manifests[0]
    assert table_rows(root, "project_logs", project["id"]) == all_rows(
        emulator_server.url, key, "project_logs", project["id"]
    )


def test_a_resumed_run_that_committed_its_table_keeps_its_plan(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Delta run stopped after committing its table, resumed after more writes: it keeps
    the plan the committed table holds, so the table equals a restore of the run."""
    from pipeline.common.errors import ApiError
    from pipeline.export import runner
    from tests.export.test_export import _newest_write_a_delete, _restored_outputs

    proj, _, args = _newest_write_a_delete(emulator, tmp_path, "delta-committed")
    delta = [a if a != "jsonl" else "delta" for a in args]
    delta[delta.index("--out") + 1] = str(tmp_path / "delta-out")
    assert btpipe(emulator, *delta).exit_code == 0
    insert(emulator.url, emulator.key, "project_logs", proj["id"], [{"id": "r5", "input": 5, "output": "v1"}])
    insert(emulator.url, emulator.key, "project_logs", proj["id"], [{"id": "r2", "_object_delete": True}])

    async def stopped(*a: Any, **k: Any) -> Any:
        raise ApiError("the process stopped here")

    monkeypatch.setattr(runner, "export_config", stopped)  # after the table's commit
    assert btpipe(emulator, *delta, "--incremental").exit_code == 1
    monkeypatch.undo()
    insert(emulator.url, emulator.key, "project_logs", proj["id"], [{"id": "r9", "input": 9, "output": "v1"}])
    resumed = btpipe(emulator, *delta, "--incremental")
    assert resumed.exit_code == 0, resumed.output
    run_id = orjson.loads(resumed.stdout)["run_id"]
    table = {
        i: r["output"] for i, r in table_rows(tmp_path / "delta-out", "project_logs", proj["id"]).items()
    }
    assert table == _restored_outputs(emulator, tmp_path / "delta-out", run_id, tmp_path)
