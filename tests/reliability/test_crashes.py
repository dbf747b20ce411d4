"""kill -9 of export, import and migrate at seeded random moments, resuming each time.

Each command first runs once without interruption (the clean run, which also says how long
a run takes, to place the kill moments). Then a fresh run is killed ``Scale.kills`` times
and resumed to the end. The final rows must equal the clean run's hash for hash, and
throughout, a :class:`Watcher` checks that every visible data file parses completely and
every manifest and state file is valid JSON.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer, ServerConfig
from tests.helpers import all_rows, post, read_export_files, unique
from tests.reliability.crashing import Watcher, kill_and_resume, timed_run
from tests.reliability.support import SCALES, Scale, cli_env, command, hashes, record, seed_logs

KEY = "bt-local-key"
#: Small pages, files, batches and a little latency: many checkpoints, each run a few seconds.
EXPORT_FLAGS = ("--format", "jsonl", "--compression", "gzip", "--page-limit", "200", "--file-rows", "1000",
                "--quiet")  # fmt: skip
LOAD_FLAGS = ("--batch-rows", "200", "--workers", "2", "--quiet")


def destination_hashes(server: RunningServer, project_name: str) -> dict[str, str]:
    project = post(server.url, KEY, "/v1/project", {"name": project_name})
    return hashes(all_rows(server.url, KEY, "project_logs", project["id"]).values())


@pytest.mark.parametrize("scale", SCALES)
def test_kill_9_at_random_moments_then_resume_equals_a_clean_run(tmp_path: Path, scale: Scale) -> None:
    rng = random.Random(20240601)
    with RunningServer(ServerConfig(port=0, db=str(tmp_path / "emulator.db"))) as server:
        project = seed_logs(server, KEY, scale.crash_rows)
        clean = hashes(all_rows(server.url, KEY, "project_logs", project["id"]).values())
        server.faults.replace(FaultConfig(latency_ms=2))
        env = cli_env(server.url, KEY)
        killed = {}

        def export_cmd(out: Path) -> list[str]:
            return command("export", "--project", project["name"], "--objects", "logs", "--out", str(out),
                           *EXPORT_FLAGS)  # fmt: skip

        seconds = timed_run(export_cmd(tmp_path / "clean"), env)
        assert hashes(read_export_files(tmp_path / "clean", "project_logs", project["id"])) == clean
        out = tmp_path / "out"
        with Watcher([out]) as watch:
            killed["export"] = kill_and_resume(export_cmd(out), env, scale.kills, seconds, rng)
        assert hashes(read_export_files(out, "project_logs", project["id"])) == clean
        assert watch.checks and not watch.problems, watch.problems[:5]

        def load_cmd(name: str, dest: str, state: Path) -> list[str]:
            if name == "import":
                return command("import", "--in", str(tmp_path / "clean"), "--to-project", dest,
                               "--create-project", "--state-dir", str(state), *LOAD_FLAGS)  # fmt: skip
            return command("migrate", "--from-project", project["name"], "--to-project", dest, "--objects",
                           "logs", "--create-project", "--page-limit", "200", "--state-dir", str(state),
                           *LOAD_FLAGS)  # fmt: skip

        for name in ("import", "migrate"):  # each into a fresh project: killed, resumed, compared
            seconds = timed_run(load_cmd(name, unique("rel-clean"), tmp_path / f"{name}-clean"), env)
            dest, state = unique(f"rel-{name}"), tmp_path / f"{name}-state"
            with Watcher([state]) as watch:
                killed[name] = kill_and_resume(load_cmd(name, dest, state), env, scale.kills, seconds, rng)
            assert destination_hashes(server, dest) == clean
            assert watch.checks and not watch.problems, watch.problems[:5]

    assert all(killed.values()), killed
    record("crashes survived", sum(killed.values()))
    record("rows moved across crashes", 3 * scale.crash_rows)
