"""The emulator (a separate process on a database file) restarts in the middle of a run:
the client waits, retries and finishes with exactly the server's rows."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from pipeline.emulator.server import ServerConfig, open_store, spawn_emulator
from tests.helpers import all_rows, post, read_export_files, unique
from tests.reliability.support import cli_env, command, free_port, hashes, record

KEY = "bt-local-key"
#: Long enough, with this back-off, to outlast a server restart.
PATIENT = ("--max-retries", "80", "--max-backoff", "0.5", "--quiet")


def restart_during(cmd: list[str], db: Path, port: int, progress: Path, env: dict[str, str]) -> None:
    """Run ``cmd``; once ``progress`` exists, stop the server, wait, start it again on the
    same port and database; ``cmd`` must then finish successfully."""
    args = ("--port", str(port), "--latency-ms", "2")
    with spawn_emulator(db, *args):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before the restart"
    time.sleep(0.5)  # down for a moment: the client sees refused connections
    with spawn_emulator(db, *args):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


def test_export_and_import_survive_a_server_restart(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    open_store(ServerConfig(db=str(db), sample_traces=3000, seed=3)).close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = cli_env(url, KEY)
    out = tmp_path / "out"
    export = command("export", "--project", "sample-project", "--objects", "logs", "--out", str(out),
                     "--format", "jsonl", "--page-limit", "100", "--file-rows", "2000", *PATIENT)  # fmt: skip
    restart_during(export, db, port, out / "_state", env)
    dest = unique("restarted")
    state = tmp_path / "state"
    load = command("import", "--in", str(out), "--to-project", dest, "--create-project", "--state-dir",
                   str(state), "--batch-rows", "100", "--workers", "2", *PATIENT)  # fmt: skip
    restart_during(load, db, port, state, env)

    with spawn_emulator(db, "--port", str(port)):
        project = post(url, KEY, "/v1/project", {"name": "sample-project"})
        clean = hashes(all_rows(url, KEY, "project_logs", project["id"]).values())
        assert hashes(read_export_files(out, "project_logs", project["id"])) == clean
        copy = post(url, KEY, "/v1/project", {"name": dest})
        assert hashes(all_rows(url, KEY, "project_logs", copy["id"]).values()) == clean
    record("server restarts survived", 2)
    record("rows moved across restarts", 2 * len(clean))
