"""``btpipe run`` with each shipped config, end to end against the emulator over loopback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as pads
from click.testing import CliRunner, Result

from pipeline.cli.jobs import run
from pipeline.emulator.sample import generate_traces
from tests.helpers import all_rows, insert, make_project, post, read_export_files, unique

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def run_config(emulator: Any, name: str, *args: str, env: dict[str, str] | None = None) -> Result:
    full_env = {
        "BRAINTRUST_API_URL": emulator.url,
        "BRAINTRUST_API_KEY": emulator.key,
        "BTPIPE_OUT": None,
        **(env or {}),
    }
    return CliRunner().invoke(run, [str(CONFIGS / name), "--json", *args], env=full_env)


def sample_project(emulator: Any, traces: int = 40) -> dict[str, Any]:
    made = make_project(
        emulator.url, emulator.key, "jobs", logs=list(generate_traces(seed=3, n_traces=traces)),
        dataset_rows=[{"id": f"d{i}", "input": i, "expected": -i} for i in range(25)],
        experiment_name="exp", experiment_rows=[{"id": f"e{i}", "input": i, "scores": {"s": 0.5}} for i in range(15)],
    )  # fmt: skip
    proj, ds, exp = made["project"], made["dataset"], made["experiment"]
    return {"project": proj, "objects": [("project_logs", proj["id"]), ("dataset", ds["id"]), ("experiment", exp["id"])]}  # fmt: skip


def ok_json(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.stderr
    return orjson.loads(result.stdout)


def run_files(root: Path, run_id: str) -> list[Path]:
    return sorted(p for p in root.glob(f"object_type=*/object_id=*/run={run_id}/*") if p.is_file())


def test_nightly_backup_incremental_runs_and_retention(emulator: Any, tmp_path: Path) -> None:
    setup = sample_project(emulator)
    name, pid = setup["project"]["name"], setup["project"]["id"]
    server = {obj: all_rows(emulator.url, emulator.key, *obj) for obj in setup["objects"]}
    # keep_runs=2, full_every=2: runs 1 and 3 are full; after run 4 runs 1 and 2 are pruned.
    args = (
        "--set",
        f"projects={name}",
        "--out",
        str(tmp_path),
        "--set",
        "keep_runs=2",
        "--set",
        "full_every=2",
    )

    (first,) = ok_json(run_config(emulator, "nightly-backup.toml", *args))
    assert first["rows"] == sum(len(rows) for rows in server.values())
    for (object_type, object_id), rows in server.items():
        exported = {r["id"]: r for r in read_export_files(tmp_path, object_type, object_id)}
        assert exported == rows

    new_events = list(generate_traces(seed=11, n_traces=6))
    insert(emulator.url, emulator.key, "project_logs", pid, new_events)
    (second,) = ok_json(run_config(emulator, "nightly-backup.toml", *args))
    new_ids = {e["id"] for e in new_events}
    assert second["rows"] == len(new_ids)
    second_run = second["runs"][0]["run_id"]
    logs_now = all_rows(emulator.url, emulator.key, "project_logs", pid)
    second_rows = [r for r in read_export_files(tmp_path, "project_logs", pid)
                   if r["id"] in new_ids]  # fmt: skip
    assert {r["id"] for r in second_rows} == new_ids
    assert all(f"run={second_run}" in str(p) for p in run_files(tmp_path, second_run))
    assert {p.parts[-3] for p in run_files(tmp_path, second_run)} == {f"object_id={pid}"}

    (third,) = ok_json(run_config(emulator, "nightly-backup.toml", *args))
    total = (
        len(logs_now)
        + len(server[("dataset", setup["objects"][1][1])])
        + len(server[("experiment", setup["objects"][2][1])])
    )
    assert third["rows"] == total  # a full run: re-based
    # the second run still needs the first: 3 runs kept, as full_every=2 allows, without a warning
    assert third["pruned_runs"] == [] and third["warnings"] == []

    (fourth,) = ok_json(run_config(emulator, "nightly-backup.toml", *args))
    assert fourth["rows"] == 0
    assert fourth["pruned_runs"] == [first["runs"][0]["run_id"], second_run]
    kept = sorted(r["runs"][0]["run_id"] for r in (third, fourth))
    assert sorted(p.stem for p in (tmp_path / "_manifests").iterdir()) == kept
    assert not run_files(tmp_path, first["runs"][0]["run_id"]) and not run_files(tmp_path, second_run)
    assert {r["id"]: r for r in read_export_files(tmp_path, "project_logs", pid)} == logs_now


def test_warehouse_load_is_hive_partitioned_parquet(emulator: Any, tmp_path: Path) -> None:
    setup = sample_project(emulator)
    pid = setup["project"]["id"]
    (result,) = ok_json(run_config(emulator, "warehouse-load.toml", "--set", f"project={setup['project']['name']}",
                                   "--out", str(tmp_path)))  # fmt: skip
    logs = all_rows(emulator.url, emulator.key, "project_logs", pid)
    assert result["rows"] == len(logs)
    # What the README's DuckDB query reads: every Parquet file, partition columns from the path.
    table = pads.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("id").to_pylist()) == sorted(logs)
    assert set(table.column("object_type").to_pylist()) == {"project_logs"}
    assert set(table.column("object_id").to_pylist()) == {pid}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("object_type=")] == [
        "object_type=project_logs"
    ]


def test_migrate_project_across_orgs_and_verify(emulator: Any, tmp_path: Path) -> None:
    setup = sample_project(emulator)
    target = unique("copy")
    env = {"DEST_BRAINTRUST_API_URL": emulator.url, "DEST_BRAINTRUST_API_KEY": emulator.other_org_key}
    (result,) = ok_json(run_config(
        emulator, "migrate-project.toml", "--set", f"project={setup['project']['name']}",
        "--set", f"to_project={target}", "--set", f"state_dir={tmp_path}", env=env,
    ))  # fmt: skip
    assert result["ok"] is True and result["warnings"] == []
    verified = result["details"]["verify"]
    assert [d["ok"] for d in verified] == [True] * 5  # the logs, a dataset, an experiment, and the two kinds
    assert [d["source"] for d in verified if d["unit"] == "objects"] == ["datasets", "experiments"]
    copies = {o["source"]: o["destination_id"] for o in result["details"]["migrate"]["objects"]}
    source_logs = all_rows(emulator.url, emulator.key, "project_logs", setup["project"]["id"])
    copied_logs = all_rows(emulator.url, emulator.other_org_key, "project_logs", copies["logs"])
    assert sorted(copied_logs) == sorted(source_logs)
    assert {k: v["input"] for k, v in copied_logs.items()} == {k: v["input"] for k, v in source_logs.items()}
    assert result["rows"] == sum(len(all_rows(emulator.url, emulator.key, *obj)) for obj in setup["objects"])


def test_run_reports_config_errors_and_unknown_jobs(emulator: Any) -> None:
    result = run_config(emulator, "nightly-backup.toml", "--job", "weekly", "--set", "workers=0")
    assert result.exit_code == 2
    path = CONFIGS / "nightly-backup.toml"
    assert result.stderr.splitlines() == [
        f'btpipe: error: {path}: no job named "weekly" (jobs: nightly-backup)',
    ]
    result = run_config(emulator, "nightly-backup.toml", "--set", "workers=0")
    assert result.stderr == "btpipe: error: --set workers: expected integer >= 1, got 0\n"


def test_run_missing_project_is_not_found_and_leaves_no_root(emulator: Any, tmp_path: Path) -> None:
    out = tmp_path / "new-root"
    result = run_config(
        emulator, "nightly-backup.toml", "--set", "projects=does-not-exist", "--out", str(out)
    )
    assert result.exit_code == 4, result.stderr
    assert result.stderr.startswith("btpipe: error: ") and "does-not-exist" in result.stderr
    assert not out.exists()


def test_run_restart_discards_a_state_file_it_cannot_read(emulator: Any, tmp_path: Path) -> None:
    setup = sample_project(emulator, traces=3)
    args = ("--set", f"projects={setup['project']['name']}", "--out", str(tmp_path))
    assert run_config(emulator, "nightly-backup.toml", *args).exit_code == 0
    (state,) = (tmp_path / "_state").glob("export-*.json")
    state.write_text(state.read_text().replace('"watermarks": {', '"watermarks": [1], "was": {'))
    refused = run_config(emulator, "nightly-backup.toml", *args)
    assert refused.exit_code == 2 and "corrupt state file" in refused.stderr and "--restart" in refused.stderr
    restarted = run_config(emulator, "nightly-backup.toml", *args, "--restart")
    assert restarted.exit_code == 0, restarted.stderr
    assert isinstance(orjson.loads(state.read_bytes())["watermarks"], dict)  # saved afresh


def test_run_prints_one_line_per_job(emulator: Any, tmp_path: Path) -> None:
    setup = sample_project(emulator, traces=5)
    env = {"BRAINTRUST_API_URL": emulator.url, "BRAINTRUST_API_KEY": emulator.key}
    args = [
        str(CONFIGS / "warehouse-load.toml"),
        "--set",
        f"project={setup['project']['name']}",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(run, args, env=env)
    assert result.exit_code == 0, result.stderr
    rows = len(all_rows(emulator.url, emulator.key, "project_logs", setup["project"]["id"]))
    assert result.stdout == ""
    assert re.fullmatch(
        rf"job warehouse-logs: {rows:,} rows, 1 files in [\d.]+s -> {re.escape(str(tmp_path))}\n",
        result.stderr,
    )


def test_a_failed_job_is_named_and_the_jobs_before_it_are_reported(emulator: Any, tmp_path: Path) -> None:
    setup = sample_project(emulator, traces=3)
    config = tmp_path / "two.toml"
    config.write_text(
        f'[job.good]\nproject = "{setup["project"]["name"]}"\nout = "{tmp_path / "good"}"\nobjects = "logs"\n'
        f'[job.bad]\nproject = "{unique("missing")}"\nout = "{tmp_path / "bad"}"\n'
    )
    env = {"BRAINTRUST_API_URL": emulator.url, "BRAINTRUST_API_KEY": emulator.key, "BTPIPE_OUT": None}
    rows = len(all_rows(emulator.url, emulator.key, "project_logs", setup["project"]["id"]))
    result = CliRunner().invoke(run, [str(config)], env=env)
    assert result.exit_code == 4, result.stderr
    good, error = result.stderr.splitlines()
    assert good.startswith(f"job good: {rows:,} rows, 1 files in ")
    assert error.startswith("btpipe: error: job bad: project ") and "not found" in error
    as_json = CliRunner().invoke(run, [str(config), "--json"], env=env)
    assert as_json.exit_code == 4
    done, stopped = orjson.loads(as_json.stdout)  # the failed job after those done before it
    assert (done["name"], done["rows"], done["ok"]) == ("good", rows, True)
    assert (stopped["name"], stopped["ok"], stopped["exit_code"]) == ("bad", False, 4)
    assert stopped["error"].startswith("project ") and "not found" in stopped["error"]


def test_a_migrate_job_that_leaves_configuration_behind_fails_and_says_what(
    emulator: Any, tmp_path: Path
) -> None:
    """What ``btpipe migrate`` exits 1 for (a configuration object whose reference cannot be
    remapped) fails the job too, named in its warnings; a code bundle left out is a warning."""
    other = post(emulator.url, emulator.key, "/v1/project", {"name": unique("elsewhere")})
    tool = post(emulator.url, emulator.key, "/v1/function", {
        "project_id": other["id"], "name": "tool", "slug": "tool", "function_data": {"type": "prompt"},
        "prompt_data": {"prompt": {"type": "chat", "messages": [{"role": "user", "content": "x"}]}}})  # fmt: skip
    source = post(emulator.url, emulator.key, "/v1/project", {"name": unique("left-behind")})
    post(emulator.url, emulator.key, "/v1/prompt", {
        "project_id": source["id"], "name": "uses", "slug": "uses",
        "prompt_data": {"prompt": {"type": "chat", "messages": [{"role": "user", "content": "y"}]},
                        "tool_functions": [{"type": "function", "id": tool["id"]}]}})  # fmt: skip
    bundle = {"type": "code", "data": {"type": "bundle", "bundle_id": "b-1", "location": {"type": "function", "index": 0},
                                       "runtime_context": {"runtime": "node", "version": "20"}}}  # fmt: skip
    post(emulator.url, emulator.key, "/v1/function",
         {"project_id": source["id"], "name": "bundled", "slug": "bundled", "function_data": bundle})  # fmt: skip
    config = tmp_path / "job.toml"
    config.write_text(
        f'[destination]\napi_url = "{emulator.url}"\napi_key_env = "BRAINTRUST_API_KEY"\n[job.m]\nkind = "migrate"\n'
        f'project = "{source["name"]}"\nto_project = "{unique("copy")}"\ncreate_project = true\n'
        f'objects = ["config"]\nverify = false\nstate_dir = "{tmp_path / "state"}"\n'
    )
    env = {"BRAINTRUST_API_URL": emulator.url, "BRAINTRUST_API_KEY": emulator.key, "BTPIPE_OUT": None}
    result = CliRunner().invoke(run, [str(config), "--json"], env=env)
    assert result.exit_code == 1, result.stderr
    (done,) = orjson.loads(result.stdout)
    assert done["ok"] is False
    assert any(w.startswith("job.m: not copied: prompt 'uses': refers to ") for w in done["warnings"])
    assert "job.m: function 'bundled': a code bundle cannot be copied; skipped" in done["warnings"]
    text = CliRunner().invoke(run, [str(config)], env=env)
    assert text.exit_code == 1 and "not copied: prompt 'uses'" in text.stderr
