"""The ceiling: download the same pages btpipe reads, as fast as possible, and throw them away.

Same snapshot, same ``_xact_id`` ranges, same concurrency as btpipe's defaults (8 ranges); no parsing,
no files. Usage: python bench/ceiling.py URL KEY OBJECT_TYPE OBJECT_ID [RANGES]
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp


def ident(name: str) -> dict[str, Any]:
    return {"op": "ident", "name": [name]}


def call(name: str, arg: dict[str, Any]) -> dict[str, Any]:
    return {"op": "function", "name": ident(name), "args": [arg]}


def compare(op: str, value: int) -> dict[str, Any]:
    return {"op": op, "left": ident("_xact_id"), "right": {"op": "literal", "value": str(value)}}


def source(object_type: str, object_id: str) -> dict[str, Any]:
    return {"op": "function", "name": ident(object_type), "args": [{"op": "literal", "value": object_id}]}


async def main() -> None:
    url, key, object_type, object_id = sys.argv[1:5]
    ranges = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "identity"}
    async with aiohttp.ClientSession(headers=headers) as session:
        agg = {
            "from": source(object_type, object_id),
            "measures": [
                {"alias": "hi", "expr": call("max", ident("_xact_id"))},
                {"alias": "lo", "expr": call("min", ident("_xact_id"))},
            ],
        }
        async with session.post(url + "/btql", json={"query": agg, "fmt": "json"}) as resp:
            row = (await resp.json())["data"][0]
        lo, hi = int(row["lo"]) - 1, int(row["hi"])
        bounds = [lo + (hi - lo) * i // ranges for i in range(ranges + 1)]
        totals = [0, 0]

        async def page_range(low: int, high: int) -> None:
            cursor = None
            flt = {
                "op": "and",
                "children": [
                    compare("gt", low),
                    compare("le", high),
                ],
            }
            while True:
                query = {
                    "from": source(object_type, object_id),
                    "select": [{"op": "star"}],
                    "filter": flt,
                    "limit": 1000,
                }
                if cursor:
                    query["cursor"] = cursor
                async with session.post(
                    url + "/btql", json={"query": query, "fmt": "jsonl", "version": str(hi)}
                ) as resp:
                    body = await resp.read()
                    cursor = resp.headers.get("x-bt-cursor")
                rows = body.count(b"\n") + (0 if not body or body.endswith(b"\n") else 1)
                totals[0] += rows
                totals[1] += len(body)
                if rows == 0 or not cursor:
                    return

        await asyncio.gather(*(page_range(bounds[i], bounds[i + 1]) for i in range(ranges)))
    print(json.dumps({"rows": totals[0], "bytes": totals[1]}))


if __name__ == "__main__":
    asyncio.run(main())
