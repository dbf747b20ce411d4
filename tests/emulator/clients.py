"""The ``/btql`` requests Braintrust's own clients send, each paging an object to the end the
way that client does, so tests can check the emulator answers them as the real service does.

Field names and shapes are copied from the clients (see the reference on real clients): the
Python SDK 0.48 object fetcher (``logger.py: ObjectFetcher._refetch``) and span fetcher
(``btx/span_fetcher.py: _fetch_once``), the JavaScript SDK's dataset iteration, ``bt sync``
(BTQL text, ``sort: _pagination_key DESC``, the cursor inside the text) and
``braintrust-migrate`` (BTQL or SQL text, keyset filters on ``_pagination_key``, no cursor),
and the public walkthrough (parsed query, ``fmt: "jsonl"``, cursor from ``x-bt-cursor``).
Every page must answer 200; each function returns the rows in the order they came.
"""

from __future__ import annotations

from typing import Any

from tests.emulator.conftest import Api, Reply

Row = dict[str, Any]

#: What ``braintrust-migrate`` puts beside its query text on every request.
MIGRATE_BODY: dict[str, Any] = {
    "fmt": "json", "api_version": 1, "use_brainstore": True, "client_version": "0.4.0",
    "query_timeout_seconds": 120,
}  # fmt: skip
#: Pages after which a client loop is a bug, not a big object.
_MAX_PAGES = 200


def _source(object_type: str, object_id: str) -> dict[str, Any]:
    return {
        "op": "function",
        "name": {"op": "ident", "name": [object_type]},
        "args": [{"op": "literal", "value": object_id}],
    }


async def _post(api: Api, body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    reply = await api.call("POST", "/btql", body, headers=headers)
    assert reply.status == 200, (body, reply.status, reply.text)
    return reply


async def py_object_fetcher(api: Api, object_type: str, object_id: str, limit: int = 1000, version: str | None = None) -> list[Row]:  # fmt: skip
    """``dataset.fetch()`` / experiments / logs in the Python SDK: the cursor inside the query
    object (null on the first page), until the response's cursor is empty."""
    rows: list[Row] = []
    cursor = None
    for _ in range(_MAX_PAGES):
        body = {
            "query": {
                "select": [{"op": "star"}], "from": _source(object_type, object_id),
                "cursor": cursor, "limit": limit,
            },
            "use_columnstore": False, "brainstore_realtime": True,
            "query_source": f"py_sdk_object_fetcher_{object_type}",
            **({"version": version} if version is not None else {}),
        }  # fmt: skip
        page = (await _post(api, body, {"Accept-Encoding": "gzip"})).json
        rows += page["data"]
        if not page.get("cursor"):
            return rows
        cursor = page["cursor"]
    raise AssertionError("the object fetcher never reached the end")


async def py_span_fetcher(api: Api, project_id: str, root_span_id: str) -> list[Row]:
    """The Python SDK's span fetcher: the child spans of one trace, oldest first, one page."""
    body = {
        "query": {
            "select": [{"op": "star"}],
            "from": _source("project_logs", project_id),
            "filter": {
                "op": "and",
                "left": {
                    "op": "eq",
                    "left": {"op": "ident", "name": ["root_span_id"]},
                    "right": {"op": "literal", "value": root_span_id},
                },
                "right": {
                    "op": "ne",
                    "left": {"op": "ident", "name": ["span_parents"]},
                    "right": {"op": "literal", "value": None},
                },
            },
            "sort": [{"expr": {"op": "ident", "name": ["created"]}, "dir": "asc"}],
            "limit": 1000,
        },
        "use_columnstore": True,
        "use_brainstore": True,
        "brainstore_realtime": True,
    }
    data: list[Row] = (await _post(api, body)).json["data"]
    return data


async def js_dataset_iteration(api: Api, dataset_id: str, limit: int, version: str | None = None) -> list[Row]:  # fmt: skip
    """The JavaScript SDK iterating a dataset: the cursor inside the query, absent on the first
    page; ``version`` beside the query when pinned."""
    rows: list[Row] = []
    cursor = None
    for _ in range(_MAX_PAGES):
        query: dict[str, Any] = {
            "select": [{"op": "star"}],
            "from": _source("dataset", dataset_id),
            "limit": limit,
        }
        if cursor is not None:
            query["cursor"] = cursor
        body = {
            "query": query, "use_columnstore": False, "brainstore_realtime": True,
            "query_source": "js_sdk_object_fetcher_dataset",
            **({"version": version} if version is not None else {}),
        }  # fmt: skip
        page = (await _post(api, body)).json
        rows += page["data"]
        if not page.get("cursor"):
            return rows
        cursor = page["cursor"]
    raise AssertionError("the dataset iteration never reached the end")


async def bt_sync(api: Api, project_id: str, limit: int, filter_text: str | None = None) -> list[Row]:
    """``bt sync``: BTQL text newest first, the cursor of the previous page inside the text."""
    rows: list[Row] = []
    cursor = None
    for _ in range(_MAX_PAGES):
        parts = [
            f"select: * | from: project_logs('{project_id}') spans | limit: {limit} | sort: _pagination_key DESC"
        ]
        if filter_text is not None:
            parts.append(f"filter: {filter_text}")
        if cursor is not None:
            parts.append(f"cursor: '{cursor}'")
        page = (await _post(api, {"query": " | ".join(parts), "query_source": "bt_sync"})).json
        rows += page["data"]
        if not page.get("cursor"):
            return rows
        cursor = page["cursor"]
    raise AssertionError("bt sync never reached the end")


async def migrate_keyset(api: Api, source: str, limit: int, created_after: str | None = None, sql: bool = False) -> list[Row]:  # fmt: skip
    """``braintrust-migrate``: keyset paging on ``_pagination_key`` (no cursor), ascending,
    optionally from a ``created`` time; ``source`` is the from clause, such as
    ``project_logs('<id>')`` or ``dataset('<id1>', '<id2>')``. BTQL clauses one per line, or SQL."""
    rows: list[Row] = []
    last = None
    for _ in range(_MAX_PAGES):
        conditions = []
        if created_after is not None:
            conditions.append(f"created >= '{created_after}'")
        if last is not None:
            conditions.append(f"_pagination_key > '{last}'")
        if sql:
            where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
            call, ids = source.split("(", 1)
            text = f"SELECT * FROM {call}({ids[:-1]}, shape => 'spans'){where} ORDER BY _pagination_key ASC LIMIT {limit}"  # fmt: skip
        else:
            lines = ["select: *", f"from: {source} spans"]
            if conditions:
                lines.append(f"filter: {' and '.join(conditions)}")
            text = "\n".join([*lines, "sort: _pagination_key asc", f"limit: {limit}"])
        page = (await _post(api, {"query": text, **MIGRATE_BODY})).json["data"]
        if not page:
            return rows
        rows += page
        last = page[-1]["_pagination_key"]
    raise AssertionError("the keyset paging never reached the end")


async def walkthrough(api: Api, dataset_id: str, limit: int, version: str | None = None) -> list[Row]:
    """The public walkthrough: parsed query with the cursor inside it, ``fmt: "jsonl"``, the
    next cursor from the ``x-bt-cursor`` header."""
    rows: list[Row] = []
    cursor = None
    for _ in range(_MAX_PAGES):
        query = {
            "from": _source("dataset", dataset_id),
            "select": [{"op": "star"}],
            "limit": limit,
            "cursor": cursor,
        }
        reply = await _post(
            api, {"query": query, "fmt": "jsonl", **({"version": version} if version else {})}
        )
        rows += reply.lines
        cursor = reply.headers.get("x-bt-cursor") or reply.headers.get("x-amz-meta-bt_cursor")
        if not cursor:
            return rows
    raise AssertionError("the walkthrough loop never reached the end")
