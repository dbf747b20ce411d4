"""Attachments as real projects hold them, at their edges: one attachment referred to by many
rows read in several ranges, a zero-byte one, a unicode filename, a reference deep inside
arrays; a source whose upload never reached ``done``; an export and an import interrupted
and run again; a copied row pointed at the wrong attachment; a key that is refused; and no
API key or signed URL token in any file or line btpipe writes.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests.attachments.seed import PDF, PNG, auth, org_id, read, sha, upload
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, unique

UNICODE_NAME = "résumé 名前 📎.txt"
NESTED_BYTES = b"deep inside\n" * 50


def _deep(ref: dict[str, Any], depth: int = 30) -> Any:
    value: Any = {"at the bottom": ref}
    for n in range(depth):
        value = [n, value] if n % 2 else {"level": value}
    return value


def _summary(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = orjson.loads(result.output)
    return found


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "error" in line]


def _project(emulator: Emulator, key: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = post(emulator.url, key, "/v1/project", {"name": name})
    return found


@pytest.fixture(scope="module")
def source(emulator: Emulator) -> dict[str, Any]:
    """60 rows referring, between them, to four attachments: a PNG in every row, a zero-byte
    file, one with a unicode filename and one 30 levels deep inside arrays and objects."""
    project = _project(emulator, emulator.key, unique("attach-edges"))
    png = upload(emulator.url, emulator.key, PNG, "a.png", "image/png")
    empty = upload(emulator.url, emulator.key, b"", "empty.bin", "application/octet-stream")
    named = upload(emulator.url, emulator.key, PDF, UNICODE_NAME, "text/plain; charset=utf-8")
    nested = upload(emulator.url, emulator.key, NESTED_BYTES, "n.txt", "text/plain")
    rows = [{"id": f"r{n:02}", "input": {"image": png}, "output": n} for n in range(60)]
    rows[7]["metadata"] = {"empty": empty}
    rows[31]["expected"] = {"doc": named}
    rows[52]["input"]["tree"] = _deep(nested)
    insert(emulator.url, emulator.key, "project_logs", project["id"], rows)
    return {"project": project, "refs": {"png": png, "empty": empty, "named": named, "nested": nested}}


CONTENT = {"png": PNG, "empty": b"", "named": PDF, "nested": NESTED_BYTES}


def _check_copy(emulator: Emulator, name: str) -> None:
    """The copy in the other org holds the 60 rows, each reference naming the right bytes."""
    key = emulator.other_org_key
    rows = all_rows(emulator.url, key, "project_logs", _project(emulator, key, name)["id"])
    assert sorted(rows) == [f"r{n:02}" for n in range(60)]
    assert len({rows[r]["input"]["image"]["key"] for r in rows}) == 1  # one upload, one key
    assert read(emulator.url, key, rows["r00"]["input"]["image"]) == PNG
    assert read(emulator.url, key, rows["r07"]["metadata"]["empty"]) == b""
    named = rows["r31"]["expected"]["doc"]
    assert named["filename"] == UNICODE_NAME and read(emulator.url, key, named) == PDF
    tree = rows["r52"]["input"]["tree"]
    while "at the bottom" not in tree:
        tree = tree["level"] if isinstance(tree, dict) else tree[1]
    assert read(emulator.url, key, tree["at the bottom"]) == NESTED_BYTES


def test_many_rows_many_ranges_each_attachment_once(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "backup"
    split = ("--ranges-per-object", "4", "--min-rows-per-range", "1", "--page-limit", "7")
    exported = _summary(btpipe(emulator, "export", "--project", source["project"]["name"], "--out", str(out), *split, "--json"))  # fmt: skip
    assert (exported["rows"], exported["attachments"]["downloaded"]) == (60, 4)
    files = sorted(p.name for p in (out / "_attachments").iterdir() if p.is_file())
    assert files == sorted(f"sha256={sha(data)}" for data in CONTENT.values())  # no temp file left
    for data in CONTENT.values():
        assert (out / "_attachments" / f"sha256={sha(data)}").read_bytes() == data
    listed = {f["filename"]: f for f in orjson.loads(next((out / "_manifests").glob("*.json")).read_bytes())["attachments"]["files"]}  # fmt: skip
    assert listed[UNICODE_NAME]["bytes"] == len(PDF) and listed["empty.bin"]["sha256"] == sha(b"")

    target = unique("edges-imported")
    imported = _summary(btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--create-project",
                               "--state-dir", str(tmp_path / "s1"), "--json", key=emulator.other_org_key))  # fmt: skip
    assert imported["attachments"] == {"uploaded": 4, "bytes": sum(map(len, CONTENT.values())), "present": 0}
    _check_copy(emulator, target)

    monkeypatch.setenv("OTHER_KEY", emulator.other_org_key)
    migrated_to = unique("edges-migrated")
    migrated = _summary(btpipe(emulator, "migrate", "--from-project", source["project"]["name"], "--to-project",
                               migrated_to, "--create-project", "--to-api-key-env", "OTHER_KEY",
                               "--state-dir", str(tmp_path / "s2"), "--json"))  # fmt: skip
    assert migrated["attachments"]["uploaded"] == 4
    _check_copy(emulator, migrated_to)


def _unfinished(emulator: Emulator, status: str) -> dict[str, Any]:
    """A row whose attachment's upload never reached ``done`` at the source."""
    project = _project(emulator, emulator.key, unique(f"attach-{status}"))
    org, key = org_id(emulator.url, emulator.key), str(uuid.uuid4())
    body = {"key": key, "filename": "f.txt", "content_type": "text/plain", "org_id": org}
    signed = requests.post(
        f"{emulator.url}/attachment", json=body, headers=auth(emulator.key), timeout=30
    ).json()
    if status == "error":
        requests.put(signed["signedUrl"], data=b"abc", headers=signed["headers"], timeout=30)
        failed = {"key": key, "org_id": org, "status": {"upload_status": "error", "error_message": "boom"}}
        requests.post(
            f"{emulator.url}/attachment/status", json=failed, headers=auth(emulator.key), timeout=30
        )
    ref = {"type": "braintrust_attachment", "key": key, "filename": "f.txt", "content_type": "text/plain"}
    insert(emulator.url, emulator.key, "project_logs", project["id"], [{"id": "u1", "input": {"file": ref}}])
    return {"project": project, "key": key}


@pytest.mark.parametrize("status", ["uploading", "error"])
def test_a_source_upload_never_done_stops_with_one_line(
    emulator: Emulator, status: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _unfinished(emulator, status)
    out = tmp_path / "backup"
    insert(
        emulator.url, emulator.key, "project_logs", made["project"]["id"], [{"id": "u2", "input": "plain"}]
    )
    failed = btpipe(emulator, "export", "--project", made["project"]["name"], "--out", str(out))
    assert failed.exit_code == 1, failed.output
    (line,) = _error_lines(failed.output)
    assert made["key"] in line and f"upload status '{status}'" in line and "--attachments skip" in line
    assert not list((out / "_manifests").glob("*.json"))
    skipped = _summary(btpipe(emulator, "export", "--project", made["project"]["name"], "--out", str(out),
                              "--restart", "--attachments", "skip", "--json"))  # fmt: skip
    assert (skipped["rows"], skipped["attachments"]["skipped"]) == (2, 1)
    # a copy stops at the row naming the attachment, saying how to go on without it; with
    # --on-error skip the row is recorded and every other row copied, and the run exits 1
    monkeypatch.setenv("OTHER_KEY", emulator.other_org_key)
    target = unique("never")
    copy = ["migrate", "--from-project", made["project"]["name"], "--to-project", target, "--create-project",
            "--to-api-key-env", "OTHER_KEY", "--state-dir", str(tmp_path / "s")]  # fmt: skip
    moved = btpipe(emulator, *copy)
    assert moved.exit_code == 1, moved.output
    (line,) = _error_lines(moved.output)
    assert made["key"] in line and f"upload status '{status}'" in line and "'u1'" in line
    assert "--on-error skip" in line
    errors = tmp_path / "errors.jsonl"
    moved = btpipe(emulator, *copy, "--on-error", "skip", "--error-file", str(errors))
    assert moved.exit_code == 1, moved.output
    rows = all_rows(emulator.url, emulator.other_org_key, "project_logs", _project(emulator, emulator.other_org_key, target)["id"])  # fmt: skip
    assert set(rows) == {"u2"}
    (recorded,) = [orjson.loads(line) for line in errors.read_bytes().splitlines()]
    assert recorded["id"] == "u1" and made["key"] in recorded["error"], recorded


def test_interrupted_export_and_import_resume_without_doubles(emulator: Emulator, tmp_path: Path) -> None:
    """An export stopped by an oversized attachment keeps what it downloaded (and no temp
    file); run again with a higher bound it downloads only the rest. An import stopped by a
    missing attachment file, run again once the file is back, uploads only what is missing."""
    project = _project(emulator, emulator.key, unique("attach-resume"))
    blobs = [PNG, PDF, NESTED_BYTES, b"\1" * ((1 << 20) + 1)]
    refs = [upload(emulator.url, emulator.key, data, f"f{n}", "application/octet-stream") for n, data in enumerate(blobs)]  # fmt: skip
    insert(emulator.url, emulator.key, "project_logs", project["id"],
           [{"id": f"r{n}", "input": {"file": refs[n % 4]}} for n in range(12)])  # fmt: skip
    out = tmp_path / "backup"
    stopped = btpipe(
        emulator, "export", "--project", project["name"], "--out", str(out), "--max-attachment-mb", "1"
    )
    assert stopped.exit_code == 1 and refs[3]["key"] in stopped.output
    stored = out / "_attachments"  # none yet when the oversized one stopped the run first
    kept = sorted(p.name for p in stored.iterdir() if p.is_file()) if stored.exists() else []
    assert all(name.startswith("sha256=") for name in kept), kept  # no temp file, nothing half written
    for name in kept:  # each published file whole, and its key's index beside it
        assert sha((out / "_attachments" / name).read_bytes()) == name.removeprefix("sha256=")
    assert len(list((out / "_attachments" / "keys").glob("*.json"))) == len(kept)
    resumed = _summary(btpipe(emulator, "export", "--project", project["name"], "--out", str(out), "--json"))
    assert resumed["attachments"]["downloaded"] == 4 - len(kept)
    assert sorted(p.name for p in (out / "_attachments").iterdir() if p.is_file()) == sorted(
        f"sha256={sha(data)}" for data in blobs
    )

    pdf = out / "_attachments" / f"sha256={sha(PDF)}"
    pdf.rename(tmp_path / "pdf")  # away for the first import
    target = unique("resume-imported")
    args = ("import", "--in", str(out), "--to-project", target, "--create-project", "--state-dir",
            str(tmp_path / "state"), "--max-attachment-mb", "2", "--json")  # fmt: skip
    first = btpipe(emulator, *args, key=emulator.other_org_key)
    assert first.exit_code == 1 and f"sha256={sha(PDF)}: missing" in first.output
    (tmp_path / "pdf").rename(pdf)
    second = _summary(btpipe(emulator, *args, key=emulator.other_org_key))["attachments"]
    # what the first run finished is in its state (neither uploaded nor looked up again)
    assert second["uploaded"] >= 1 and second["uploaded"] + second["present"] <= 4
    third = _summary(btpipe(emulator, *args, key=emulator.other_org_key))["attachments"]
    assert third == {"uploaded": 0, "bytes": 0, "present": 4}
    rows = all_rows(emulator.url, emulator.other_org_key, "project_logs", _project(emulator, emulator.other_org_key, target)["id"])  # fmt: skip
    assert sorted(rows) == sorted(f"r{n}" for n in range(12))
    for n in range(12):
        assert read(emulator.url, emulator.other_org_key, rows[f"r{n}"]["input"]["file"]) == blobs[n % 4]
