"""The ``/logs3`` overflow path by hand: what the signed upload URL allows and refuses, and
how the ``/logs3`` reference applies the payload (the SDK's own use of it is in
``test_sdk_conformance.py``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.emulator.server import RunningServer
from pipeline.querylang.ast import from_object
from tests.emulator.conftest import Api, Reply


def _payload(project_id: str, rows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {"rows": [{"project_id": project_id, "log_id": "g", **r} for r in rows], "api_version": 2}
    )


async def _ask(api: Api, project_id: str, payload: bytes, rows: int = 1, **kw: Any) -> dict[str, Any]:
    declared = [{"object_ids": {"project_id": project_id, "log_id": "g"}, "is_delete": False, "has_comment": False, "input_row": {"byte_size": 10}}] * rows  # fmt: skip
    body = {"content_type": "application/json", "size_bytes": len(payload), "rows": declared}
    found: dict[str, Any] = await api.ok("POST", "/logs3/overflow", body, **kw)
    return found


async def _put(api: Api, upload: dict[str, Any], payload: bytes) -> Reply:
    path = upload["signedUrl"].removeprefix(api.emulator.url)
    return await api.call("PUT", path, raw=payload, key=None, headers=upload["headers"])


async def _apply(api: Api, upload_key: str, size: int | None = None, **kw: Any) -> Reply:
    rows = {"type": "logs3_overflow", "key": upload_key, **({"size_bytes": size} if size is not None else {})}
    return await api.call("POST", "/logs3", {"rows": rows, "api_version": 2}, **kw)


async def test_upload_then_reference_writes_the_batch_once(api: Api) -> None:
    pid = (await api.project())["id"]
    payload = _payload(
        pid, [{"id": "big", "input": "x" * 5000, "metadata": {"n": 1}}, {"id": "small", "output": 2}]
    )
    upload = await _ask(api, pid, payload, rows=2)
    assert upload["method"] == "PUT" and upload["headers"] == {"Content-Type": "application/json"}
    assert upload["signedUrl"].startswith(f"{api.emulator.url}/_emulator/overflow/")
    assert (await _put(api, upload, payload)).status == 200  # no API key sent

    first = await _apply(api, upload["key"], len(payload))
    assert first.status == 200, first.text
    assert first.json == {"row_ids": ["big", "small"]}
    rows = {r["id"]: r for r in await api.all_rows({"from": from_object("project_logs", pid), "select": [{"op": "star"}]})}  # fmt: skip
    assert (rows["big"]["input"], rows["big"]["metadata"], rows["small"]["output"]) == (
        "x" * 5000,
        {"n": 1},
        2,
    )

    again = await _apply(api, upload["key"])  # a retry: same answer, nothing written twice
    assert again.json == first.json
    reread = {r["id"]: r for r in await api.all_rows({"from": from_object("project_logs", pid), "select": [{"op": "star"}]})}  # fmt: skip
    assert {i: r["_xact_id"] for i, r in reread.items()} == {i: r["_xact_id"] for i, r in rows.items()}


async def test_the_upload_url_refuses_a_wrong_size_a_second_upload_and_a_bad_token(api: Api) -> None:
    pid = (await api.project())["id"]
    payload = _payload(pid, [{"id": "r", "input": 1}])
    upload = await _ask(api, pid, payload)
    short = await _put(api, upload, payload[:-1])
    assert (short.status, short.text) == (
        400,
        f"upload is {len(payload) - 1} bytes, {len(payload)} were declared",
    )
    assert (await _apply(api, upload["key"])).status == 400  # nothing uploaded yet
    assert (await _put(api, upload, payload)).status == 200
    second = await _put(api, upload, payload)
    assert (second.status, second.text) == (409, "this upload URL was already used")
    forged = await api.call("PUT", "/_emulator/overflow/not-a-token", raw=payload, key=None)
    assert (forged.status, forged.text) == (403, "upload URL is unknown or expired")
    wrong_size = await _apply(api, upload["key"], len(payload) + 1)
    assert wrong_size.status == 400 and "rows.size_bytes" in wrong_size.text


async def test_only_the_requester_applies_and_only_before_expiry(
    api: Api, emulator_server: RunningServer
) -> None:
    pid = (await api.project())["id"]
    payload = _payload(pid, [{"id": "r", "input": 1}])
    upload = await _ask(api, pid, payload)
    assert (await _put(api, upload, payload)).status == 200
    assert (await _apply(api, upload["key"], key=api.emulator.other_org_key)).status == 404

    late = await _ask(api, pid, payload)
    emulator_server.store.write_sync(lambda c: c.execute("UPDATE overflow_uploads SET expires = 0 WHERE key = ?", (late["key"],)))  # fmt: skip
    assert (await _put(api, late, payload)).status == 403
    assert (await _apply(api, upload["key"])).status == 200
    emulator_server.store.write_sync(lambda c: c.execute("UPDATE overflow_uploads SET expires = 0 WHERE key = ?", (upload["key"],)))  # fmt: skip
    assert (await _apply(api, upload["key"])).status == 404


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"content_type": "text/plain", "size_bytes": 5, "rows": []}, "content_type: expected 'application/json'"),
        ({"content_type": "application/json", "size_bytes": 0, "rows": []}, "size_bytes: expected a positive integer"),
        ({"content_type": "application/json", "size_bytes": 5, "rows": []}, "rows: expected a non-empty array"),
        ({"content_type": "application/json", "size_bytes": 5, "rows": [{"object_ids": {"log_id": "g"}, "input_row": {"byte_size": 1}}]},
         "rows[0].object_ids: row needs experiment_id, dataset_id, or project_id with log_id 'g'"),
    ],
)  # fmt: skip
async def test_a_malformed_upload_request_is_a_400(api: Api, body: dict[str, Any], problem: str) -> None:
    reply = await api.call("POST", "/logs3/overflow", body)
    assert (reply.status, reply.text) == (400, problem)


async def test_uploads_name_only_objects_the_caller_may_write(api: Api) -> None:
    pid = (await api.project())["id"]
    payload = _payload(pid, [{"id": "r", "input": 1}])
    declared = [
        {"object_ids": {"project_id": pid, "log_id": "g"}, "is_delete": False, "input_row": {"byte_size": 5}}
    ]
    body = {"content_type": "application/json", "size_bytes": len(payload), "rows": declared}
    assert (await api.call("POST", "/logs3/overflow", body, key=api.emulator.other_org_key)).status == 404
    assert (await api.call("POST", "/logs3/overflow", body, key=None)).status == 401


async def test_a_payload_unlike_its_declaration_is_refused_whole(api: Api) -> None:
    pid = (await api.project())["id"]
    payload = _payload(pid, [{"id": "a", "input": 1}, {"id": "b", "input": 2}])
    upload = await _ask(api, pid, payload, rows=1)
    assert (await _put(api, upload, payload)).status == 200
    reply = await _apply(api, upload["key"])
    assert (reply.status, reply.text) == (400, "uploaded payload: expected 1 rows as declared")
    assert await api.all_rows({"from": from_object("project_logs", pid), "select": [{"op": "star"}]}) == []
