"""Parquet reader and file discovery: positions, refusal of foreign files, manifests."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.common.errors import UsageError
from pipeline.common.manifest import Manifest, ObjectManifest, write_manifest
from pipeline.common.rows import DESTINATION_FIELDS
from pipeline.common.storage import Storage, open_storage
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.parquet import ParquetSink
from pipeline.sources import discover_files, iter_rows
from tests.helpers import all_rows, btpipe, unique


def test_batches_and_row_positions(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    with ParquetSink(storage, "d", "experiment", row_group_rows=4) as sink:
        sink.write_page(b"".join(b'{"id":"r%d","scores":{"s":0.5}}\n' % i for i in range(10)))
        (info,) = sink.close()
    batches = list(iter_rows(storage, info.path, batch_rows=3))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    flat = [r for b in batches for r in b]
    assert [(r.row["id"], r.file, r.position) for r in flat] == [
        (f"r{i}", "d/part-00000.parquet", i) for i in range(10)
    ]
    assert flat[0].row == {"id": "r0", "scores": {"s": 0.5}}


def test_foreign_parquet_file_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "other.parquet")
    with pytest.raises(UsageError) as info:
        next(iter_rows(open_storage(str(tmp_path)), "other.parquet"))
    assert str(info.value) == (
        f"{tmp_path}/other.parquet: not a btpipe Parquet file (no btpipe.schema_version metadata)"
    )


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    table = pa.table({"id": ["a"]}).replace_schema_metadata(
        {"btpipe.schema_version": "99", "btpipe.object_type": "dataset"}
    )
    pq.write_table(table, tmp_path / "new.parquet")
    with pytest.raises(UsageError, match=r"new\.parquet: not a btpipe Parquet file \(schema version b'99'\)"):
        next(iter_rows(open_storage(str(tmp_path)), "new.parquet"))


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UsageError, match=r"^.*/bad\.parquet: not a btpipe Parquet file \("):
        next(iter_rows(open_storage(str(tmp_path)), "bad.parquet"))


def _export(tmp_path: Path) -> tuple[Storage, list[str]]:
    storage = open_storage(str(tmp_path))
    with JsonlSink(storage, "dataset/d1") as sink:
        sink.write_page(b'{"id":"a"}\n')
        files = sink.flush()
        sink.write_page(b'{"id":"b"}\n')
        files += sink.close()
    with ParquetSink(storage, "dataset/d2", "dataset") as psink:
        psink.write_page(b'{"id":"c"}\n')
        files += psink.close()
    storage.write_bytes("dataset/d1/notes.txt", b"ignored")
    (tmp_path / "dataset" / "d1" / ".part-00009.jsonl.x.tmp").write_bytes(b"partial")
    return storage, [f.path for f in files]


def test_discover_directory_file_and_manifest(tmp_path: Path) -> None:
    storage, paths = _export(tmp_path)
    assert paths == [
        "dataset/d1/part-00000.jsonl",
        "dataset/d1/part-00001.jsonl",
        "dataset/d2/part-00000.parquet",
    ]
    assert discover_files(storage, "dataset") == paths
    assert discover_files(storage, "dataset/d1/") == paths[:2]
    assert discover_files(storage, "") == paths
    assert discover_files(storage, paths[2]) == [paths[2]]
    manifest = Manifest(
        run_id="r1",
        started_at="2024-05-01T00:00:00Z",
        api_url="http://127.0.0.1:8000",
        objects=(ObjectManifest("dataset", "d2", files=()), ObjectManifest("dataset", "d1", files=())),
    )
    write_manifest(storage, manifest)
    assert discover_files(storage, "") == paths  # manifests are not data files


def test_discover_from_manifest_keeps_its_order(tmp_path: Path) -> None:
    from pipeline.common.manifest import FileInfo

    storage, paths = _export(tmp_path)
    files = [FileInfo(p, 1, 0, "") for p in reversed(paths)]
    manifest = Manifest(
        run_id="r2",
        started_at="2024-05-01T00:00:00Z",
        api_url="http://127.0.0.1:8000",
        objects=(ObjectManifest("dataset", "d", rows_written=3, files=tuple(files)),),
    )
    relpath = write_manifest(storage, manifest)
    assert discover_files(storage, relpath) == list(reversed(paths))


def test_discover_nothing_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^.*/empty: no JSONL or Parquet files found$"):
        discover_files(open_storage(str(tmp_path)), "empty")


# -- files of the previous schema (version 1) ----------------------------------------------------
#: An export root written by the previous layout (``_xact_id`` as text, JSON columns as plain
#: strings with ``null`` text, JSON nulls of typed fields and exact map numbers in ``_extra``),
#: and the rows its source held, as the server returned them.
LEGACY_ROOT = Path(__file__).parent / "data" / "parquet-v1"
LEGACY_ROWS: dict[str, list[dict[str, Any]]] = json.loads(
    (LEGACY_ROOT.parent / "parquet-v1-rows.json").read_text()
)


def test_files_of_the_previous_schema_decode_to_their_rows_exactly() -> None:
    storage = open_storage(str(LEGACY_ROOT))
    for path in discover_files(storage, ""):
        object_type = path.split("/")[0].removeprefix("object_type=")
        assert pq.ParquetFile(LEGACY_ROOT / path).schema_arrow.metadata[b"btpipe.schema_version"] == b"1"
        rows = [source.row for batch in iter_rows(storage, path) for source in batch]
        assert canonical(sorted(rows, key=lambda r: r["id"])) == canonical(LEGACY_ROWS[object_type])


def test_an_export_of_the_previous_schema_imports(emulator: Any, tmp_path: Path) -> None:
    target = unique("legacy-import")
    imported = btpipe(emulator, "import", "--in", str(LEGACY_ROOT), "--to-project", target, "--create-project",
                      "--state-dir", str(tmp_path / "state"))  # fmt: skip
    assert imported.exit_code == 0, imported.output
    project = get(emulator, f"/v1/project?project_name={target}")["objects"][0]
    (dataset,) = get(emulator, f"/v1/dataset?project_name={target}")["objects"]
    (experiment,) = get(emulator, f"/v1/experiment?project_name={target}")["objects"]
    for object_type, object_id in (
        ("project_logs", project["id"]), ("dataset", dataset["id"]), ("experiment", experiment["id"]),
    ):  # fmt: skip
        restored = all_rows(emulator.url, emulator.key, object_type, object_id)
        assert canonical(
            sorted((_user_fields(r) for r in restored.values()), key=lambda r: r["id"])
        ) == canonical([_user_fields(r) for r in LEGACY_ROWS[object_type]]), object_type


def get(emulator: Any, path: str) -> Any:
    request = urllib.request.Request(emulator.url + path, headers={"Authorization": f"Bearer {emulator.key}"})
    with urllib.request.urlopen(request) as response:
        return orjson.loads(response.read())


def _user_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A row without the fields a copy changes (server-owned fields, object keys)."""
    return {k: v for k, v in row.items() if k not in DESTINATION_FIELDS}


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    """A spelling that tells 1 from 1.0 and True from 1, which ``==`` does not."""
    return [json.dumps(row, sort_keys=True) for row in rows]
