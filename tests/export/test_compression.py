"""``--compression`` means what it says for both formats: ``none`` writes uncompressed files,
no flag gives the format's default (zstd for Parquet, plain text for JSONL)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.helpers import btpipe, insert, post, unique


@pytest.fixture(scope="module")
def project(emulator: Any) -> dict[str, Any]:
    found = post(emulator.url, emulator.key, "/v1/project", {"name": unique("compression")})
    insert(
        emulator.url,
        emulator.key,
        "project_logs",
        found["id"],
        [{"id": f"r{i}", "input": i} for i in range(5)],
    )
    return found


def _codecs(root: Path) -> set[str]:
    (part,) = root.rglob("*.parquet")
    meta = pq.ParquetFile(part).metadata
    return {
        meta.row_group(g).column(c).compression
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    }


@pytest.mark.parametrize(
    ("flag", "expected"), [(None, {"ZSTD"}), ("none", {"UNCOMPRESSED"}), ("gzip", {"GZIP"})]
)
def test_parquet_compression(
    emulator: Any, project: dict[str, Any], tmp_path: Path, flag: str | None, expected: set[str]
) -> None:
    args = ["export", "--project", project["name"], "--objects", "logs", "--out", str(tmp_path), "--quiet"]
    result = btpipe(emulator, *args, *(["--compression", flag] if flag else []))
    assert result.exit_code == 0, result.output
    assert _codecs(tmp_path) == expected


@pytest.mark.parametrize(("flag", "suffix"), [(None, ".jsonl"), ("none", ".jsonl"), ("gzip", ".jsonl.gz")])
def test_jsonl_compression(
    emulator: Any, project: dict[str, Any], tmp_path: Path, flag: str | None, suffix: str
) -> None:
    args = [
        "export",
        "--project",
        project["name"],
        "--objects",
        "logs",
        "--out",
        str(tmp_path),
        "--quiet",
        "--format",
        "jsonl",
    ]
    result = btpipe(emulator, *args, *(["--compression", flag] if flag else []))
    assert result.exit_code == 0, result.output
    (part,) = (p for p in tmp_path.rglob("*.jsonl*") if "_manifests" not in p.parts)
    assert part.name.endswith(suffix)
    data = gzip.decompress(part.read_bytes()) if suffix.endswith(".gz") else part.read_bytes()
    assert len(data.splitlines()) == 5
