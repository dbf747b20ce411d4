"""Local storage: atomic publication, listing without temp files, cleanup, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.common.errors import UsageError
from pipeline.common.storage import LocalStorage, is_temp_name, location, open_storage


def test_file_appears_only_when_the_block_exits(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    with storage.open_atomic("a/b/data.bin") as fh:
        fh.write(b"hello")
        assert not storage.exists("a/b/data.bin")
        assert storage.list_files() == []
        (temp,) = os.listdir(tmp_path / "a" / "b")
        assert is_temp_name(temp)
    assert storage.read_bytes("a/b/data.bin") == b"hello"
    assert os.listdir(tmp_path / "a" / "b") == ["data.bin"]


def test_exception_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("f.json", b"old")
    with pytest.raises(RuntimeError), storage.open_atomic("f.json") as fh:
        fh.write(b"new")
        raise RuntimeError("boom")
    assert storage.read_bytes("f.json") == b"old"
    assert os.listdir(tmp_path) == ["f.json"]


def test_list_files_by_prefix_sorted_without_temp_files(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    for path in ("x/b.jsonl", "x/a.jsonl", "x/sub/c.jsonl", "xy/d.jsonl", "top.json"):
        storage.write_bytes(path, b"1")
    (tmp_path / "x" / ".b.jsonl.123.tmp").write_bytes(b"partial")
    assert storage.list_files() == ["top.json", "x/a.jsonl", "x/b.jsonl", "x/sub/c.jsonl", "xy/d.jsonl"]
    assert storage.list_files("x/") == ["x/a.jsonl", "x/b.jsonl", "x/sub/c.jsonl"]
    assert storage.list_files("x") == ["x/a.jsonl", "x/b.jsonl", "x/sub/c.jsonl", "xy/d.jsonl"]
    assert storage.list_files("missing/") == []


def test_cleanup_temp_removes_only_stale_temp_files(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("d/keep.jsonl", b"1")
    (tmp_path / "d" / ".part-00001.jsonl.abc.tmp").write_bytes(b"partial")
    (tmp_path / "other.tmp").write_bytes(b"not ours: no leading dot")
    assert storage.cleanup_temp("d/") == ["d/.part-00001.jsonl.abc.tmp"]
    assert sorted(os.listdir(tmp_path / "d")) == ["keep.jsonl"]
    assert storage.list_files() == ["d/keep.jsonl", "other.tmp"]


def test_read_delete_and_missing_files(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path}")
    assert isinstance(storage, LocalStorage) and storage.url == str(tmp_path)
    storage.write_bytes("f", b"data")
    with storage.open_read("f") as fh:
        assert fh.read() == b"data"
    storage.delete("f")
    assert not storage.exists("f")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("f")
    with pytest.raises(FileNotFoundError):
        storage.delete("f")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_root_is_a_usage_error(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(UsageError) as info:
            open_storage(str(root)).write_bytes("sub/f", b"x")
        assert str(info.value) == f"cannot write to {root}/sub: Permission denied"
    finally:
        root.chmod(0o700)


def test_root_below_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UsageError, match=r"^cannot write to .*/file/out: "):
        open_storage(str(tmp_path / "file" / "out")).write_bytes("f", b"x")


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", "", "/"])
def test_paths_cannot_escape_the_root(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError, match="invalid storage path"):
        open_storage(str(tmp_path)).write_bytes(bad, b"x")


def test_urls_and_locations(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unsupported storage URL scheme 'ftp'"):
        open_storage("ftp://host/x")
    with pytest.raises(UsageError, match="names no bucket"):
        open_storage("s3:///prefix")
    assert location(open_storage(str(tmp_path)), "a/b.jsonl") == f"{tmp_path}/a/b.jsonl"
