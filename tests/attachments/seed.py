"""Attachment-bearing rows for the tests: bytes uploaded through the official flow (as the SDKs
do it, by hand here), and rows referring to them anywhere in their fields."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import requests


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def org_id(url: str, key: str) -> str:
    found: str = requests.post(f"{url}/api/apikey/login", headers=auth(key), timeout=30).json()["org_info"][
        0
    ]["id"]
    return found


def upload(url: str, key: str, data: bytes, filename: str, content_type: str) -> dict[str, Any]:
    """Upload ``data`` as a new attachment; its reference."""
    org = org_id(url, key)
    ref = {"type": "braintrust_attachment", "key": str(uuid.uuid4()), "filename": filename, "content_type": content_type}  # fmt: skip
    body = {"key": ref["key"], "filename": filename, "content_type": content_type, "org_id": org}
    signed = requests.post(f"{url}/attachment", json=body, headers=auth(key), timeout=30).json()
    assert requests.put(signed["signedUrl"], data=data, headers=signed["headers"], timeout=60).ok
    status = {"key": ref["key"], "org_id": org, "status": {"upload_status": "done"}}
    assert requests.post(f"{url}/attachment/status", json=status, headers=auth(key), timeout=30).ok
    return ref


def read(url: str, key: str, ref: dict[str, Any]) -> bytes:
    """The bytes a reference names, read back as the SDK's ReadonlyAttachment reads them."""
    params = {k: ref[k] for k in ("key", "filename", "content_type")} | {"org_id": org_id(url, key)}
    meta = requests.get(f"{url}/attachment", params=params, headers=auth(key), timeout=30)
    assert meta.ok, meta.text
    assert meta.json()["status"]["upload_status"] == "done"
    got = requests.get(meta.json()["downloadUrl"], timeout=60)
    assert got.ok
    return got.content


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
PDF = b"%PDF-1.4\n" + b"attachment body\n" * 300
