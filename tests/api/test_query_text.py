"""``query_pages``: a user's text (BTQL or SQL) goes out as a parsed query object, the cursor
inside it and ``version`` beside it, as the SDKs page; checked on the wire against a fake
server that pages by an offset cursor.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from pipeline.api.btql import QUERY_SOURCE, parse_text, query_pages
from pipeline.api.client import BraintrustClient
from tests.api.test_client import answer, serve, settings

ROWS = [{"id": f"r{i}"} for i in range(5)]


async def paged(request: web.Request, n: int) -> web.StreamResponse:
    query = orjson.loads(await request.read())["query"]
    start = int(query.get("cursor") or 0)
    page = ROWS[start : start + query["limit"]]
    cursor = str(start + len(page)) if page else None
    headers = {"x-bt-cursor": cursor} if cursor else None
    return answer(200, orjson.dumps({"data": page, "cursor": cursor}), headers)


@pytest.mark.parametrize(
    "text",
    ["select: id | from: project_logs('p1') | limit: 2", "SELECT id FROM project_logs('p1') LIMIT 2"],
    ids=["btql", "sql"],
)
async def test_the_cursor_goes_inside_the_parsed_query(text: str) -> None:
    async with serve(paged) as fake, BraintrustClient(settings(fake.url)) as client:
        pages = [page async for page in query_pages(client, parse_text(text), page_all=True, version="77")]
    assert pages == [ROWS[0:2], ROWS[2:4], ROWS[4:5]]
    bodies: list[dict[str, Any]] = [seen.json() for seen in fake.hits("/btql")]
    assert [b["query"].get("cursor") for b in bodies] == [None, "2", "4", "5"]
    for body in bodies:
        assert isinstance(body["query"], dict) and body["query"]["limit"] == 2
        assert body["query"]["from"]["args"] == [{"op": "literal", "value": "p1"}]
        assert "cursor" not in body and body["version"] == "77"
        assert (body["fmt"], body["query_source"], body["brainstore_realtime"]) == (
            "json",
            QUERY_SOURCE,
            True,
        )
