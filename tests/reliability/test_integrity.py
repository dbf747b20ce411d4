"""Integrity on read: a file changed after the export is caught before it is used.

A pristine export (JSONL, and uncompressed Parquet, whose values can be edited in place) of a
project holding logs, a dataset and an experiment, ten rows a file, is copied, and one part of
the dataset is tampered with as people and disks do: a value edited keeping the size, the last
rows cut off, the file emptied, the part replaced by another valid part of the same object,
the part deleted. Then:

* ``import`` exits 1 with one line naming the file, and nothing of the dataset is imported;
* ``import --skip-damaged`` imports the logs and the experiment exactly, names the file, exits 1;
* ``verify --in`` reports the dataset as a difference saying which file and why.

And an export resumed after one of the parts it had published was deleted reads that range
again, so its files end with every row of the server exactly once.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from pipeline.common.integrity import check_file
from pipeline.common.manifest import FileInfo
from pipeline.common.storage import Storage, open_storage
from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer, ServerConfig
from pipeline.sinks.jsonl import JsonlSink
from pipeline.sinks.parquet import ParquetSink
from pipeline.sources import iter_rows
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, make_project, read_export_files, unique
from tests.reliability.support import cli_env, command, hashes, run_cli, seed_logs

FORMATS = ["jsonl", "parquet"]
FILE_ROWS = 10


@dataclass(frozen=True)
class Backup:
    """A pristine export of ``objects`` (label -> (object type, source id)), and a project
    ``restored`` imported from it, for verify to compare with."""

    emulator: Emulator
    fmt: str
    pristine: Path
    objects: dict[str, tuple[str, str]]
    restored: str

    def source_hashes(self, label: str) -> dict[str, str]:
        object_type, object_id = self.objects[label]
        return hashes(all_rows(self.emulator.url, self.emulator.key, object_type, object_id).values())

    def dataset_parts(self, root: Path) -> list[Path]:
        _, dataset_id = self.objects["dataset"]
        base = root / "object_type=dataset" / f"object_id={dataset_id}"
        return sorted(p for p in base.rglob("*") if p.is_file())


def get(emulator: Emulator, path: str) -> Any:
    request = urllib.request.Request(emulator.url + path, headers={"Authorization": f"Bearer {emulator.key}"})
    with urllib.request.urlopen(request) as response:
        return orjson.loads(response.read())


def destination_hashes(emulator: Emulator, project: str) -> dict[str, dict[str, str]]:
    """By label (logs, dataset, experiment), the rows of what ``project`` holds; a missing
    object holds nothing."""
    quoted = urllib.parse.quote(project)
    found = get(emulator, f"/v1/project?project_name={quoted}")["objects"]
    if not found:
        return {}
    out = {"logs": hashes(all_rows(emulator.url, emulator.key, "project_logs", found[0]["id"]).values())}
    for label in ("dataset", "experiment"):
        for obj in get(emulator, f"/v1/{label}?project_name={quoted}")["objects"]:
            out[label] = hashes(all_rows(emulator.url, emulator.key, label, obj["id"]).values())
    return out


@pytest.fixture(scope="module", params=FORMATS)
def backup(
    request: pytest.FixtureRequest, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Backup:
    fmt: str = request.param
    made = make_project(
        emulator.url, emulator.key, "integrity",
        logs=[{"id": f"log-{i:03d}", "input": f"ask-{i:04d}", "output": i} for i in range(25)],
        dataset_rows=[{"id": f"d-{i:03d}", "input": f"value-{i:04d}", "expected": i} for i in range(30)],
        experiment_name="nightly",
        experiment_rows=[{"id": f"e-{i:03d}", "input": f"case-{i:04d}", "output": i} for i in range(20)],
    )  # fmt: skip
    project = made["project"]
    pristine = tmp_path_factory.mktemp(f"pristine-{fmt}")
    exported = btpipe(emulator, "export", "--project", project["name"], "--out", str(pristine), "--format", fmt,
                      "--compression", "none", "--file-rows", str(FILE_ROWS), "--ranges-per-object", "1",
                      "--quiet")  # fmt: skip
    assert exported.exit_code == 0, exported.output
    restored = unique("integrity-restored")
    imported = btpipe(emulator, "import", "--in", str(pristine), "--to-project", restored, "--create-project",
                      "--state-dir", str(pristine.parent / f"state-{fmt}"), "--quiet")  # fmt: skip
    assert imported.exit_code == 0, imported.output
    objects = {
        "logs": ("project_logs", project["id"]),
        "dataset": ("dataset", made["dataset"]["id"]),
        "experiment": ("experiment", made["experiment"]["id"]),
    }
    return Backup(emulator, fmt, pristine, objects, restored)


# -- the tamperings: each changes the dataset's second part, given every part of the dataset


def _rewrite_parquet(path: Path, keep: Callable[[int], int]) -> None:
    """Write ``path`` again as a valid btpipe Parquet file holding its first ``keep(rows)`` rows."""
    table = pq.read_table(path)
    pq.write_table(table.slice(0, keep(table.num_rows)), path, compression="none")


def edit_value(parts: list[Path]) -> None:
    """One value changed in place: same size, still a valid file of the same rows."""
    data = parts[1].read_bytes()
    match = re.search(rb"value-(\d{4})", data)
    assert match is not None
    edited = data[: match.start()] + b"VALUE" + data[match.start() + 5 :]
    parts[1].write_bytes(edited)


def cut_last_rows(parts: list[Path]) -> None:
    if parts[1].suffix == ".parquet":
        _rewrite_parquet(parts[1], lambda rows: rows - 3)
    else:
        parts[1].write_bytes(b"".join(parts[1].read_bytes().splitlines(keepends=True)[:-3]))


def empty(parts: list[Path]) -> None:
    if parts[1].suffix == ".parquet":
        _rewrite_parquet(parts[1], lambda rows: 0)  # a valid file of no rows
    else:
        parts[1].write_bytes(b"")


def replace_with_other_part(parts: list[Path]) -> None:
    shutil.copyfile(parts[0], parts[1])


def delete(parts: list[Path]) -> None:
    parts[1].unlink()


TAMPERINGS = [edit_value, cut_last_rows, empty, replace_with_other_part, delete]


@pytest.fixture(params=TAMPERINGS, ids=lambda t: t.__name__)
def tampered(request: pytest.FixtureRequest, backup: Backup, tmp_path: Path) -> tuple[Path, str, str]:
    """A copy of the pristine export with one dataset part tampered: (root, the part's path
    relative to the root, the word the error must use: missing, size or sha256)."""
    root = tmp_path / "backup"
    shutil.copytree(backup.pristine, root)
    parts = backup.dataset_parts(root)
    assert len(parts) == 3, parts
    rel = str(parts[1].relative_to(root))
    tamper: Callable[[list[Path]], None] = request.param
    tamper(parts)
    if tamper is delete:
        return root, rel, "missing"
    # the damage is one the readers alone would not notice: the file still reads whole
    rows = sum(len(batch) for batch in iter_rows(open_storage(str(root)), rel))
    assert rows <= FILE_ROWS
    same_size = parts[1].stat().st_size == (backup.pristine / rel).stat().st_size
    return root, rel, "sha256" if same_size else "size"


def test_import_refuses_a_damaged_file(
    backup: Backup, tampered: tuple[Path, str, str], tmp_path: Path
) -> None:
    root, damaged, reason = tampered
    dest = unique("integrity-dst")
    result = btpipe(backup.emulator, "import", "--in", str(root), "--to-project", dest, "--create-project",
                    "--state-dir", str(tmp_path / "state"), "--quiet")  # fmt: skip
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and damaged in lines[0] and reason in lines[0], result.stderr
    assert not destination_hashes(backup.emulator, dest).get("dataset")


def test_import_skip_damaged_imports_the_rest(
    backup: Backup, tampered: tuple[Path, str, str], tmp_path: Path
) -> None:
    root, damaged, reason = tampered
    dest = unique("integrity-skip")
    result = btpipe(backup.emulator, "import", "--in", str(root), "--to-project", dest, "--create-project",
                    "--state-dir", str(tmp_path / "state"), "--skip-damaged", "--json")  # fmt: skip
    assert result.exit_code == 1, result.output
    summary = orjson.loads(result.stdout)
    assert (
        len(summary["damaged"]) == 1 and damaged in summary["damaged"][0] and reason in summary["damaged"][0]
    )
    got = destination_hashes(backup.emulator, dest)
    assert got["logs"] == backup.source_hashes("logs")
    assert got["experiment"] == backup.source_hashes("experiment")
    assert not got.get("dataset")
    text = btpipe(backup.emulator, "import", "--in", str(root), "--to-project", dest,
                  "--state-dir", str(tmp_path / "state"), "--skip-damaged", "--into-existing")  # fmt: skip
    assert text.exit_code == 1 and damaged in text.stderr, text.output


def test_verify_reports_a_damaged_file_as_a_difference(
    backup: Backup, tampered: tuple[Path, str, str]
) -> None:
    root, damaged, reason = tampered
    result = btpipe(backup.emulator, "verify", "--in", str(root), "--to-project", backup.restored, "--json")
    assert result.exit_code == 1, result.output
    report = orjson.loads(result.stdout)
    assert report["ok"] is False
    by_source = {obj["source"].split(":")[0]: obj for obj in report["objects"]}
    assert by_source["logs"]["ok"] and by_source["experiment"]["ok"]
    dataset = by_source["dataset"]
    assert dataset["ok"] is False
    assert (
        len(dataset["damaged"]) == 1 and damaged in dataset["damaged"][0] and reason in dataset["damaged"][0]
    )
    text = btpipe(backup.emulator, "verify", "--in", str(root), "--to-project", backup.restored)
    assert text.exit_code == 1 and damaged in text.stdout, text.output


def test_pristine_backup_imports_and_verifies(backup: Backup, tmp_path: Path) -> None:
    """The checks pass on the files as the export wrote them."""
    result = btpipe(backup.emulator, "verify", "--in", str(backup.pristine), "--to-project", backup.restored)
    assert result.exit_code == 0, result.output
    got = destination_hashes(backup.emulator, backup.restored)
    assert got == {label: backup.source_hashes(label) for label in backup.objects}


# -- an export resumed after a part it published was deleted

KEY = "bt-local-key"


def _published(state: Path) -> list[str]:
    """The files the unfinished run in the state file says it published."""
    try:
        data = orjson.loads(state.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return []
    run = data.get("run") or {"objects": []}
    return [f["path"] for obj in run["objects"] for rng in obj["ranges"] for f in rng["files"]]


@pytest.mark.parametrize("how", ["resume", "restart"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_resumed_export_rereads_a_range_whose_part_was_deleted(tmp_path: Path, fmt: str, how: str) -> None:
    """Stopped part way; one published part deleted and another changed; re-run as it was
    (resumed: the damaged parts' ranges are read again) or with --restart (the unfinished run's
    files go, the missing one too, without a word): every row exactly once either way."""
    with RunningServer(ServerConfig(port=0, db=str(tmp_path / "emulator.db"))) as server:
        project = seed_logs(server, KEY, 400)
        expected = hashes(all_rows(server.url, KEY, "project_logs", project["id"]).values())
        out = tmp_path / "out"
        args = command("export", "--project", project["name"], "--objects", "logs", "--out", str(out),
                       "--format", fmt, "--page-limit", "20", "--file-rows", "40", "--quiet")  # fmt: skip
        env = cli_env(server.url, KEY)
        state = out / "_state" / f"export-{project['id']}.json"
        server.faults.replace(FaultConfig(latency_ms=40))  # slow enough to stop part way
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while len(_published(state)) < 2 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 5, err
        server.faults.replace(FaultConfig())
        published = _published(state)
        assert len(published) >= 2, "the export was not stopped part way"
        deleted, changed = out / published[0], out / published[-1]
        deleted.unlink()
        changed.write_bytes(changed.read_bytes() + b"\n")

        again = run_cli(env, *args[3:], *(["--restart"] if how == "restart" else []))
        assert again.returncode == 0, again.stderr
        if how == "resume":
            warnings = again.stderr.strip().splitlines()
            assert len(warnings) == 2 and published[0] in warnings[0] and published[-1] in warnings[1], (
                warnings
            )
            assert "missing" in warnings[0] and "size" in warnings[1]
            assert deleted.is_file(), "the deleted part was not written again"
        else:
            assert again.stderr == ""
        manifest = next((out / "_manifests").glob("*.json"))
        listed = [f["path"] for obj in orjson.loads(manifest.read_bytes())["objects"] for f in obj["files"]]
        storage = open_storage(str(out))
        from_manifest = [r.row for path in listed for batch in iter_rows(storage, path) for r in batch]
        assert hashes(from_manifest) == expected
        assert hashes(read_export_files(out, "project_logs", project["id"])) == expected  # no stray part


# -- the check itself, on files written by the sinks


def _publish(storage: Storage, fmt: str, rows: int) -> FileInfo:
    page = b"".join(orjson.dumps({"id": f"r{i}", "input": i}) + b"\n" for i in range(rows))
    sink = JsonlSink(storage, "d") if fmt == "jsonl" else ParquetSink(storage, "d", object_type="dataset")
    with sink:
        sink.write_page(page, rows)
        (info,) = sink.flush()
    return info


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_file_says_what_differs(tmp_path: Path, fmt: str) -> None:
    storage = open_storage(str(tmp_path))
    info = _publish(storage, fmt, 5)
    where = f"{tmp_path}/{info.path}"
    assert check_file(storage, info) is None
    wrong_rows = replace(info, rows=6)
    assert str(check_file(storage, wrong_rows)) == f"{where}: 5 rows, the manifest says 6"
    shorter = replace(info, bytes=info.bytes - 1)  # the file is longer: read no further than needed
    said = f"the manifest says {info.bytes - 1:,}"
    assert str(check_file(storage, shorter)) == f"{where}: size at least {info.bytes:,} bytes, {said}"
    longer = replace(info, bytes=info.bytes + 10)
    said = f"the manifest says {info.bytes + 10:,}"
    assert str(check_file(storage, longer)) == f"{where}: size {info.bytes:,} bytes, {said}"
    other = replace(info, sha256="0" * 64)
    assert str(check_file(storage, other)) == f"{where}: sha256 differs from the manifest"
    (tmp_path / info.path).unlink()
    assert str(check_file(storage, info)) == f"{where}: missing"
