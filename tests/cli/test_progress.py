"""Progress against a real export: plain lines off a terminal, a live display on one, silence
under --quiet and --json, and counters that match the rows exported exactly.

The emulator here is this module's own, with latency added to every answer, so an export of
a few hundred rows lasts long enough for a tiny progress interval to fire several times.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from click.testing import CliRunner, Result

from pipeline.api.client import BraintrustClient, ClientSettings, RetryPolicy
from pipeline.cli import main
from pipeline.cli.display import INTERVAL_ENV
from pipeline.common.progress import Progress
from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer, ServerConfig
from pipeline.export.runner import ExportJob, ExportOptions
from tests.helpers import make_project, read_export_files

KEY = "bt-local-key"
LOGS = 600
DATASET = 120
EXPERIMENT = 60
#: Small pages, one range at a time: many requests, each slowed by the emulator's latency.
SLOW_EXPORT = ("--format", "jsonl", "--page-limit", "50", "--workers", "1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("progress") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db))) as running:
        yield running


@pytest.fixture(scope="module")
def project(server: RunningServer) -> dict[str, Any]:
    made = make_project(
        server.url, KEY, "progress",
        logs=[{"id": f"l{i}", "input": {"n": i}, "output": i} for i in range(LOGS)],
        dataset_rows=[{"id": f"d{i}", "input": i, "expected": i} for i in range(DATASET)],
        experiment_name="run-1",
        experiment_rows=[{"id": f"e{i}", "input": i, "output": i} for i in range(EXPERIMENT)],
    )  # fmt: skip
    return made["project"]


@pytest.fixture
def slow(server: RunningServer) -> Iterator[None]:
    server.faults.replace(FaultConfig(latency_ms=15))
    yield
    server.faults.replace(FaultConfig())


def export(server: RunningServer, project: dict[str, Any], out: Path, *args: str, interval: str) -> Result:
    env = {"BRAINTRUST_API_URL": server.url, "BRAINTRUST_API_KEY": KEY, INTERVAL_ENV: interval}
    argv = ["export", "--project", project["name"], "--out", str(out), *SLOW_EXPORT, *args]
    return CliRunner().invoke(main, argv, env=env, catch_exceptions=False)


def expected(project: dict[str, Any]) -> dict[str, int]:
    """Rows per task label: the project's logs go by the project's name."""
    return {project["name"]: LOGS, "dataset:golden": DATASET, "experiment:run-1": EXPERIMENT}


def rows_in(line: str) -> int:
    found = re.search(r"tasks done, ([\d,]+) rows", line)
    assert found, line
    return int(found[1].replace(",", ""))


@pytest.mark.usefixtures("slow")
def test_plain_lines_off_a_terminal_name_what_is_done(
    server: RunningServer, project: dict[str, Any], tmp_path: Path
) -> None:
    result = export(server, project, tmp_path / "out", interval="0.02")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    periodic = [line for line in lines if line.startswith("btpipe: progress after ")]
    assert len(periodic) >= 2, result.stderr
    # a line names an object still being exported, with its rows so far out of its total
    task = re.compile(r"; ([^;]+) ([\d,]+)/([\d,]+) rows [\d.]+% [\d,]+ rows/s")
    moving = [m for line in periodic for m in task.finditer(line) if int(m[2].replace(",", "")) > 0]
    assert moving, result.stderr
    assert {(m[1], int(m[3].replace(",", ""))) for m in moving} <= set(expected(project).items())
    counts = [rows_in(line) for line in periodic]
    assert counts == sorted(counts) and counts[-1] <= LOGS + DATASET + EXPERIMENT
    # one final line with the exact count, then the command's summary
    finals = [line for line in lines if line.startswith("btpipe: progress finished after ")]
    assert len(finals) == 1, result.stderr
    assert f"3 of 3 tasks done, {LOGS + DATASET + EXPERIMENT:,} rows, " in finals[0]
    assert finals[0].endswith(" 0 retries"), finals[0]
    assert lines[-1].startswith(f"exported {LOGS + DATASET + EXPERIMENT:,} rows from 3 objects")
    assert lines.index(finals[0]) == len(lines) - 2
    assert KEY not in result.stderr


def test_a_run_shorter_than_the_interval_prints_only_its_summary(
    server: RunningServer, project: dict[str, Any], tmp_path: Path
) -> None:
    result = export(server, project, tmp_path / "out", interval="600")
    assert result.exit_code == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"exported {LOGS + DATASET + EXPERIMENT:,} rows from 3 objects in ")


@pytest.mark.usefixtures("slow")
def test_quiet_leaves_stderr_empty_on_success(
    server: RunningServer, project: dict[str, Any], tmp_path: Path
) -> None:
    result = export(server, project, tmp_path / "out", "--quiet", interval="0.02")
    assert result.exit_code == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    rows = read_export_files(tmp_path / "out", "project_logs", project["id"])
    assert len(rows) == LOGS


@pytest.mark.usefixtures("slow")
def test_json_prints_a_summary_that_parses_and_no_progress(
    server: RunningServer, project: dict[str, Any], tmp_path: Path
) -> None:
    result = export(server, project, tmp_path / "out", "--json", interval="0.02")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    summary = orjson.loads(result.stdout)
    assert summary["rows"] == LOGS + DATASET + EXPERIMENT
    assert {o["label"]: o["rows"] for o in summary["objects"]} == expected(project)


def test_a_bad_interval_is_one_error_line(
    server: RunningServer, project: dict[str, Any], tmp_path: Path
) -> None:
    result = export(server, project, tmp_path / "out", interval="soon")
    assert result.exit_code == 2
    assert result.stderr == f"btpipe: error: {INTERVAL_ENV}='soon': expected a number of seconds above 0\n"


def test_counters_are_exact_and_count_retries(
    server: RunningServer, project: dict[str, Any], tmp_path: Path
) -> None:
    """Rows counted equal rows exported, object by object; retries equal the client's."""
    out = tmp_path / "out"
    progress = Progress()
    options = ExportOptions(project=project["name"], out=str(out), format="jsonl", page_limit=50, workers=2)
    settings = ClientSettings(
        api_url=server.url, api_key=KEY, retry=RetryPolicy(max_attempts=40, max_delay=0.01)
    )

    async def body() -> Any:
        async with BraintrustClient(settings) as client:
            return await ExportJob(client, options, progress).run()

    server.faults.replace(FaultConfig(rate=0.3, kinds=("503",), retry_after=0, seed=3))
    try:
        summary = anyio.run(body)
    finally:
        server.faults.replace(FaultConfig())
    stats = progress.statistics()
    on_disk = {obj.label: len(read_export_files(out, obj.object_type, obj.id)) for obj in summary.objects}
    assert on_disk == expected(project)
    assert {t.label: t.done for t in stats.tasks} == on_disk
    assert {t.label: t.total for t in stats.tasks} == on_disk
    assert all(t.finished and t.resumed == 0 and t.bytes > 0 for t in stats.tasks)
    assert stats.rows == summary.rows == LOGS + DATASET + EXPERIMENT
    assert stats.active == () and stats.finished == 3
    assert stats.retries == summary.retries > 0


def test_a_terminal_gets_the_live_display(
    server: RunningServer, project: dict[str, Any], tmp_path: Path
) -> None:
    """stderr is a pseudo-terminal: rich draws each active object with rows, rate and ETA."""
    env = {**os.environ, "BRAINTRUST_API_URL": server.url, "BRAINTRUST_API_KEY": KEY, "COLUMNS": "160"}
    argv = ["export", "--project", project["name"], "--out", str(tmp_path / "out"), *SLOW_EXPORT]
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    server.faults.replace(FaultConfig(latency_ms=40))  # logs take several redraws (4 a second)
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "pipeline", *argv], env=env, stdout=subprocess.PIPE, stderr=follower
        ) as proc:
            os.close(follower)
            stdout, _ = proc.communicate(timeout=120)
    finally:
        server.faults.replace(FaultConfig())
    reader.join(timeout=10)
    os.close(leader)
    assert proc.returncode == 0
    assert stdout == b""
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in screen  # redrawn in place, not printed line by line
    assert "btpipe: progress" not in screen
    assert re.search(rf"{project['name']} +\S* +[\d,]+/{LOGS} rows", screen), screen
    assert re.search(r" [1-9][\d,]*/[\d,]+ rows +[\d,]+ rows/s", screen), screen
    total = LOGS + DATASET + EXPERIMENT
    assert re.search(rf"finished after \d+s: 3 of 3 tasks done, {total:,} rows", screen), screen
    assert f"exported {total:,} rows from 3 objects" in screen
    assert KEY not in screen


def test_resumed_rows_are_done_but_not_in_the_rate_and_a_client_counts_once() -> None:
    class Client:
        def __init__(self, retries: int) -> None:
            self.retries = retries

        def statistics(self) -> Client:
            return self

    progress = Progress()
    first, second = Client(2), Client(3)
    for client in (first, second, first):
        progress.watch_retries(client)
    task = progress.add("logs", 1_000, done=400)
    task.advance(100, 2_048)
    stats = task.statistics()
    assert (stats.done, stats.resumed, stats.bytes, stats.fraction) == (500, 400, 2_048, 0.5)
    assert stats.rate == 100 / stats.seconds
    assert stats.eta == 500 / stats.rate
    task.finish()
    done = progress.statistics()
    assert done.tasks[0].finished and done.tasks[0].eta is None and done.active == ()
    assert (done.rows, done.bytes, done.retries, done.finished) == (500, 2_048, 5, 1)


@pytest.mark.usefixtures("slow")
def test_verify_shows_its_progress_off_a_terminal_too(server: RunningServer, project: dict[str, Any]) -> None:
    """Each object read (source and destination) is a task: a project verified against itself
    reads every row twice."""
    env = {"BRAINTRUST_API_URL": server.url, "BRAINTRUST_API_KEY": KEY, INTERVAL_ENV: "0.02"}
    argv = ["verify", "--project", project["name"], "--to-project", project["name"], "--objects", "logs,datasets,experiments"]  # fmt: skip
    result = CliRunner().invoke(main, argv, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("btpipe: progress after ")], result.stderr
    (final,) = [line for line in lines if line.startswith("btpipe: progress finished after ")]
    assert f"6 of 6 tasks done, {2 * (LOGS + DATASET + EXPERIMENT):,} rows, " in final


@pytest.mark.usefixtures("slow")
def test_delete_shows_its_progress_off_a_terminal_too(server: RunningServer) -> None:
    logs = [{"id": f"x{i}", "input": i} for i in range(300)]
    made = make_project(
        server.url,
        KEY,
        "progress-delete",
        logs=logs,
        dataset_rows=[],
        experiment_name="e",
        experiment_rows=[],
    )
    env = {"BRAINTRUST_API_URL": server.url, "BRAINTRUST_API_KEY": KEY, INTERVAL_ENV: "0.02"}
    argv = ["delete", "--project", made["project"]["name"], "--objects", "logs", "--filter", "input >= 100",
            "--yes", "--batch-rows", "10", "--workers", "1"]  # fmt: skip
    result = CliRunner().invoke(main, argv, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("btpipe: progress after ")], result.stderr
    (final,) = [line for line in lines if line.startswith("btpipe: progress finished after ")]
    assert "1 of 1 tasks done, 200 rows, " in final
    assert lines[-1] == "deleted 200 rows"
