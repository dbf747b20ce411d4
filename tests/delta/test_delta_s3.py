"""``format = "delta"`` in a job file, to ``s3://``: the table lands in the bucket, stays equal to
the source across runs, and imports back.

The S3 server is moto in server mode on a free loopback port, in a process of its own; btpipe
and deltalake reach it through the usual AWS environment variables, as they would a real bucket.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from deltalake import DeltaTable

from pipeline.cli import main
from pipeline.common.arrow_schema import restore_table
from pipeline.sources.decode import table_to_rows
from tests.conftest import Emulator
from tests.helpers import all_rows, insert, post, s3_client, unique
from tests.reliability.support import free_port, hashes

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "warehouse-load.toml"
BUCKET = "warehouse"


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """moto as its own process: deltalake holds the GIL while it waits for S3, so a server
    thread in this process could never answer it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto did not start"
                time.sleep(0.1)
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}  # fmt: skip
        s3_client(env).create_bucket(Bucket=BUCKET)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def invoke(emulator: Emulator, env: dict[str, str], *args: str) -> Any:
    full = {**env, "BRAINTRUST_API_URL": emulator.url, "BRAINTRUST_API_KEY": emulator.key}
    result = CliRunner().invoke(main, list(args), env=full)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def s3_table_rows(env: dict[str, str], uri: str, project_id: str) -> dict[str, Any]:
    options = {"AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    table = DeltaTable(uri, storage_options=options)
    arrow = table.to_pyarrow_table(filters=[("project_id", "=", project_id)])
    return {r["id"]: r for r in table_to_rows(restore_table(arrow, "project_logs"), "project_logs")}


def test_a_delta_job_to_s3_keeps_the_table_equal_and_imports_back(
    emulator: Emulator, s3_env: dict[str, str], tmp_path: Path
) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("delta-s3")})
    insert(emulator.url, emulator.key, "project_logs", project["id"],
           [{"id": f"r{i}", "input": {"i": i}, "metrics": {"n": 2**55 + i}} for i in range(50)])  # fmt: skip
    out = f"s3://{BUCKET}/{unique('root')}"
    job = [str(CONFIG), "--json", "--set", f"project={project['name']}", "--set", "format=delta",
           "--set", f"out={out}"]  # fmt: skip
    for step in range(2):
        if step:
            insert(emulator.url, emulator.key, "project_logs", project["id"],
                   [{"id": "r1", "input": "changed"}, {"id": "r2", "_object_delete": True}, {"id": "new"}])  # fmt: skip
        (result,) = invoke(emulator, s3_env, "run", *job)
        assert result["ok"], result
        source = all_rows(emulator.url, emulator.key, "project_logs", project["id"])
        assert s3_table_rows(s3_env, f"{out}/delta/project_logs", project["id"]) == source

    summary = invoke(emulator, s3_env, "import", "--in", f"{out}/delta/project_logs", "--to-project",
                     unique("from-s3"), "--create-project", "--state-dir", str(tmp_path), "--json", "--quiet")  # fmt: skip
    (done,) = summary["objects"]
    copied = all_rows(emulator.url, emulator.key, "project_logs", done["destination_id"])
    assert hashes(copied.values()) == hashes(source.values())
