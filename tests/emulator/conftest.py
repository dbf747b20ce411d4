"""A tiny aiohttp helper for emulator tests: status and decoded body, any key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Emulator, unique_name


@dataclass
class Reply:
    status: int
    text: str
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return orjson.loads(self.text)

    @property
    def lines(self) -> list[Any]:
        return [
            orjson.loads(line) for line in self.text.split("\n") if line
        ]  # not splitlines(): U+0085 is data


class Api:
    def __init__(self, session: aiohttp.ClientSession, emulator: Emulator) -> None:
        self.session = session
        self.emulator = emulator
        self.key = emulator.key

    async def call(self, method: str, path: str, body: Any = None, *, key: str | None = "", raw: bytes | None = None, headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> Reply:  # fmt: skip
        sent = dict(headers or {})
        key = self.key if key == "" else key
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        async with self.session.request(method, self.emulator.url + path, data=data, headers=sent, params=params) as resp:  # fmt: skip
            return Reply(resp.status, await resp.text(), dict(resp.headers))

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        reply = await self.call(method, path, body, **kw)
        assert reply.status == 200, f"{method} {path}: {reply.status} {reply.text}"
        return reply.json if reply.headers.get("Content-Type", "").startswith("application/json") else reply

    async def project(self, **kw: Any) -> dict[str, Any]:
        return await self.ok("POST", "/v1/project", {"name": unique_name("proj")}, **kw)

    async def dataset(self, project_id: str) -> dict[str, Any]:
        return await self.ok("POST", "/v1/dataset", {"project_id": project_id, "name": unique_name("ds")})

    async def insert(
        self, object_type: str, object_id: str, events: list[dict[str, Any]], **kw: Any
    ) -> list[str]:
        body = await self.ok("POST", f"/v1/{object_type}/{object_id}/insert", {"events": events}, **kw)
        row_ids: list[str] = body["row_ids"]
        return row_ids

    async def btql(self, query: dict[str, Any], **body: Any) -> Reply:
        return await self.call("POST", "/btql", {"query": query, **body})

    async def all_rows(self, query: dict[str, Any], cursor: str | None = None, **body: Any) -> list[dict[str, Any]]:  # fmt: skip
        """Page a query to the end with jsonl (from ``cursor`` if given); assert the cursor
        protocol on the way."""
        rows: list[dict[str, Any]] = []
        while True:
            extra = {"cursor": cursor} if cursor else {}
            reply = await self.btql(query, fmt="jsonl", **body, **extra)
            assert reply.status == 200, reply.text
            page = reply.lines
            if not page:
                assert "x-bt-cursor" not in reply.headers
                return rows
            rows.extend(page)
            cursor = reply.headers["x-bt-cursor"]


@pytest.fixture
async def api(emulator: Emulator) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, emulator)
