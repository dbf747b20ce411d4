"""The emulator's attachment routes, driven by the official Python SDK and by hand.

The SDK's ``Attachment`` in a logged span uploads through ``POST /attachment``, the signed
``PUT`` and ``POST /attachment/status``; its ``ReadonlyAttachment`` reads the bytes back
through ``GET /attachment`` and the signed download URL. Signed URLs need no API key, but a
wrong or reused-for-the-other-direction token is refused, and another org's key finds nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import braintrust
import orjson
import pytest
import requests

from pipeline.emulator.sample import generate_traces
from pipeline.emulator.server import RunningServer, ServerConfig, open_store
from tests.conftest import Emulator, unique_name
from tests.emulator.test_sdk import btql, point_sdk_at
from tests.helpers import btpipe


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _org_id(emulator: Emulator, key: str) -> str:
    resp = requests.post(f"{emulator.url}/api/apikey/login", headers=_auth(key), timeout=30)
    org: str = resp.json()["org_info"][0]["id"]
    return org


def test_sdk_attachment_uploads_and_reads_back(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    point_sdk_at(monkeypatch, emulator.url, emulator.key)
    project = unique_name("attach-sdk")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 50
    logger = braintrust.init_logger(project=project)
    with logger.start_span(name="root") as span:
        span.log(input={"image": braintrust.Attachment(data=png, filename="a.png", content_type="image/png")})
    logger.flush()
    (row,) = btql(emulator, f"select: * | from: project_logs('{logger.project.id}')")
    reference = row["input"]["image"]
    assert reference["type"] == "braintrust_attachment"
    assert (reference["filename"], reference["content_type"]) == ("a.png", "image/png")
    readonly = braintrust.ReadonlyAttachment(reference)
    assert readonly.status() == {"upload_status": "done"}
    assert readonly.data == png


def test_signed_urls_and_org_isolation(emulator: Emulator) -> None:
    org_id, key = _org_id(emulator, emulator.key), str(uuid.uuid4())
    body = {"key": key, "filename": "b.pdf", "content_type": "application/pdf", "org_id": org_id}
    upload = requests.post(
        f"{emulator.url}/attachment", json=body, headers=_auth(emulator.key), timeout=30
    ).json()
    data = b"%PDF-1.4\n" + b"x" * (3 << 20)  # several stored chunks
    assert requests.put(upload["signedUrl"], data=data, headers=upload["headers"], timeout=30).ok
    status = {"key": key, "org_id": org_id, "status": {"upload_status": "done"}}
    assert requests.post(f"{emulator.url}/attachment/status", json=status, headers=_auth(emulator.key), timeout=30).ok  # fmt: skip
    params = {"key": key, "filename": "b.pdf", "content_type": "application/pdf", "org_id": org_id}
    meta: dict[str, Any] = requests.get(f"{emulator.url}/attachment", params=params, headers=_auth(emulator.key), timeout=30).json()  # fmt: skip
    assert meta["status"] == {"upload_status": "done"}
    got = requests.get(meta["downloadUrl"], timeout=30)
    assert got.ok and hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    assert got.headers["Content-Type"] == "application/pdf"
    # the download token does not upload, an unknown token does nothing
    assert requests.put(meta["downloadUrl"], data=b"x", timeout=30).status_code == 403
    assert requests.get(meta["downloadUrl"] + "x", timeout=30).status_code == 403
    # no key, or another org's key: not found
    assert requests.get(f"{emulator.url}/attachment", params=params, timeout=30).status_code == 401
    other = requests.get(f"{emulator.url}/attachment", params=params, headers=_auth(emulator.other_org_key), timeout=30)  # fmt: skip
    assert other.status_code == 404
    own_org = {**params, "org_id": _org_id(emulator, emulator.other_org_key)}
    other = requests.get(f"{emulator.url}/attachment", params=own_org, headers=_auth(emulator.other_org_key), timeout=30)  # fmt: skip
    assert other.status_code == 404


def test_sample_attachments_project(tmp_path: Path) -> None:
    """``--sample`` adds ``sample-attachments`` (PNG and PDF attachments), and leaves the rows of
    ``sample-project`` what they were; a restart on the same database adds nothing twice."""
    db = str(tmp_path / "sample.db")
    open_store(ServerConfig(db=db, sample_traces=20, seed=5)).close()
    with RunningServer(ServerConfig(port=0, db=db, sample_traces=20, seed=5)) as server:
        emulator = Emulator(url=server.url)
        out = tmp_path / "backup"
        exported = btpipe(emulator, "export", "--project", "sample-attachments", "--out", str(out), "--json")
        assert exported.exit_code == 0, exported.output
        summary = orjson.loads(exported.output)
        assert (summary["rows"], summary["attachments"]["count"]) == (3, 3)
        files = sorted((out / "_attachments").glob("sha256=*"))
        assert sorted(f.read_bytes()[:5] for f in files) == [b"%PDF-", b"\x89PNG\r", b"\x89PNG\r"]
        project = requests.get(f"{server.url}/v1/project", params={"project_name": "sample-project"},
                               headers=_auth(emulator.key), timeout=30).json()["objects"][0]  # fmt: skip
        logs = btql(emulator, f"select: id | from: project_logs('{project['id']}') | limit: 1000")
        assert sorted(r["id"] for r in logs) == sorted(e["id"] for e in generate_traces(5, 20))
