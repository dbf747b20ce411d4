"""Attachments through export, import, migrate and verify, into a project of another org.

The source project holds an attachment logged with the official SDK's ``Attachment``, two
uploaded by hand and referred to anywhere in rows (nested in input, metadata, expected; one
key in two rows), and an ``external_attachment``, which is data and passes through as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import braintrust
import orjson
import pytest

from tests.attachments.seed import PDF, PNG, read, sha, upload
from tests.conftest import Emulator
from tests.emulator.test_sdk import point_sdk_at
from tests.helpers import all_rows, btpipe, insert, post, unique

EXTERNAL = {"type": "external_attachment", "url": "s3://bucket/a.txt", "filename": "a.txt", "content_type": "text/plain"}  # fmt: skip
SDK_BYTES = b"logged through the SDK\n" * 100


@pytest.fixture(scope="module")
def source(emulator: Emulator) -> dict[str, Any]:
    """A project whose logs refer to three attachments and one external attachment."""
    with pytest.MonkeyPatch.context() as mp:
        point_sdk_at(mp, emulator.url, emulator.key)
        logger = braintrust.init_logger(project=unique("attach-src"))
        with logger.start_span(name="sdk") as span:
            span.log(
                input={
                    "file": braintrust.Attachment(data=SDK_BYTES, filename="s.txt", content_type="text/plain")
                }
            )
        logger.flush()
        project = {"id": logger.project.id, "name": logger.project.name}
    png = upload(emulator.url, emulator.key, PNG, "a.png", "image/png")
    pdf = upload(emulator.url, emulator.key, PDF, "b.pdf", "application/pdf")
    insert(emulator.url, emulator.key, "project_logs", project["id"], [
        {"id": "r1", "input": {"image": png}, "output": "a picture"},
        {"id": "r2", "metadata": {"pages": [{"doc": pdf}]}, "expected": {"again": png}},
        {"id": "r3", "input": {"link": EXTERNAL}},
        {"id": "r4", "input": "no attachment"},
    ])  # fmt: skip
    return {"project": project, "png": png, "pdf": pdf}


def _other_project(emulator: Emulator, name: str) -> dict[str, Any]:
    found: dict[str, Any] = post(emulator.url, emulator.other_org_key, "/v1/project", {"name": name})
    return found


def _manifest(out: Path) -> dict[str, Any]:
    (path,) = sorted((out / "_manifests").glob("*.json"))[-1:]
    found: dict[str, Any] = orjson.loads(path.read_bytes())
    return found


def _state(tmp: Path) -> list[str]:
    return ["--state-dir", str(tmp / "state")]


def test_export_import_verify_into_another_org(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "backup"
    exported = btpipe(emulator, "export", "--project", source["project"]["name"], "--out", str(out))
    assert exported.exit_code == 0, exported.output
    attached = _manifest(out)["attachments"]
    assert (attached["count"], attached["bytes"], attached["skipped"]) == (
        3,
        len(PNG) + len(PDF) + len(SDK_BYTES),
        0,
    )
    assert {f["sha256"] for f in attached["files"]} == {sha(PNG), sha(PDF), sha(SDK_BYTES)}
    for data in (PNG, PDF, SDK_BYTES):
        assert (out / "_attachments" / f"sha256={sha(data)}").read_bytes() == data
    again = btpipe(emulator, "export", "--project", source["project"]["name"], "--out", str(out), "--json")
    assert again.exit_code == 0, again.output
    assert orjson.loads(again.output)["attachments"]["downloaded"] == 0  # already in the root

    target = unique("attach-imported")
    args = (
        "import",
        "--in",
        str(out),
        "--to-project",
        target,
        "--create-project",
        *_state(tmp_path),
        "--json",
    )
    imported = btpipe(emulator, *args, key=emulator.other_org_key)
    assert imported.exit_code == 0, imported.output
    assert orjson.loads(imported.output)["attachments"] == {
        "uploaded": 3,
        "bytes": attached["bytes"],
        "present": 0,
    }
    rows = all_rows(
        emulator.url, emulator.other_org_key, "project_logs", _other_project(emulator, target)["id"]
    )
    assert rows["r1"]["input"]["image"]["key"] != source["png"]["key"]
    assert rows["r1"]["input"]["image"] == rows["r2"]["expected"]["again"]  # one upload, one key
    assert read(emulator.url, emulator.other_org_key, rows["r1"]["input"]["image"]) == PNG
    assert read(emulator.url, emulator.other_org_key, rows["r2"]["metadata"]["pages"][0]["doc"]) == PDF
    sdk_row = next(r for r in rows.values() if r["span_attributes"]["name"] == "sdk")
    assert read(emulator.url, emulator.other_org_key, sdk_row["input"]["file"]) == SDK_BYTES
    assert rows["r3"]["input"]["link"] == EXTERNAL

    rerun = btpipe(emulator, *args, key=emulator.other_org_key)
    assert rerun.exit_code == 0, rerun.output
    assert orjson.loads(rerun.output)["attachments"] == {"uploaded": 0, "bytes": 0, "present": 3}

    verified = btpipe(
        emulator, "verify", "--in", str(out), "--to-project", target, key=emulator.other_org_key
    )
    assert verified.exit_code == 0, verified.output
    assert "identical" in verified.output

    # a tampered attachment file is caught by verify (its bytes against the manifest)
    tampered = out / "_attachments" / f"sha256={sha(PDF)}"
    tampered.write_bytes(PDF[:-1] + b"!")
    caught = btpipe(emulator, "verify", "--in", str(out), "--to-project", target, key=emulator.other_org_key)
    assert caught.exit_code == 1
    assert f"sha256={sha(PDF)}: sha256 differs from the manifest" in caught.output


def test_migrate_into_another_org(emulator: Emulator, source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("OTHER_KEY", emulator.other_org_key)
    target = unique("attach-migrated")
    args = ("migrate", "--from-project", source["project"]["name"], "--to-project", target, "--create-project",
            "--to-api-key-env", "OTHER_KEY", *_state(tmp_path), "--json")  # fmt: skip
    migrated = btpipe(emulator, *args)
    assert migrated.exit_code == 0, migrated.output
    assert orjson.loads(migrated.output)["attachments"]["uploaded"] == 3
    rows = all_rows(
        emulator.url, emulator.other_org_key, "project_logs", _other_project(emulator, target)["id"]
    )
    assert read(emulator.url, emulator.other_org_key, rows["r2"]["expected"]["again"]) == PNG
    assert rows["r3"]["input"]["link"] == EXTERNAL
    rerun = btpipe(emulator, *args)
    assert rerun.exit_code == 0, rerun.output
    assert orjson.loads(rerun.output)["attachments"] == {"uploaded": 0, "bytes": 0, "present": 3}
    verified = btpipe(emulator, "verify", "--project", source["project"]["name"], "--to-project", target,
                      "--to-api-key-env", "OTHER_KEY")  # fmt: skip
    assert verified.exit_code == 0, verified.output
    assert "identical" in verified.output


def test_missing_attachment_is_one_line(emulator: Emulator, source: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "backup"
    assert (
        btpipe(emulator, "export", "--project", source["project"]["name"], "--out", str(out)).exit_code == 0
    )
    (out / "_attachments" / f"sha256={sha(PNG)}").unlink()
    failed = btpipe(emulator, "import", "--in", str(out), "--to-project", unique("attach-missing"),
                    "--create-project", *_state(tmp_path), key=emulator.other_org_key)  # fmt: skip
    assert failed.exit_code == 1
    (line,) = [line for line in failed.output.splitlines() if "error" in line]
    assert f"sha256={sha(PNG)}: missing" in line and source["png"]["key"] in line


def test_skip_and_oversized(emulator: Emulator, tmp_path: Path) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("attach-big")})
    big = upload(emulator.url, emulator.key, b"\0" * (3 << 20), "big.bin", "application/octet-stream")
    insert(emulator.url, emulator.key, "project_logs", project["id"], [{"id": "b1", "input": {"blob": big}}])
    out = tmp_path / "backup"
    failed = btpipe(
        emulator, "export", "--project", project["name"], "--out", str(out), "--max-attachment-mb", "2"
    )
    assert failed.exit_code == 1
    (line,) = [line for line in failed.output.splitlines() if "error" in line]
    assert big["key"] in line and "over --max-attachment-mb 2" in line
    assert not list((out / "_manifests").glob("*.json"))  # nothing published
    skipped = btpipe(emulator, "export", "--project", project["name"], "--out", str(out), "--restart",
                     "--attachments", "skip", "--json")  # fmt: skip
    assert skipped.exit_code == 0, skipped.output
    assert orjson.loads(skipped.output)["attachments"]["skipped"] == 1
    assert not list((out / "_attachments").glob("sha256=*"))
