"""The default export and import finish, exactly, under a key limited to 3 requests a second
with a burst of 1.

Several objects are read and written at once by the default workers, so most requests get
429 at first; the client halves its requests in flight, spreads its waits and waits out 429s
without spending its attempts while others get through. The CLI runs as a separate process
with its default flags; the rows must match the server's content hash for hash, each once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.rowwrite import Target
from pipeline.emulator.sample import bulk_load
from pipeline.emulator.server import RunningServer, ServerConfig
from tests.helpers import all_rows, post, read_export_files, unique
from tests.reliability.support import cli_env, hashes, record, run_cli, seed_logs

KEY = "bt-local-key"
RATE_LIMIT = FaultConfig(rate_limit=3, burst=1)
LOG_ROWS = 3_000
DATASETS = 6
DATASET_ROWS = 300


def seed(server: RunningServer) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """A project with logs and a few datasets: object label -> (object type, id)."""
    project = seed_logs(server, KEY, LOG_ROWS)
    objects = {"logs": ("project_logs", project["id"])}
    for n in range(DATASETS):
        dataset = post(server.url, KEY, "/v1/dataset", {"project_id": project["id"], "name": f"set-{n}"})
        rows = ({"id": f"set-{n}-{i}", "input": {"q": i}, "expected": i * n} for i in range(DATASET_ROWS))
        bulk_load(server.store, Target("dataset", dataset["id"], project["id"], project["org_id"]), rows)
        objects[f"dataset:set-{n}"] = ("dataset", dataset["id"])
    return project, objects


def test_default_export_and_import_finish_under_3_requests_a_second(tmp_path: Path) -> None:
    with RunningServer(ServerConfig(port=0, db=str(tmp_path / "emulator.db"))) as server:
        project, objects = seed(server)
        clean = {label: hashes(all_rows(server.url, KEY, *ref).values()) for label, ref in objects.items()}
        assert sum(map(len, clean.values())) == LOG_ROWS + DATASETS * DATASET_ROWS
        env = cli_env(server.url, KEY)
        out = tmp_path / "out"

        server.faults.replace(RATE_LIMIT)
        exported = run_cli(
            env, "export", "--project", project["name"], "--out", str(out), "--json", "--quiet"
        )
        export_limited = server.faults.statistics().faults.get("rate_limited", 0)
        assert exported.returncode == 0, exported.stderr
        assert orjson.loads(exported.stdout)["rows"] == LOG_ROWS + DATASETS * DATASET_ROWS
        for label, (object_type, object_id) in objects.items():
            assert hashes(read_export_files(out, object_type, object_id)) == clean[label], label

        server.faults.replace(RATE_LIMIT)
        dest = unique("rate-dest")
        imported = run_cli(env, "import", "--in", str(out), "--to-project", dest, "--create-project",
                           "--json", "--quiet", "--state-dir", str(tmp_path / "state"))  # fmt: skip
        import_limited = server.faults.statistics().faults.get("rate_limited", 0)
        server.faults.replace(FaultConfig())
        assert imported.returncode == 0, imported.stderr
        summary = orjson.loads(imported.stdout)
        assert summary["rows"] == LOG_ROWS + DATASETS * DATASET_ROWS
        copies = {o["source"]: o["destination_id"] for o in summary["objects"]}
        assert set(copies) == set(objects)
        for label, (object_type, _) in objects.items():
            assert hashes(all_rows(server.url, KEY, object_type, copies[label]).values()) == clean[label], (
                label
            )

    assert export_limited > 0 and import_limited > 0, "the rate limit never refused a request"
    record("rows moved under a 3/s rate limit", 2 * (LOG_ROWS + DATASETS * DATASET_ROWS))
    record("429s waited out", export_limited + import_limited)
