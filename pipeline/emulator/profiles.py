"""Capability profiles: how much of ``/btql`` the emulator serves.

The ``default`` profile serves every query the compiler can run. The ``conservative``
profile refuses, with a 400 naming the feature, what no official client is known to send
(see the reference on real clients), so a deployment that does not support it can be
tested against: aggregates over ``_xact_id`` (``max(_xact_id)``), comparisons on
``_xact_id`` in filters, and aggregates at a pinned ``version``. Everything the official
clients send is served by both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pipeline.emulator.query import QueryError
from pipeline.querylang.ast import AGGREGATE_FUNCTIONS

PROFILES: Final = ("default", "conservative")
_COMPARISONS: Final = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "in"})
_XACT: Final = {"op": "ident", "name": ["_xact_id"]}
_REFUSED: Final = "is refused by the conservative profile: no official client sends it"


@dataclass(frozen=True)
class ReadPolicy:
    """What a deployment serves on ``/btql``: its profile, and how many rows one query may
    scan before it times out (``None``: no limit)."""

    profile: str = "default"
    query_timeout_rows: int | None = None

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r} (use {' or '.join(PROFILES)})")
        if self.query_timeout_rows is not None and self.query_timeout_rows < 0:
            raise ValueError("query_timeout_rows must be 0 or more")


def check_profile(policy: ReadPolicy, query: dict[str, Any], pinned: bool) -> None:
    """Refuse what ``policy.profile`` does not serve (nothing for ``default``)."""
    if policy.profile != "conservative":
        return
    outputs = [item for key in ("select", "dimensions", "measures") for item in _list(query.get(key))]
    if any(_aggregates_xact(item) for item in outputs):
        raise QueryError(f"an aggregate over _xact_id (such as max(_xact_id)) {_REFUSED}")
    if _compares_xact(query.get("filter")):
        raise QueryError(f"a comparison on _xact_id in a filter {_REFUSED}")
    if pinned and ("dimensions" in query or "measures" in query):
        raise QueryError(f"an aggregate (such as count(1)) at a pinned version {_REFUSED}")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node.values())
    return _list(node)


def _mentions_xact(node: Any) -> bool:
    return node == _XACT or any(_mentions_xact(child) for child in _children(node))


def _aggregates_xact(node: Any) -> bool:
    if isinstance(node, dict) and node.get("op") == "function":
        name = node.get("name")
        path = name.get("name") if isinstance(name, dict) else None
        is_aggregate = (
            isinstance(path, list) and len(path) == 1 and str(path[0]).lower() in AGGREGATE_FUNCTIONS
        )
        if is_aggregate and _mentions_xact(node.get("args")):
            return True
    return any(_aggregates_xact(child) for child in _children(node))


def _compares_xact(node: Any) -> bool:
    if (
        isinstance(node, dict)
        and node.get("op") in _COMPARISONS
        and _XACT in (node.get("left"), node.get("right"))
    ):
        return True
    return any(_compares_xact(child) for child in _children(node))
