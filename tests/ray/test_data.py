"""Ray Data: ``read_braintrust`` reads what ``btpipe export`` writes, ``write_braintrust``
writes what ``btpipe import`` writes, through faults and a killed read task, under one
cluster-wide request budget, and the key never travels inside a task."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import ray
import ray.data
from ray import cloudpickle

from pipeline.ray import (
    BraintrustDatasink,
    BraintrustDatasource,
    read_braintrust,
    request_budget,
    write_braintrust,
)
from pipeline.ray.budget import TokenBucket
from pipeline.sources.decode import table_to_rows
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, read_export_files, unique
from tests.ray.conftest import seeded_project

pytestmark = pytest.mark.usefixtures("local_ray", "ray_env")


def dataset_rows(ds: ray.data.Dataset) -> dict[str, dict[str, Any]]:
    """Every row of ``ds`` decoded from its Arrow blocks, by id; an id twice fails."""
    rows = [row for ref in ds.to_arrow_refs() for row in table_to_rows(ray.get(ref), "project_logs")]
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), "a row came twice"
    return by_id


def source(emulator: Emulator, project: dict[str, Any], **options: Any) -> BraintrustDatasource:
    return BraintrustDatasource(project["name"], api_url=emulator.url, **options)


def content(rows: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What a copy in another project keeps of each row: its id and content."""
    fields = ("input", "output", "expected", "metadata", "scores", "tags", "created")
    return {i: tuple(r.get(f) for f in fields) for i, r in rows.items()}


def test_read_braintrust_returns_exactly_the_rows_export_writes(emulator: Emulator, tmp_path: Path) -> None:
    project = seeded_project(emulator, 900)
    assert (
        btpipe(emulator, "export", "--project", project["name"], "--out", str(tmp_path), "--quiet").exit_code
        == 0
    )
    exported = {r["id"]: r for r in read_export_files(tmp_path, "project_logs", project["id"])}
    datasource = source(emulator, project, ranges_per_object=3, min_rows_per_range=200)
    assert len(datasource.get_read_tasks(8)) >= 2  # one read task per range of the plan
    assert datasource.estimate_inmemory_data_size()
    read = dataset_rows(ray.data.read_datasource(datasource))
    assert len(read) == 900
    assert read == exported


def test_read_then_write_parquet_then_import_round_trips(emulator: Emulator, tmp_path: Path) -> None:
    project = seeded_project(emulator, 300)
    read_braintrust(project["name"], api_url=emulator.url).write_parquet(str(tmp_path / "files"))
    copy = unique("ray-copy")
    result = btpipe(emulator, "import", "--in", str(tmp_path / "files"), "--to-object", "logs",
                    "--to-project", copy, "--create-project", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = btpipe(emulator, "verify", "--project", project["name"], "--to-project", copy)
    assert result.exit_code == 0, result.output


def test_write_braintrust_equals_btpipe_import(emulator: Emulator, tmp_path: Path) -> None:
    project = seeded_project(emulator, 400)
    assert (
        btpipe(emulator, "export", "--project", project["name"], "--out", str(tmp_path), "--quiet").exit_code
        == 0
    )
    imported, written = unique("by-import"), unique("by-ray")
    result = btpipe(
        emulator, "import", "--in", str(tmp_path), "--to-project", imported, "--create-project", "--quiet"
    )
    assert result.exit_code == 0, result.output
    files = sorted(str(p) for p in tmp_path.rglob("*.parquet"))
    built_elsewhere = ray.data.read_parquet(files, partitioning=None)  # a Dataset btpipe did not make
    assert write_braintrust(built_elsewhere, written, create_project=True, api_url=emulator.url) == 400
    ids = [post_project(emulator, name) for name in (imported, written)]
    assert content(all_rows(emulator.url, emulator.key, "project_logs", ids[0])) == content(
        all_rows(emulator.url, emulator.key, "project_logs", ids[1])
    )
    assert len(all_rows(emulator.url, emulator.key, "project_logs", ids[1])) == 400


def post_project(emulator: Emulator, name: str) -> str:
    from tests.helpers import post

    return str(post(emulator.url, emulator.key, "/v1/project", {"name": name})["id"])


class _KilledOnce(BraintrustDatasource):
    """The datasource with its first read task's worker killed after its first block, once."""

    marker: str = ""

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[Any]:
        tasks = super().get_read_tasks(parallelism, per_task_row_limit, data_context)
        first = tasks[0]
        tasks[0] = ray.data.ReadTask(
            _dies_once(first.read_fn, self.marker), first.metadata, schema=first.schema
        )
        return tasks


def _dies_once(read: Any, marker: str) -> Any:
    def read_fn() -> Iterator[pa.Table]:
        for number, block in enumerate(read()):
            if number == 1 and not os.path.exists(marker):
                Path(marker).touch()
                os._exit(1)  # the worker dies mid-range, as a lost node would
            yield block

    return read_fn


def test_faults_and_a_killed_read_task_leave_the_rows_exact(
    emulator: Emulator, tmp_path: Path, faults: Any
) -> None:
    project = seeded_project(emulator, 600)
    expected = all_rows(emulator.url, emulator.key, "project_logs", project["id"])
    faults(rate=0.2, kinds=("429", "500", "503", "drop"), retry_after=0, seed=3)
    datasource = _KilledOnce(project["name"], api_url=emulator.url, page_limit=100, ranges_per_object=2,
                             min_rows_per_range=100)  # fmt: skip
    datasource.marker = str(tmp_path / "killed")
    read = dataset_rows(ray.data.read_datasource(datasource))
    assert Path(datasource.marker).exists()
    assert read.keys() == expected.keys()
    assert content(read) == content(expected)
    copy = unique("ray-faults")
    assert write_braintrust(ray.data.read_datasource(source(emulator, project)), copy, create_project=True,
                            api_url=emulator.url) == 600  # fmt: skip
    faults()
    assert content(
        all_rows(emulator.url, emulator.key, "project_logs", post_project(emulator, copy))
    ) == content(expected)


def test_the_shared_budget_keeps_the_cluster_under_the_rate_limit(
    emulator: Emulator, server: Any, faults: Any
) -> None:
    project = seeded_project(emulator, 400)
    faults(rate_limit=20, burst=5)
    budget = request_budget(10, burst=2)
    datasource = source(
        emulator, project, page_limit=20, ranges_per_object=4, min_rows_per_range=50, budget=budget
    )
    assert len(dataset_rows(ray.data.read_datasource(datasource))) == 400
    stats = server.faults.statistics()
    given = ray.get(budget.statistics.remote())
    assert stats.faults.get("rate_limited", 0) == 0
    assert given.permits >= 20 and given.throttled == 0
    ray.kill(budget)


def test_a_429_halves_the_budget_and_successes_raise_it_again() -> None:
    now = [0.0]
    bucket = TokenBucket(8, 2, clock=lambda: now[0])
    assert [bucket.reserve()[0] for _ in range(3)] == [0.0, 0.0, 0.125]  # the burst, then 1/rate apart
    sent_in = bucket.reserve()[1]
    bucket.throttled(sent_in)
    bucket.throttled(sent_in)  # a second 429 of the same round is the same signal
    assert bucket.rate == 4
    for _ in range(4):
        bucket.succeeded()
    assert bucket.rate == 5


def test_the_key_travels_in_no_task(emulator: Emulator) -> None:
    project = seeded_project(emulator, 10)
    datasource = source(emulator, project)
    sink = BraintrustDatasink(unique("sink"), create_project=True, api_url=emulator.url)
    key = emulator.key.encode()
    for thing in [datasource, sink, *datasource.get_read_tasks(4)]:
        assert key not in cloudpickle.dumps(thing)
    assert key not in pickle.dumps(datasource)
    assert emulator.key not in repr(datasource.__dict__)


def test_the_local_ray_listens_on_loopback_only() -> None:
    """Every server of the local Ray (GCS, raylet, workers, the runtime-env agent, this driver)
    listens on 127.0.0.1 only: its node address is loopback, not the machine's interface."""
    import ipaddress

    import psutil

    me = psutil.Process()
    listening = []
    for process in [me, *me.children(recursive=True)]:
        try:  # a short-lived worker may be gone by now
            connections = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            continue
        listening += [c for c in connections if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 3  # GCS, raylet, this driver's core worker at least
    assert all(ipaddress.ip_address(c.laddr.ip.removeprefix("::ffff:")).is_loopback for c in listening), (
        listening
    )
