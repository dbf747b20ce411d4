"""The emulator as a program: persistence across a restart, keys from flags, sample data."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from pipeline.cli.emulator import emulator as emulator_command
from pipeline.cli.emulator import gather_keys
from pipeline.emulator.auth import DEFAULT_KEYS, KeySpec, parse_key_spec, register_keys
from pipeline.emulator.sample import generate_traces, load_sample
from pipeline.emulator.server import EmulatorStartError
from pipeline.emulator.store import Store
from pipeline.querylang.ast import from_object
from tests.conftest import emulator_process

KEY = {"Authorization": "Bearer bt-local-key"}


async def test_rows_and_objects_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    async with aiohttp.ClientSession(headers=KEY) as session:
        with emulator_process(db) as url:
            async with session.post(f"{url}/v1/project", json={"name": "kept"}) as resp:
                project = await resp.json()
            async with session.post(f"{url}/v1/project_logs/{project['id']}/insert", json={"events": [{"id": "a", "input": 1}]}) as resp:  # fmt: skip
                assert resp.status == 200
        with emulator_process(db) as url:
            async with session.post(f"{url}/v1/project", json={"name": "kept"}) as resp:
                assert (await resp.json())["id"] == project["id"]
            async with session.post(f"{url}/btql", json={"query": {"from": from_object("project_logs", project["id"])}}) as resp:  # fmt: skip
                (row,) = (await resp.json())["data"]
            assert row["id"] == "a" and row["input"] == 1
            async with session.post(f"{url}/v1/project_logs/{project['id']}/insert", json={"events": [{"id": "b"}]}) as resp:  # fmt: skip
                assert resp.status == 200
            async with session.post(f"{url}/btql", json={"query": {"from": from_object("project_logs", project["id"])}}) as resp:  # fmt: skip
                rows = (await resp.json())["data"]
            assert int(rows[1]["_xact_id"]) > int(rows[0]["_xact_id"])


async def test_custom_keys_replace_defaults(tmp_path: Path) -> None:
    args = ("--key", "k1=me@example.com@acme:member", "--max-request-bytes", "1234")
    with emulator_process(tmp_path / "k.db", *args) as url:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/version") as resp:
                assert (await resp.json())["logs3_payload_max_bytes"] == 1234
            async with session.get(f"{url}/v1/project", headers={"Authorization": "Bearer k1"}) as resp:
                assert resp.status == 200
            async with session.get(f"{url}/v1/project", headers=KEY) as resp:
                assert resp.status == 401


def test_a_failed_start_is_one_line_naming_the_problem(tmp_path: Path) -> None:
    with pytest.raises(EmulatorStartError) as failed, emulator_process(tmp_path / "x.db", "--bogus"):
        pass
    message = str(failed.value)
    assert message.startswith("the emulator did not start: btpipe: error: No such option '--bogus'.")
    assert "\n" not in message


def test_key_spec_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_key_spec("k=a@b.c@org:member") == KeySpec("k", "a@b.c", "org", "member")
    with pytest.raises(ValueError, match="role"):
        parse_key_spec("k=a@b.c@org:boss")
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text('[[keys]]\nkey = "t"\nemail = "t@x.io"\norg = "o"\nadmin = true\n')
    monkeypatch.setenv("BTPIPE_EMULATOR_KEYS", "e=e@x.io@o:owner")
    assert gather_keys(("f=f@x.io@o:owner",), keys_file) == [
        KeySpec("f", "f@x.io", "o"), KeySpec("e", "e@x.io", "o"), KeySpec("t", "t@x.io", "o", admin=True)
    ]  # fmt: skip


def test_command_has_help() -> None:
    result = CliRunner().invoke(emulator_command, ["--help"])
    assert result.exit_code == 0 and "--max-request-bytes" in result.output


def test_sample_data_is_deterministic_and_shaped() -> None:
    first, again = list(generate_traces(7, 40)), list(generate_traces(7, 40))
    assert first == again and first != list(generate_traces(8, 40))
    roots = [e for e in first if e["span_attributes"]["type"] == "task"]
    assert len(roots) == 40
    assert {e["span_attributes"]["type"] for e in first} >= {"task", "llm"}
    assert all(e["root_span_id"] in {r["span_id"] for r in roots} for e in first)
    assert all(r["metadata"]["user_id"].startswith("u") for r in roots)


def test_load_sample_fills_objects_once() -> None:
    db = Store(":memory:")
    try:
        register_keys(db, DEFAULT_KEYS)
        ids = load_sample(db, "local", "owner@local.test", 30, seed=1)
        load_sample(db, "local", "owner@local.test", 30, seed=1)
        counts = dict(
            db.read_sync(
                lambda c: c.execute(
                    "SELECT object_type, count(*) FROM rows WHERE object_id IN (?, ?, ?) GROUP BY 1",
                    (ids["project_id"], ids["dataset_id"], ids["experiment_id"]),
                ).fetchall()
            )
        )
        assert counts["project_logs"] == len(list(generate_traces(1, 30)))
        assert counts["dataset"] == counts["experiment"] == 3
        others = db.read_sync(lambda c: c.execute("SELECT count(*) FROM rows WHERE object_id NOT IN (?, ?, ?)", (ids["project_id"], ids["dataset_id"], ids["experiment_id"])).fetchone()[0])  # fmt: skip
        assert others == 3  # sample-attachments, loaded once
        assert set(ids) == {"org_id", "project_id", "dataset_id", "experiment_id"}
    finally:
        db.close()
