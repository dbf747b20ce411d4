"""Run manifests: exact JSON round trip, atomic publication, listing, no credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import __version__
from pipeline.common.errors import UsageError
from pipeline.common.manifest import (
    FileInfo,
    Manifest,
    ObjectManifest,
    list_manifests,
    read_manifest,
    write_manifest,
)
from pipeline.common.storage import open_storage


def _manifest(run_id: str, started_at: str) -> Manifest:
    return Manifest(
        run_id=run_id,
        started_at=started_at,
        finished_at="2024-05-01T00:10:00Z",
        api_url="https://user:pw@api.example.com:8443/v1?api_key=sk-123#frag",
        format="jsonl",
        query={"filter": {"op": "eq", "left": {"op": "ident", "name": ["tags"]}, "right": 1}},
        objects=(
            ObjectManifest(
                object_type="dataset",
                object_id="d1",
                name="Golden set",
                snapshot_version="1000192656880881099",
                rows_expected=3,
                rows_written=3,
                files=(FileInfo("dataset/d1/part-00000.jsonl", 3, 120, "ab" * 32),),
            ),
        ),
    )


def test_round_trip_and_no_credentials(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    manifest = _manifest("run-1", "2024-05-01T00:00:00Z")
    assert manifest.api_url == "https://api.example.com:8443/v1"
    assert manifest.tool_version == __version__
    assert write_manifest(storage, manifest) == "_manifests/run-1.json"
    text = storage.read_bytes("_manifests/run-1.json")
    assert b"sk-123" not in text and b"pw" not in text
    assert Manifest.from_json(text) == manifest
    assert read_manifest(storage, "_manifests/run-1.json") == manifest


def test_list_manifests_oldest_first(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    write_manifest(storage, _manifest("b", "2024-05-02T00:00:00Z"))
    write_manifest(storage, _manifest("a", "2024-05-03T00:00:00Z"))
    write_manifest(storage, _manifest("c", "2024-05-01T00:00:00Z"))
    assert [m.run_id for m in list_manifests(storage)] == ["c", "b", "a"]
    assert list_manifests(open_storage(str(tmp_path / "empty"))) == []


def test_not_a_manifest_names_the_file(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("_manifests/x.json", b'{"run_id": "x"}')
    with pytest.raises(UsageError, match=r"^.*/_manifests/x.json: not a btpipe manifest \("):
        read_manifest(storage, "_manifests/x.json")


def test_keys_from_a_newer_writer_are_ignored() -> None:
    data = (
        b'{"run_id":"r","started_at":"s","api_url":"http://h","objects":[{"object_type":"dataset",'
        b'"object_id":"d","files":[{"path":"p","rows":1,"bytes":2,"sha256":"x","codec":"z"}],"new":1}],'
        b'"future":true}'
    )
    manifest = Manifest.from_json(data)
    assert manifest.objects[0].files == (FileInfo("p", 1, 2, "x"),)
    assert manifest.run_id == "r"
