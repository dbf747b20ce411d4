"""Integers beyond 64 bits are user data like any other: export, import, migrate and verify keep
them exact, and verify sees a difference of one in such a number.

The rows are written and read back as raw JSON text with the standard library (which keeps
integers exact), independently of btpipe's codec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pyarrow.parquet as pq
import pytest

from tests.conftest import Emulator
from tests.helpers import btpipe, post, unique


@pytest.fixture(scope="module")
def emulator(profiled_emulator: Emulator) -> Emulator:
    """Every test here runs against both profiles: the default one and the conservative one,
    where btpipe must take its proven fallbacks."""
    return profiled_emulator


BIG = 123456789012345678901234567890
NEGATIVE = -98765432109876543210
TEXT_LIKE = 18446744073709551616  # 2**64: one past the unsigned 64-bit range


def _events(big: int) -> bytes:
    return (
        '{"events": ['
        f'{{"id": "big-1", "span_id": "s1", "root_span_id": "s1", "created": "2026-01-02T03:04:05.000Z", "input": "q", "metadata": {{"big": {big}, "neg": {NEGATIVE}, "nested": [{TEXT_LIKE}]}},'
        ' "output": {"n": 1.0, "m": 1.5e300}, "metrics": {"tokens": 9007199254740993, "cost": 9223372036854775807, "start": 1.0}},'
        '{"id": "plain", "span_id": "s2", "root_span_id": "s2", "created": "2026-01-02T03:04:06.000Z", "input": "p", "metadata": {"small": 7}}'
        "]}"
    ).encode()


async def _raw(url: str, key: str, method: str, path: str, body: bytes) -> bytes:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, data=body, headers=headers) as resp,
    ):
        data = await resp.read()
        assert resp.status == 200, f"{path}: HTTP {resp.status}: {data[:300]!r}"
        return data


def insert_raw(emulator: Emulator, object_type: str, object_id: str, body: bytes) -> None:
    anyio.run(_raw, emulator.url, emulator.key, "POST", f"/v1/{object_type}/{object_id}/insert", body)


def read_exact(emulator: Emulator, object_type: str, object_id: str) -> dict[str, dict[str, Any]]:
    """Every row of an object through ``/btql`` as JSONL, decoded by the standard library."""
    query = {
        "select": [{"op": "star"}],
        "from": {
            "op": "function",
            "name": {"op": "ident", "name": [object_type]},
            "args": [{"op": "literal", "value": object_id}],
        },
        "limit": 1000,
    }
    body = json.dumps({"query": query, "fmt": "jsonl"}).encode()
    data = anyio.run(_raw, emulator.url, emulator.key, "POST", "/btql", body)
    rows = [json.loads(line) for line in data.splitlines() if line.strip()]
    return {row["id"]: row for row in rows}


def assert_exact(row: dict[str, Any]) -> None:
    assert row["metadata"] == {"big": BIG, "neg": NEGATIVE, "nested": [TEXT_LIKE]}
    assert type(row["metadata"]["big"]) is int
    assert row["output"] == {"n": 1.0, "m": 1.5e300}
    assert type(row["output"]["n"]) is float
    assert row["metrics"] == {"tokens": 2**53 + 1, "cost": 2**63 - 1, "start": 1.0}
    assert type(row["metrics"]["start"]) is float


def project_id(emulator: Emulator, name: str) -> str:
    data = anyio.run(_raw, emulator.url, emulator.key, "GET", f"/v1/project?project_name={name}", b"")
    found: str = json.loads(data)["objects"][0]["id"]
    return found


@pytest.fixture
def source(emulator: Emulator) -> dict[str, Any]:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("exact-src")})
    insert_raw(emulator, "project_logs", project["id"], _events(BIG))
    assert_exact(read_exact(emulator, "project_logs", project["id"])["big-1"])
    return project


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_export_import_verify_keep_integers_beyond_64_bits(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "out"
    result = btpipe(emulator, "export", "--project", source["name"], "--objects", "logs", "--out", str(out),
                    "--format", fmt, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    if fmt == "parquet":  # the metrics' integers have a typed home: nothing needs _extra
        (part,) = (p for p in out.rglob("*.parquet"))
        table = pq.read_table(part)
        by_id = dict(zip(table.column("id").to_pylist(), table.to_pylist(), strict=True))
        assert dict(by_id["big-1"]["metrics_int"]) == {"tokens": 2**53 + 1, "cost": 2**63 - 1}
        assert [row["_extra"] for row in by_id.values()] == [None, None]

    destination = unique("exact-dst")
    result = btpipe(emulator, "import", "--in", str(out), "--to-project", destination, "--create-project",
                    "--quiet", "--state-dir", str(tmp_path / "state"))  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_exact(emulator, "project_logs", project_id(emulator, destination))
    assert set(rows) == {"big-1", "plain"}
    assert_exact(rows["big-1"])

    result = btpipe(emulator, "verify", "--in", str(out), "--to-project", destination, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [(o["source_rows"], o["destination_rows"]) for o in report["objects"]] == [(2, 2)]


def test_migrate_and_verify_keep_integers_beyond_64_bits(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    destination = unique("exact-mig")
    result = btpipe(emulator, "migrate", "--from-project", source["name"], "--to-project", destination,
                    "--objects", "logs", "--create-project", "--quiet", "--state-dir", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_exact(emulator, "project_logs", project_id(emulator, destination))
    assert set(rows) == {"big-1", "plain"}
    assert_exact(rows["big-1"])

    result = btpipe(emulator, "verify", "--project", source["name"], "--to-project", destination,
                    "--objects", "logs")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "identical" in result.output


def test_verify_sees_a_difference_of_one_beyond_64_bits(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    """BIG and BIG + 1 are the same double: a verify that went through floats would call them equal."""
    other = post(emulator.url, emulator.key, "/v1/project", {"name": unique("exact-off")})
    insert_raw(emulator, "project_logs", other["id"], _events(BIG + 1))
    result = btpipe(emulator, "verify", "--project", source["name"], "--to-project", other["name"],
                    "--objects", "logs", "--json")  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["objects"][0]["differing_ids"] == ["big-1"]


def test_verify_of_a_file_outside_the_layout_compares_it_or_fails(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    """A check that compares nothing must never report success."""
    out = tmp_path / "out"
    result = btpipe(emulator, "export", "--project", source["name"], "--objects", "logs", "--out", str(out),
                    "--format", "jsonl", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    (part,) = (p for p in out.rglob("*.jsonl") if "_manifests" not in p.parts)
    loose = tmp_path / "file.jsonl"
    loose.write_bytes(part.read_bytes())

    result = btpipe(emulator, "verify", "--in", str(loose), "--to-project", source["name"], "--json")
    assert result.exit_code == 2, result.output
    assert "file.jsonl" in result.stderr and "--to-object" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2  # --json: the failure as JSON on stdout

    result = btpipe(emulator, "verify", "--in", str(loose), "--to-project", source["name"],
                    "--to-object", "logs", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [(o["source_rows"], o["destination_rows"]) for o in report["objects"]] == [(2, 2)]

    other = post(emulator.url, emulator.key, "/v1/project", {"name": unique("exact-empty")})
    result = btpipe(emulator, "verify", "--in", str(loose), "--to-project", other["name"],
                    "--to-object", "logs", "--json")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["objects"][0]["missing"] == 2
