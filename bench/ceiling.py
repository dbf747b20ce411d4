"""The ceiling: download the same pages btpipe reads, as fast as possible, and throw them away.

Same snapshot, same ranges (planned by btpipe's own planner, so split as btpipe's are on
either profile), RANGES at once (btpipe's widest default unless told; the benchmark measures
several and takes the fastest); no parsing, no files.
Usage: python bench/ceiling.py URL KEY OBJECT_TYPE OBJECT_ID [RANGES]
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp

from pipeline.api.capabilities import capabilities
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.api.snapshot import Range, Since, plan_ranges, take_snapshot
from pipeline.common.defaults import RANGE_WORKERS
from pipeline.querylang.ast import from_object


async def plan(
    url: str, key: str, object_type: str, object_id: str, wanted: int
) -> tuple[str | None, list[Range]]:
    source = from_object(object_type, object_id)
    async with BraintrustClient(ClientSettings(api_url=url, api_key=key)) as client:
        caps = await capabilities(client, source)
        snap = await take_snapshot(client, source, None, by_created=not caps.xact_filters)
    return snap.version, plan_ranges(snap, wanted, caps, Since())


async def main() -> None:
    url, key, object_type, object_id = sys.argv[1:5]
    wanted = int(sys.argv[5]) if len(sys.argv) > 5 else RANGE_WORKERS
    version, ranges = await plan(url, key, object_type, object_id, wanted)
    headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "identity"}
    totals = [0, 0]
    async with aiohttp.ClientSession(headers=headers) as session:

        async def page_range(rng: Range) -> None:
            cursor = None
            while True:
                query: dict[str, Any] = {
                    "from": from_object(object_type, object_id),
                    "select": [{"op": "star"}],
                    "limit": 1000,
                }
                if (flt := rng.expr()) is not None:
                    query["filter"] = flt
                if cursor:
                    query["cursor"] = cursor
                async with session.post(
                    url + "/btql", json={"query": query, "fmt": "jsonl", "version": version}
                ) as resp:
                    body = await resp.read()
                    cursor = resp.headers.get("x-bt-cursor")
                rows = body.count(b"\n") + (0 if not body or body.endswith(b"\n") else 1)
                totals[0] += rows
                totals[1] += len(body)
                if rows == 0 or not cursor:
                    return

        await asyncio.gather(*(page_range(rng) for rng in ranges))
    print(json.dumps({"rows": totals[0], "bytes": totals[1]}))


if __name__ == "__main__":
    asyncio.run(main())
