"""Paging of every list route: ``limit``, ``starting_after``, ``ending_before``, ``ids``.

Lists are newest first. ``starting_after`` gives the objects after (older than) the anchor id,
``ending_before`` those before (newer than) it, the ones nearest the anchor when a ``limit``
cuts them; the two are mutually exclusive, as the spec says. Generated clients page with
``starting_after`` set to the last id of a page until a page comes back empty, so a route that
ignored it would make them loop for ever.

Generated clients send array parameters comma separated (``ids=a,b``); the spec's form is the
parameter repeated. Both are read, for ids and for the multi-valued name filters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from multidict import MultiMapping

from pipeline.emulator.objects import NotFound
from pipeline.emulator.validate import BadRequest, uuid_string

T = TypeVar("T", bound=dict[str, Any])

#: The largest integer SQLite holds: a bigger ``limit`` means the same (every object).
MAX_LIMIT: Final = 2**63 - 1


@dataclass(frozen=True)
class Paging:
    limit: int | None = None
    starting_after: str | None = None
    ending_before: str | None = None
    ids: tuple[str, ...] = ()


def multi(query: MultiMapping[str], name: str) -> tuple[str, ...]:
    """Every value of ``name`` (also sent as ``name[]``), comma separated lists split."""
    raw = [*query.getall(name, []), *query.getall(f"{name}[]", [])]
    return tuple(part for value in raw for part in value.split(",") if part)


def parse(query: MultiMapping[str]) -> Paging:
    """The paging parameters of a list request; 400 on a malformed one."""
    limit = query.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit()):
        raise BadRequest("limit: expected a non-negative integer")
    ids = multi(query, "ids")
    for i in ids:
        uuid_string(i, "ids")
    for anchor in ("starting_after", "ending_before"):
        if anchor in query:
            uuid_string(query[anchor], anchor)
    if "starting_after" in query and "ending_before" in query:
        raise BadRequest("starting_after and ending_before cannot be combined")
    return Paging(
        limit=min(int(limit), MAX_LIMIT) if limit is not None else None,
        starting_after=query.get("starting_after"),
        ending_before=query.get("ending_before"),
        ids=ids,
    )


def page(
    items: Sequence[T], paging: Paging, what: str, keep: Callable[[T], bool] = lambda _: True
) -> list[T]:
    """One page of ``items`` (all the caller may see, newest first) kept by ``keep`` and
    ``paging.ids``. The anchor is looked up among all ``items``, filtered or not, like the
    database lists do; an anchor the caller cannot see is a 404."""
    ids = set(paging.ids)

    def wanted(item: T) -> bool:
        return (not ids or item["id"] in ids) and keep(item)

    anchor = paging.starting_after or paging.ending_before
    if anchor is None:
        found = [i for i in items if wanted(i)]
        return found[: paging.limit] if paging.limit is not None else found
    at = next((n for n, item in enumerate(items) if item["id"] == anchor), None)
    if at is None:
        raise NotFound(f"{what} {anchor} not found")
    if paging.starting_after is not None:
        after = [i for i in items[at + 1 :] if wanted(i)]
        return after[: paging.limit] if paging.limit is not None else after
    before = [i for i in items[:at] if wanted(i)]
    return before[len(before) - paging.limit :] if paging.limit is not None else before
