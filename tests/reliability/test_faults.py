"""Export and import while the emulator fails 20% of requests: the result equals a clean run.

Faults: 429 with ``Retry-After: 0``, 500/502/503, dropped connections (after the write
happened), truncated bodies, and latency with jitter. The CLI runs as a separate process
with a short back-off and a generous retry budget; its ``--json`` summary must report the
retries it made, and the rows must match the server's clean content hash for hash.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer, ServerConfig
from tests.helpers import all_rows, read_export_files, unique
from tests.reliability.support import (
    FAULTS,
    RETRY_FLAGS,
    SCALES,
    Scale,
    cli_env,
    hashes,
    record,
    run_cli,
    seed_logs,
)

KEY = "bt-local-key"


@pytest.mark.parametrize("scale", SCALES)
def test_export_and_import_under_faults_equal_a_clean_run(tmp_path: Path, scale: Scale) -> None:
    with RunningServer(ServerConfig(port=0, db=str(tmp_path / "emulator.db"))) as server:
        project = seed_logs(server, KEY, scale.fault_rows)
        clean = hashes(all_rows(server.url, KEY, "project_logs", project["id"]).values())
        assert len(clean) == scale.fault_rows
        env = cli_env(server.url, KEY)
        out = tmp_path / "out"

        server.faults.replace(FaultConfig.parse(FAULTS + ",seed=7"))
        exported = run_cli(env, "export", "--project", project["name"], "--objects", "logs", "--out", str(out),
                           "--json", "--quiet", "--page-limit", "500", *RETRY_FLAGS)  # fmt: skip
        export_faults = server.faults.statistics()
        assert exported.returncode == 0, exported.stderr
        export_summary = orjson.loads(exported.stdout)
        assert export_summary["rows"] == scale.fault_rows and export_summary["retries"] > 0
        assert hashes(read_export_files(out, "project_logs", project["id"])) == clean

        server.faults.replace(FaultConfig.parse(FAULTS + ",seed=8"))
        dest = unique("rel-dest")
        imported = run_cli(env, "import", "--in", str(out), "--to-project", dest, "--create-project", "--json",
                           "--quiet", "--state-dir", str(tmp_path / "state"), "--batch-rows", "500",
                           *RETRY_FLAGS)  # fmt: skip
        import_faults = server.faults.statistics()
        server.faults.replace(FaultConfig())
        assert imported.returncode == 0, imported.stderr
        import_summary = orjson.loads(imported.stdout)
        assert import_summary["rows"] == scale.fault_rows and import_summary["retries"] > 0
        (dest_id,) = [o["destination_id"] for o in import_summary["objects"]]
        assert hashes(all_rows(server.url, KEY, "project_logs", dest_id).values()) == clean

    for stats in (export_faults, import_faults):
        assert stats.faults, "no fault was injected"
        record("faults injected", sum(stats.faults.values()))
    record("rows moved under faults", 2 * scale.fault_rows)
    record("retries under faults", export_summary["retries"] + import_summary["retries"])
