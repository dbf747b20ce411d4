"""Which read patterns a deployment serves beyond what Braintrust's own clients use.

btpipe reads through patterns an official client or the public walkthrough uses, which the
real service is known to answer (see docs/api-patterns.md): parsed query objects with the
cursor inside the query and ``version`` beside it (the SDKs' object fetcher), sorts on
``_pagination_key`` (``bt sync``), keyset filters on ``_pagination_key`` and filters on
``created`` (``braintrust-migrate``), plain ``count(1)`` measures (the walkthrough). Two more
make exports faster and self-checking, and are used only once a probe has shown the server
serves them:

- ``xact_filters``: comparisons on ``_xact_id`` in a filter. Parallel ranges then split an
  object's write history, and incremental runs select by version; without them ranges split
  by ``_pagination_key`` (or ``created``) and incremental runs select by ``_pagination_key``.
- ``count_at_version``: ``count(1)`` at a pinned ``version``. A run then knows exactly how
  many rows its snapshot holds and fails when it wrote another number; without it a run
  proves completeness page by page only.

The probe is two tiny queries sent together on the project's logs, answered once per API
URL and process. A 400 means "not served"; any other failure is a real error and surfaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from pipeline.api.btql import TIMED_OUT, request_body
from pipeline.api.client import BadRequestError, BraintrustClient, PageTooLargeError
from pipeline.querylang.ast import binary, function, ident, literal


@dataclass(frozen=True)
class Capabilities:
    """What a probe found a deployment serves (see the module docstring)."""

    xact_filters: bool
    count_at_version: bool

    def to_json(self) -> dict[str, Any]:
        return {"xact_filters": self.xact_filters, "count_at_version": self.count_at_version}


#: Only what every deployment serves: what a run assumes before (or without) a probe.
PROVEN_ONLY = Capabilities(xact_filters=False, count_at_version=False)

_CACHE: dict[str, Capabilities] = {}
_LOCKS: dict[str, anyio.Lock] = {}


async def capabilities(client: BraintrustClient, source: dict[str, Any]) -> Capabilities:
    """The capabilities of ``client``'s deployment, probed on first use (on the object
    ``source`` names, a query's ``from``) and then cached."""
    key = client.base_url
    lock = _LOCKS.setdefault(key, anyio.Lock())
    async with lock:
        if key not in _CACHE:
            _CACHE[key] = await probe(client, source)
        return _CACHE[key]


async def probe(client: BraintrustClient, source: dict[str, Any]) -> Capabilities:
    """Ask the two questions at once (one round trip) on the object ``source`` names."""
    source = {k: v for k, v in source.items() if k != "shape"}
    questions: dict[str, tuple[dict[str, Any], str | None]] = {
        "xact_filters": (
            {
                "from": source,
                "select": [{"alias": "id", "expr": ident("id")}],
                "filter": binary("gt", ident("_xact_id"), literal("0")),
                "limit": 1,
            },
            None,
        ),
        "count_at_version": (
            {"from": source, "measures": [{"alias": "n", "expr": function("count", literal(1))}]},
            "0",
        ),
    }
    answers: dict[str, bool] = {}

    async def ask(name: str, query: dict[str, Any], version: str | None) -> None:
        try:  # a scan a busy server times out (504) is not retried: the answer is no
            await client.post_raw(
                "/btql", request_body(query, fmt="json", version=version), shrink_on=TIMED_OUT
            )
        except (BadRequestError, PageTooLargeError):
            answers[name] = False
        else:
            answers[name] = True

    async with anyio.create_task_group() as tg:
        for name, (query, version) in questions.items():
            tg.start_soon(ask, name, query, version)
    return Capabilities(**answers)


def forget() -> None:
    """Drop every cached answer (tests switch one server between profiles)."""
    _CACHE.clear()
