"""Import, migrate, delete and verify against the emulator over loopback.

Exports are written here with the sinks (the export stage's own writers) from rows read
straight from the server, so these tests hold whatever state the export command is in.
Results are checked by reading the destination back with plain aiohttp (tests.helpers).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from click.testing import CliRunner

from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.cli.load import delete_command, import_command, migrate_command, verify_command
from pipeline.common.checkpoint import Ledger
from pipeline.common.manifest import Manifest, ObjectManifest, write_manifest
from pipeline.common.rows import DESTINATION_FIELDS
from pipeline.common.state import ObjectProgress
from pipeline.common.storage import open_storage
from pipeline.emulator.auth import DEFAULT_KEYS
from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer, ServerConfig
from pipeline.load.batcher import Batcher, Item
from pipeline.load.insert import ErrorLog, InsertOptions, InsertPool
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.parquet import ParquetSink
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, send, unique
from tests.reliability.support import cli_env


@pytest.fixture(scope="module")
def emulator(profiled_emulator: Emulator) -> Emulator:
    """Every test here runs against both profiles: the default one and the conservative one,
    where btpipe must take its proven fallbacks."""
    return profiled_emulator


def make_project(emu: Emulator, key: str | None = None) -> dict[str, Any]:
    project: dict[str, Any] = post(emu.url, key or emu.key, "/v1/project", {"name": unique("src")})
    return project


def seed(emu: Emulator, project: dict[str, Any], n: int = 120) -> tuple[dict[str, Any], dict[str, Any]]:
    logs = [{"id": f"log-{i}", "input": {"q": i, "text": "é" * (i % 5)}, "output": [i, None, 1.5],
             "metadata": {"user_id": f"u{i % 3}"}, "scores": {"s": (i % 10) / 10}, "span_id": f"s{i}",
             "root_span_id": f"s{i - i % 4}", "span_parents": [] if i % 4 == 0 else [f"s{i - i % 4}"]}
            for i in range(n)]  # fmt: skip
    insert(emu.url, emu.key, "project_logs", project["id"], logs)
    ds = post(emu.url, emu.key, "/v1/dataset", {"project_id": project["id"], "name": "golden",
                                                 "description": "the set", "metadata": {"v": 2}})  # fmt: skip
    insert(
        emu.url,
        emu.key,
        "dataset",
        ds["id"],
        [{"id": f"d{i}", "input": i, "expected": {"a": i}} for i in range(30)],
    )
    exp = post(
        emu.url,
        emu.key,
        "/v1/experiment",
        {"project_id": project["id"], "name": "base", "dataset_id": ds["id"]},
    )
    insert(
        emu.url,
        emu.key,
        "experiment",
        exp["id"],
        [{"id": f"e{i}", "input": i, "output": i * 2} for i in range(20)],
    )
    return ds, exp


def export(emu: Emulator, out: Path, objects: list[tuple[str, str, str]], fmt: str) -> None:
    """Write the export layout (data files + manifest) for ``(type, id, name)`` objects."""
    storage = open_storage(str(out))
    entries = []
    for object_type, object_id, name in objects:
        rows = sorted(
            all_rows(emu.url, emu.key, object_type, object_id).values(), key=lambda r: r["_xact_id"]
        )
        directory = f"object_type={object_type}/object_id={object_id}/run=R1"
        sink: Any = (
            ParquetSink(storage, directory, object_type, prefix="r00-part")  # type: ignore[arg-type]
            if fmt == "parquet"
            else JsonlSink(storage, directory, prefix="r00-part", compression="gzip")
        )
        with sink:
            sink.write_page(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
            files = sink.close()
        entries.append(
            ObjectManifest(object_type, object_id, name, rows_written=len(rows), files=tuple(files))
        )
    write_manifest(storage, Manifest("R1", "2024-01-01T00:00:00Z", emu.url, objects=tuple(entries)))


def visible(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in DESTINATION_FIELDS}


def run(
    command: Any, emu: Emulator, *args: str, key: str | None = None, env: dict[str, str] | None = None
) -> Any:
    return CliRunner().invoke(
        command,
        ["--api-url", emu.url, "--api-key", key or emu.key, "--quiet", *args],
        env=env,
        catch_exceptions=False,
    )


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_export_then_import_reproduces_every_row_and_verify_agrees(
    emulator: Emulator, tmp_path: Path, fmt: str
) -> None:
    src = make_project(emulator)
    ds, exp = seed(emulator, src)
    out = tmp_path / "backup"
    objects = [
        ("project_logs", src["id"], src["name"]),
        ("dataset", ds["id"], "golden"),
        ("experiment", exp["id"], "base"),
    ]
    export(emulator, out, objects, fmt)
    dest = unique("restored")
    state = tmp_path / "state"
    result = run(import_command, emulator, "--in", str(out), "--to-project", dest, "--create-project",
                 "--state-dir", str(state), "--batch-rows", "7", "--workers", "3", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["rows"] == 170 and summary["skipped"] == 0
    by_label = {o["source"]: o for o in summary["objects"]}
    for object_type, object_id, name in objects:
        label = "logs" if object_type == "project_logs" else f"{object_type}:{name}"
        original = all_rows(emulator.url, emulator.key, object_type, object_id)
        copied = all_rows(emulator.url, emulator.key, object_type, by_label[label]["destination_id"])
        assert {i: visible(r) for i, r in copied.items()} == {i: visible(r) for i, r in original.items()}
        for row_id, row in copied.items():
            assert row["origin"]["id"] == row_id and row["origin"]["object_id"] == object_id
            assert row["created"] == original[row_id]["created"]
    assert list(state.iterdir()) == []  # a finished job leaves no state behind

    ok = run(verify_command, emulator, "--in", str(out), "--to-project", dest)
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.count("identical") == 3
    post(emulator.url, emulator.key, f"/v1/dataset/{by_label['dataset:golden']['destination_id']}/insert",
         {"events": [{"id": "d3", "input": "changed"}, {"id": "planted", "input": 1}]})  # fmt: skip
    bad = run(verify_command, emulator, "--in", str(out), "--to-project", dest, "--json")
    assert bad.exit_code == 1
    diffs = {d["source"]: d for d in orjson.loads(bad.stdout)["objects"]}
    golden = diffs["dataset:golden"]
    assert (golden["differing_ids"], golden["extra_ids"], golden["missing"]) == (["d3"], ["planted"], 0)
    assert diffs["logs"]["ok"] and diffs["experiment:base"]["ok"]


def test_migrate_between_orgs_remaps_references_then_verify(emulator: Emulator, tmp_path: Path) -> None:
    src = make_project(emulator)
    ds, exp = seed(emulator, src, n=50)
    derived = post(emulator.url, emulator.key, "/v1/experiment",
                   {"project_id": src["id"], "name": "derived", "base_exp_id": exp["id"], "dataset_id": ds["id"]})  # fmt: skip
    insert(emulator.url, emulator.key, "experiment", derived["id"], [{"id": "x1", "output": 1}])
    dest = unique("other")
    env = {"OTHER_KEY": emulator.other_org_key}
    args = ["--from-project", src["name"], "--to-project", dest, "--create-project", "--to-api-url", emulator.url,
            "--to-api-key-env", "OTHER_KEY", "--state-dir", str(tmp_path), "--page-limit", "9", "--json"]  # fmt: skip
    result = run(migrate_command, emulator, *args, env=env)
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["rows"] == 50 + 30 + 20 + 1
    ids = {o["source"]: o["destination_id"] for o in summary["objects"]}
    other = emulator.other_org_key
    project = post(emulator.url, other, "/v1/project", {"name": dest})
    experiments = {e["name"]: e for e in _list(emulator, other, "experiment", project["id"])}
    assert experiments["derived"]["base_exp_id"] == ids["experiment:base"]
    assert experiments["derived"]["dataset_id"] == experiments["base"]["dataset_id"] == ids["dataset:golden"]
    datasets = {d["name"]: d for d in _list(emulator, other, "dataset", project["id"])}
    assert datasets["golden"]["description"] == "the set" and datasets["golden"]["metadata"] == {"v": 2}
    copied = all_rows(emulator.url, other, "project_logs", project["id"])
    original = all_rows(emulator.url, emulator.key, "project_logs", src["id"])
    assert {i: visible(r) for i, r in copied.items()} == {i: visible(r) for i, r in original.items()}
    check = run(verify_command, emulator, "--project", src["name"], "--to-project", dest, "--to-api-key-env",
                "OTHER_KEY", env=env)  # fmt: skip
    assert check.exit_code == 0, check.output


def _list(emu: Emulator, key: str, kind: str, project_id: str) -> list[dict[str, Any]]:
    async def get() -> Any:
        async with BraintrustClient(ClientSettings(api_url=emu.url, api_key=key)) as client:
            return (await client.get_json(f"/v1/{kind}", {"project_id": project_id}))["objects"]

    result: list[dict[str, Any]] = anyio.run(get)
    return result


def test_delete_dry_run_then_real(emulator: Emulator) -> None:
    src = make_project(emulator)
    seed(emulator, src, n=60)
    args = ["--project", src["name"], "--filter", "metadata.user_id = 'u1'", "--json"]
    dry = run(delete_command, emulator, *args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    plan = orjson.loads(dry.stdout)
    assert plan["matched"] == 20 and plan["deleted"] == 0
    assert set(plan["objects"][0]["sample_ids"]) <= {f"log-{i}" for i in range(1, 60, 3)}
    assert len(all_rows(emulator.url, emulator.key, "project_logs", src["id"])) == 60
    refused = run(delete_command, emulator, *args)
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    real = run(delete_command, emulator, *args, "--yes", "--batch-rows", "6")
    assert real.exit_code == 0, real.output
    assert orjson.loads(real.stdout)["deleted"] == 20
    left = all_rows(emulator.url, emulator.key, "project_logs", src["id"])
    assert set(left) == {f"log-{i}" for i in range(60) if i % 3 != 1}


def test_delete_traces_takes_every_span_of_the_traces_the_filter_matches(emulator: Emulator) -> None:
    """A filter on a field only root spans carry: without ``--traces`` the children stay; with
    it, every span of those traces goes, in batches that split traces, and nothing else."""
    src = make_project(emulator)
    spans = []
    for t in range(12):
        root = {
            "id": f"t{t}",
            "span_id": f"t{t}",
            "root_span_id": f"t{t}",
            "metadata": {"team": "red" if t % 3 == 0 else "blue"},
        }
        children = [{"id": f"t{t}-c{c}", "span_id": f"t{t}-c{c}", "root_span_id": f"t{t}", "span_parents": [f"t{t}"]}
                    for c in range(4)]  # fmt: skip
        spans += [root, *children]
    insert(emulator.url, emulator.key, "project_logs", src["id"], spans)
    red = {f"t{t}" for t in range(0, 12, 3)}
    args = [
        "--project",
        src["name"],
        "--filter",
        "metadata.team = 'red'",
        "--yes",
        "--json",
        "--batch-rows",
        "3",
    ]
    dry = run(delete_command, emulator, *args, "--traces", "--dry-run")
    assert orjson.loads(dry.stdout)["matched"] == len(red) * 5
    deleted = run(delete_command, emulator, *args, "--traces")
    assert deleted.exit_code == 0, deleted.output
    assert (orjson.loads(deleted.stdout)["deleted"], orjson.loads(deleted.stdout)["changed"]) == (
        len(red) * 5,
        0,
    )
    left = all_rows(emulator.url, emulator.key, "project_logs", src["id"])
    assert set(left) == {s["id"] for s in spans if s["root_span_id"] not in red}
    blue = {f"t{t}" for t in range(12)} - red
    post(emulator.url, emulator.key, f"/v1/project_logs/{src['id']}/insert",
         {"events": [{"id": "t1", "_is_merge": True, "metadata": {"team": "red"}}]})  # fmt: skip
    roots_only = run(delete_command, emulator, *args)  # spans: the matching root alone
    assert orjson.loads(roots_only.stdout)["deleted"] == 1
    assert set(all_rows(emulator.url, emulator.key, "project_logs", src["id"])) == {
        s["id"] for s in spans if s["root_span_id"] in blue and s["id"] != "t1"
    }


def test_delete_traces_takes_the_spans_written_into_a_trace_since_the_plan(emulator: Emulator) -> None:
    """A span written into a matching trace after the delete read its plan goes with the trace
    (it would be left without its root, and no filter on the root would find it again); a
    trace that matches no more by its turn is left whole, its spans counted as changed."""
    from pipeline.api.btql import parse_filter
    from pipeline.api.objects import logs_ref
    from pipeline.load import delete as deleting

    src = make_project(emulator)
    spans = [{"id": f"t{t}-{c}", "span_id": f"t{t}-{c}", "root_span_id": f"t{t}",
              **({"metadata": {"team": "red"}} if c == 0 else {"span_parents": [f"t{t}-0"]})}
             for t in range(3) for c in range(3)]  # fmt: skip
    insert(emulator.url, emulator.key, "project_logs", src["id"], spans)
    ref, matching = logs_ref(src), parse_filter("metadata.team = 'red'")
    assert matching is not None

    async def body() -> deleting.DeletePlan:
        settings = ClientSettings(api_url=emulator.url, api_key=emulator.key)
        async with BraintrustClient(settings) as client:
            planned = await deleting.plan(client, ref, matching, traces=True)
            await client.post_json(f"/v1/project_logs/{src['id']}/insert", {"events": [
                {"id": "late", "span_id": "late", "root_span_id": "t1", "span_parents": ["t1-0"]},
                {"id": "t2-0", "_is_merge": True, "metadata": {"team": "blue"}}]})  # fmt: skip
            await deleting.delete(
                client, [(ref, planned)], matching, InsertOptions(), batch_rows=2, traces=True
            )
            return planned

    planned = anyio.run(body)
    assert set(all_rows(emulator.url, emulator.key, "project_logs", src["id"])) == {"t2-0", "t2-1", "t2-2"}
    # a server that cannot count at a version is read at its current state: t2 is not listed then
    left_whole = 3 if planned.version is not None else 0
    assert (planned.deleted, planned.changed, planned.matched) == (7, left_whole, 7 + left_whole)


def test_a_delete_of_traces_stopped_part_way_leaves_each_trace_findable_again(emulator: Emulator) -> None:
    """A trace bigger than a batch: its spans the filter matches (its root here) go last, once
    every other delete of it was applied, so a delete stopped part way leaves the trace with
    the span that finds it, and running it again deletes the rest."""
    from pipeline.api.btql import parse_filter
    from pipeline.api.objects import logs_ref
    from pipeline.common.progress import Progress, Task
    from pipeline.load import delete as deleting

    src = make_project(emulator)
    spans = [{"id": "a0", "span_id": "a0", "root_span_id": "a0", "metadata": {"org": "acme"}}]
    spans += [
        {"id": f"a{c}", "span_id": f"a{c}", "root_span_id": "a0", "span_parents": ["a0"]}
        for c in range(1, 30)
    ]
    insert(emulator.url, emulator.key, "project_logs", src["id"], spans)
    ref, matching = logs_ref(src), parse_filter("metadata.org = 'acme'")
    assert matching is not None
    scopes: list[anyio.CancelScope] = []

    class Stopping(Progress):
        """Stops the delete once 10 deletes were applied."""

        def add(self, label: str, total: int | None, *, done: int = 0) -> Task:
            task = super().add(label, total, done=done)
            advance = task.advance

            def counted(rows: int, nbytes: int = 0) -> None:
                advance(rows, nbytes)
                if task.statistics().done >= 10:
                    scopes[-1].cancel()

            task.advance = counted  # type: ignore[method-assign]
            return task

    async def body(progress: Progress) -> None:
        settings = ClientSettings(api_url=emulator.url, api_key=emulator.key)
        async with BraintrustClient(settings) as client:
            planned = await deleting.plan(client, ref, matching, traces=True)
            scopes.append(anyio.CancelScope())
            with scopes[-1]:
                await deleting.delete(client, [(ref, planned)], matching, InsertOptions(workers=1), batch_rows=2,
                                      traces=True, progress=progress)  # fmt: skip

    anyio.run(body, Stopping())
    left = all_rows(emulator.url, emulator.key, "project_logs", src["id"])
    assert "a0" in left and 0 < len(left) < 30  # stopped part way, the root kept
    anyio.run(body, Progress())
    assert all_rows(emulator.url, emulator.key, "project_logs", src["id"]) == {}


def test_an_interrupted_delete_says_it_keeps_no_state(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during a delete: exit 5, and no claim of a saved state to resume (delete keeps
    none; running it again finds what still matches)."""
    from pipeline.load import delete as deleting

    async def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(deleting, "delete", interrupted)
    src = make_project(emulator)
    seed(emulator, src, n=12)
    result = run(
        delete_command, emulator, "--project", src["name"], "--filter", "metadata.user_id = 'u1'", "--yes"
    )
    assert result.exit_code == 5
    assert "keeps no state" in result.stderr and "state saved" not in result.stderr


def test_413_splits_batches_and_an_event_the_server_refuses_goes_through_overflow(
    emulator: Emulator, tmp_path: Path
) -> None:
    project = make_project(emulator)
    big = "x" * 100_000
    items = [Item(orjson.dumps({"id": f"b{i}", "input": big}), f"b{i}", f"here:{i}") for i in range(25)]
    huge = Item(orjson.dumps({"id": "huge", "input": "y" * 1_500_000}), "huge", "there:7")

    async def load(on_error: str, with_huge: bool) -> tuple[InsertPool, Ledger]:
        ledger = Ledger(ObjectProgress(destination=project["id"]))
        async with BraintrustClient(ClientSettings(api_url=emulator.url, api_key=emulator.key)) as client:
            log = ErrorLog(str(tmp_path / "errors.jsonl"))
            pool = InsertPool(client, InsertOptions(workers=2, on_error=on_error), max_request_bytes=10**8,  # type: ignore[arg-type]
                              error_log=log)  # fmt: skip
            batcher = Batcher(
                f"/v1/project_logs/{project['id']}", max_rows=1000, max_bytes=10**8, ledger=ledger
            )

            async def produce() -> None:
                for item in [*items, *([huge] if with_huge else [])]:
                    for batch in batcher.add(item):
                        await pool.submit(batch)
                for batch in batcher.flush():
                    await pool.submit(batch)

            await pool.run(produce)
            log.close()
        return pool, ledger

    pool, ledger = anyio.run(load, "skip", False)
    assert pool.statistics().splits >= 3 and ledger.rows == 25
    assert set(all_rows(emulator.url, emulator.key, "project_logs", project["id"])) == {
        f"b{i}" for i in range(25)
    }
    pool, ledger = anyio.run(load, "fail", True)  # 413 alone: sent through the overflow route
    assert pool.statistics().overflowed == 1 and ledger.skipped == 0 and ledger.rows == 26
    assert (
        all_rows(emulator.url, emulator.key, "project_logs", project["id"])["huge"]["input"]
        == "y" * 1_500_000
    )


def test_import_oversize_event_from_a_file_and_error_paths(emulator: Emulator, tmp_path: Path) -> None:
    src = make_project(emulator)
    insert(emulator.url, emulator.key, "project_logs", src["id"], [{"id": "ok", "input": 1}])
    out = tmp_path / "backup"
    export(emulator, out, [("project_logs", src["id"], src["name"])], "jsonl")
    data_file = next(out.rglob("*.jsonl.gz"))
    import gzip

    lines = gzip.decompress(data_file.read_bytes()).splitlines()
    huge = orjson.dumps({"id": "huge", "project_id": src["id"], "input": "z" * 2_000_000})
    data_file.write_bytes(gzip.compress(b"\n".join([*lines, huge]) + b"\n"))
    dest = unique("dst")
    loose = str(out / "object_type=project_logs")  # the file no longer matches the manifest: read it alone
    base = ["--in", loose, "--to-project", dest, "--create-project", "--state-dir", str(tmp_path / "st")]
    restored = run(import_command, emulator, *base, "--json")  # over the limit: the overflow route
    assert restored.exit_code == 0, restored.output
    assert (orjson.loads(restored.stdout)["overflowed"], orjson.loads(restored.stdout)["rows"]) == (1, 2)

    unknown = run(import_command, emulator, "--in", str(out), "--to-project", unique("nope"))
    assert unknown.exit_code == 4 and "--create-project" in unknown.stderr
    wrong_key = run(import_command, emulator, "--in", str(out), "--to-project", dest, key="bt-wrong")
    assert wrong_key.exit_code == 3 and "bt-wrong" not in wrong_key.stderr
    bad = tmp_path / "bad" / "object_type=dataset" / "object_id=abc" / "run=R"
    bad.mkdir(parents=True)
    (bad / "r00-part-00000.jsonl").write_bytes(b'{"id": "a"}\n{"id": \n')
    malformed = run(import_command, emulator, "--in", str(tmp_path / "bad"), "--to-project", dest,
                    "--state-dir", str(tmp_path / "st2"))  # fmt: skip
    assert malformed.exit_code == 2 and "r00-part-00000.jsonl:2: malformed JSON" in malformed.stderr
    # read through before anything is sent, the file leaves no state either
    assert list((tmp_path / "st2").glob("import-*.json")) == []
    (bad / "r00-part-00000.jsonl").unlink()
    (bad / "r00-part-00000.parquet").write_bytes(b"PAR1 not really")
    notours = run(import_command, emulator, "--in", str(tmp_path / "bad"), "--to-project", dest, "--restart",
                  "--into-existing", "--state-dir", str(tmp_path / "st2"))  # fmt: skip
    assert notours.exit_code == 2 and "not a btpipe Parquet file" in notours.stderr


def test_verify_counts_an_object_the_destination_lacks_even_when_empty(emulator: Emulator) -> None:
    """An empty dataset or experiment the destination does not hold at all is a difference,
    not "0 vs 0 rows: identical"."""
    src = post(emulator.url, emulator.key, "/v1/project", {"name": unique("verify-src")})
    post(emulator.url, emulator.key, "/v1/dataset", {"project_id": src["id"], "name": "golden-set"})
    post(emulator.url, emulator.key, "/v1/experiment", {"project_id": src["id"], "name": "baseline"})
    dst = post(emulator.url, emulator.key, "/v1/project", {"name": unique("verify-dst")})
    result = run(verify_command, emulator, "--project", src["name"], "--to-project", dst["name"],
                 "--objects", "logs,datasets,experiments", "--json")  # fmt: skip
    assert result.exit_code == 1, result.output
    diffs = {d["source"]: d for d in orjson.loads(result.stdout)["objects"]}
    assert (
        diffs["logs"]["ok"]
        and not diffs["dataset:golden-set"]["ok"]
        and not diffs["experiment:baseline"]["ok"]
    )
    assert diffs["dataset:golden-set"]["absent"] is True
    text = run(
        verify_command,
        emulator,
        "--project",
        src["name"],
        "--to-project",
        dst["name"],
        "--objects",
        "datasets",
    )
    assert text.exit_code == 1 and "not at the destination" in text.output


def test_verify_compares_created_as_a_time_not_as_its_spelling(emulator: Emulator, tmp_path: Path) -> None:
    """Hand-written files spell ``created`` as they like; the server keeps the instant in its
    own spelling. The same instant is no difference, another instant is."""
    spellings = ["2026-01-01T00:00:00+00:00", "2026-01-01T05:30:00.000+05:30", "2026-01-01T00:00:00",
                 "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.123456Z"]  # fmt: skip
    rows = [{"id": f"c{i}", "span_id": f"c{i}", "root_span_id": f"c{i}", "input": i, "expected": "x",
             "created": c} for i, c in enumerate(spellings)]  # fmt: skip
    files = tmp_path / "rows.jsonl"
    files.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    dest = unique("created-dst")
    target = ("--to-project", dest, "--to-object", "dataset:times")
    imported = run(import_command, emulator, "--in", str(files), *target, "--create-project",
                   "--state-dir", str(tmp_path / "st"))  # fmt: skip
    assert imported.exit_code == 0, imported.output
    same = run(verify_command, emulator, "--in", str(files), *target, "--json")
    assert same.exit_code == 0, same.output
    rows[4]["created"] = "2026-01-01T00:00:00.123Z"  # another instant: a millisecond rounded off
    files.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    moved = run(verify_command, emulator, "--in", str(files), *target, "--json")
    assert moved.exit_code == 1, moved.output
    [diff] = orjson.loads(moved.stdout)["objects"]
    assert diff["differing"] == 1
    assert (diff["source"], diff["destination"]) == (str(files), f"{dest}/dataset:times")  # named as told


def test_verify_of_a_file_whose_rows_lack_what_the_server_fills_in(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Hand-written rows often have no ``created``, ``span_id`` or ``root_span_id``; the server
    gives each inserted row its own. Verify compares what the file says, not what it left out."""
    rows = [{"id": f"h{i}", "input": i, "expected": {"a": i}} for i in range(4)]
    rows[1]["created"] = "2026-01-01T00:00:00Z"
    rows[2]["span_id"] = "mine"
    files = tmp_path / "rows.jsonl"
    files.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    target = ("--to-project", unique("filled-dst"), "--to-object", "dataset:filled")
    imported = run(import_command, emulator, "--in", str(files), *target, "--create-project",
                   "--state-dir", str(tmp_path / "st"))  # fmt: skip
    assert imported.exit_code == 0, imported.output
    same = run(verify_command, emulator, "--in", str(files), *target, "--json")
    assert same.exit_code == 0, same.output
    rows[3]["expected"] = {"a": "changed"}
    rows[2]["span_id"] = "not mine"
    files.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    moved = run(verify_command, emulator, "--in", str(files), *target, "--json")
    assert moved.exit_code == 1, moved.output
    assert sorted(orjson.loads(moved.stdout)["objects"][0]["differing_ids"]) == ["h2", "h3"]


def test_a_delete_stopped_part_way_says_how_many_rows_it_deleted(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a delete: besides exit 5 and its line, the rows deleted so far
    (rows are gone, and the user must know how many), with ``--json`` as the usual summary
    marked ``stopped``. The count is of every batch the server confirmed, in whatever order
    (jittery latency with four workers confirms them out of order); the batches in flight as
    it stopped (at most ``--workers``) may be gone too."""
    with RunningServer(ServerConfig(port=0, db=str(tmp_path / "emulator.db"))) as server:
        key = DEFAULT_KEYS[0].key
        project = post(server.url, key, "/v1/project", {"name": unique("stopped-delete")})
        insert(server.url, key, "project_logs", project["id"],
               [{"id": f"r{i:03d}", "input": i, "metadata": {"doomed": True}} for i in range(300)])  # fmt: skip
        server.faults.replace(FaultConfig.parse("rate=0,latency_ms=5,jitter_ms=400,exempt=/btql"))
        args = ("delete", "--project", project["name"], "--filter", "metadata.doomed = true", "--yes", "--json",
                "--batch-rows", "5", "--workers", "4")  # fmt: skip
        running = subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=cli_env(server.url, key),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while len(all_rows(server.url, key, "project_logs", project["id"])) > 200:
            assert time.monotonic() < deadline and running.poll() is None, "the delete did not get going"
            time.sleep(0.05)
        running.send_signal(signal.SIGINT)
        out, err = running.communicate(timeout=60)
        server.faults.replace(FaultConfig.parse("rate=0"))
        gone = 300 - len(all_rows(server.url, key, "project_logs", project["id"]))
    assert running.returncode == 5, err
    summary = orjson.loads(out)  # one document: the summary, with how it ended
    assert (summary["stopped"], summary["exit_code"]) == (True, 5) and "interrupted" in summary["error"]
    assert 80 <= summary["deleted"] <= gone <= summary["deleted"] + 4 * 5
    assert "keeps no state" in err


def test_a_rows_origin_in_a_copied_object_names_the_copy(emulator: Emulator, tmp_path: Path) -> None:
    """An eval row's ``origin`` names the dataset record it came from; when the load copies that
    dataset too, the copy's row names the copied dataset (migrate and import). An origin in an
    object the load does not copy stays as it is."""
    src = make_project(emulator)
    dataset = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": src["id"], "name": "golden"})
    insert(emulator.url, emulator.key, "dataset", dataset["id"], [{"id": "rec1", "input": 1, "expected": 2}])
    exp = post(emulator.url, emulator.key, "/v1/experiment", {"project_id": src["id"], "name": "e", "dataset_id": dataset["id"]})  # fmt: skip
    elsewhere = "00000000-0000-4000-8000-0000000000ee"
    insert(emulator.url, emulator.key, "experiment", exp["id"], [
        {"id": "r1", "input": 1, "origin": {"object_type": "dataset", "object_id": dataset["id"], "id": "rec1"}},
        {"id": "r2", "input": 2, "origin": {"object_type": "dataset", "object_id": elsewhere, "id": "x"}},
    ])  # fmt: skip
    other = emulator.other_org_key
    out = tmp_path / "out"
    exported = btpipe(emulator, "export", "--project", src["name"], "--objects", "datasets,experiments",
                      "--out", str(out), "--quiet")  # fmt: skip
    assert exported.exit_code == 0, exported.output
    migrated = run(migrate_command, emulator, "--from-project", src["name"], "--objects", "datasets,experiments",
                   "--to-project", unique("migrated"), "--create-project", "--to-api-url", emulator.url,
                   "--to-api-key-env", "OTHER_KEY", "--state-dir", str(tmp_path / "m"), "--json",
                   env={"OTHER_KEY": other})  # fmt: skip
    imported = run(import_command, emulator, "--in", str(out), "--to-project", unique("imported"),
                   "--create-project", "--state-dir", str(tmp_path / "i"), "--json", key=other)  # fmt: skip
    for how, result in (("migrate", migrated), ("import", imported)):
        assert result.exit_code == 0, result.output
        ids = {o["source"]: o["destination_id"] for o in orjson.loads(result.stdout)["objects"]}
        rows = all_rows(emulator.url, other, "experiment", ids["experiment:e"])
        assert rows["r1"]["origin"] == {
            "object_type": "dataset",
            "object_id": ids["dataset:golden"],
            "id": "rec1",
        }, how
        assert rows["r2"]["origin"]["object_id"] == elsewhere, how


def test_a_load_of_experiments_alone_links_the_datasets_an_earlier_load_copied(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Datasets copied by one load, experiments by the next: the experiments' ``dataset_id``
    and their rows' ``origin`` name the destination's dataset of the same name (migrate and
    import), not the source's; a dataset the destination lacks leaves the link out and the
    origin as it was."""
    src = make_project(emulator)
    golden = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": src["id"], "name": "golden"})
    other = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": src["id"], "name": "other"})
    insert(emulator.url, emulator.key, "dataset", golden["id"], [{"id": "rec1", "input": 1, "expected": 2}])
    exp = post(emulator.url, emulator.key, "/v1/experiment", {"project_id": src["id"], "name": "e", "dataset_id": golden["id"]})  # fmt: skip
    lone = post(emulator.url, emulator.key, "/v1/experiment", {"project_id": src["id"], "name": "lone", "dataset_id": other["id"]})  # fmt: skip
    insert(emulator.url, emulator.key, "experiment", exp["id"],
           [{"id": "r1", "input": 1, "origin": {"object_type": "dataset", "object_id": golden["id"], "id": "rec1"}}])  # fmt: skip
    insert(emulator.url, emulator.key, "experiment", lone["id"],
           [{"id": "r2", "input": 2, "origin": {"object_type": "dataset", "object_id": other["id"], "id": "x"}}])  # fmt: skip
    out, key = tmp_path / "out", emulator.other_org_key
    exported = btpipe(emulator, "export", "--project", src["name"], "--objects", "datasets,experiments",
                      "--out", str(out), "--quiet")  # fmt: skip
    assert exported.exit_code == 0, exported.output
    migrated, imported = unique("migrated"), unique("imported")
    env = {"OTHER_KEY": key}
    first = run(migrate_command, emulator, "--from-project", src["name"], "--objects", "dataset:golden",
                "--to-project", migrated, "--create-project", "--to-api-key-env", "OTHER_KEY",
                "--state-dir", str(tmp_path / "m"), env=env)  # fmt: skip
    assert first.exit_code == 0, first.output
    logs_only = run(migrate_command, emulator, "--from-project", src["name"], "--objects", "logs",
                    "--to-project", migrated, "--to-api-key-env", "OTHER_KEY", "--state-dir", str(tmp_path / "m"),
                    env=env)  # fmt: skip
    assert logs_only.exit_code == 0 and "references to" not in logs_only.stderr  # nothing copied names them
    then = run(migrate_command, emulator, "--from-project", src["name"], "--objects", "experiments",
               "--to-project", migrated, "--to-api-key-env", "OTHER_KEY", "--state-dir", str(tmp_path / "m"),
               "--json", env=env)  # fmt: skip
    first = run(import_command, emulator, "--in", str(out), "--objects", "dataset:golden", "--to-project",
                imported, "--create-project", "--state-dir", str(tmp_path / "i"), key=key)  # fmt: skip
    assert first.exit_code == 0, first.output
    later = run(import_command, emulator, "--in", str(out), "--objects", "experiments", "--to-project",
                imported, "--state-dir", str(tmp_path / "i"), "--json", key=key)  # fmt: skip
    for how, project, result in (("migrate", migrated, then), ("import", imported, later)):
        assert result.exit_code == 0, (how, result.output)
        ids = {o["source"]: o["destination_id"] for o in orjson.loads(result.stdout)["objects"]}
        assert set(ids) == {"experiment:e", "experiment:lone"}, how
        assert any("references to dataset:golden, which this load does not copy" in w
                   for w in orjson.loads(result.stdout)["warnings"]), how  # fmt: skip
        (project_row,) = send("GET", emulator.url, key, "/v1/project", params={"project_name": project})[
            "objects"
        ]
        (dataset,) = send("GET", emulator.url, key, "/v1/dataset", params={"project_id": project_row["id"]})[
            "objects"
        ]
        experiments = {e["name"]: e for e in send("GET", emulator.url, key, "/v1/experiment", params={"project_id": project_row["id"]})["objects"]}  # fmt: skip
        assert experiments["e"].get("dataset_id") == dataset["id"], how
        assert experiments["lone"].get("dataset_id") is None, how
        rows = all_rows(emulator.url, key, "experiment", ids["experiment:e"])
        assert rows["r1"]["origin"] == {"object_type": "dataset", "object_id": dataset["id"], "id": "rec1"}, (
            how
        )
        rows = all_rows(emulator.url, key, "experiment", ids["experiment:lone"])
        assert rows["r2"]["origin"]["object_id"] == other["id"], how
