"""Range planning: the ranges of a snapshot are disjoint, ordered and cover it, by
``_xact_id`` and by ``created``; and the server reads each ``created`` range as planned.

``created`` is a time, whatever its spelling: a row whose ``created`` equals a boundary,
written with another offset, falls in exactly one range, the one whose lower bound it is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import anyio
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pipeline.api.btql import run_query
from pipeline.api.capabilities import Capabilities
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.api.snapshot import Range, Since, Snapshot, counted, plan_ranges
from pipeline.querylang.ast import from_object
from tests.conftest import Emulator
from tests.helpers import insert, post, unique

XACT = Capabilities(xact_filters=True, count_at_version=True)
CREATED = Capabilities(xact_filters=False, count_at_version=False)
FIRST = 1_000_000_000_000_000_000


def in_xact(rng: Range, xact: int) -> bool:
    return (rng.low is None or xact > int(rng.low)) and (rng.high is None or xact <= int(rng.high))


@settings(max_examples=300, deadline=None)
@given(
    oldest=st.integers(FIRST, FIRST + 10_000),
    length=st.integers(0, 10_000),
    since=st.none() | st.integers(0, 10_000),
    wanted=st.integers(1, 40),
    probes=st.lists(st.integers(-5, 10_005), max_size=30),
)
@example(oldest=FIRST, length=0, since=None, wanted=8, probes=[])
@example(oldest=FIRST, length=1, since=None, wanted=8, probes=[])
def test_xact_ranges_split_the_history_up_to_the_version(
    oldest: int, length: int, since: int | None, wanted: int, probes: list[int]
) -> None:
    version = oldest + length
    last = None if since is None else min(version - 1, oldest - 5 + since)
    # keys of no known form, so the ranges split by version
    snap = Snapshot(version=str(version), newest_key="pz", oldest_version=str(oldest))
    ranges = plan_ranges(snap, wanted, XACT, Since(None if last is None else str(last), "pa"))
    assert 1 <= len(ranges) <= wanted
    assert all(r.by == "_xact_id" for r in ranges)
    assert ranges[0].low == (None if last is None else str(last))
    assert ranges[-1].high == str(version)
    for before, after in pairwise(ranges):
        assert before.high == after.low  # they meet: nothing between, nothing twice
    assert all(r.low is None or int(r.low) < int(r.high or 0) for r in ranges)  # none empty, in order
    floor = oldest - 1 if last is None else last
    highs = [int(r.high) for r in ranges if r.high is not None]
    for xact in [oldest, version, version + 1, floor, floor + 1, *highs, *(h + 1 for h in highs),
                 *(oldest + p for p in probes)]:  # fmt: skip
        holders = [r for r in ranges if in_xact(r, xact)]
        wanted_here = xact <= version and (last is None or xact > last)
        assert len(holders) == (1 if wanted_here else 0), (xact, ranges)


@settings(max_examples=200, deadline=None)
@given(
    oldest=st.integers(0, 10**6),
    length=st.integers(0, 10**6),
    since=st.none() | st.integers(0, 10**6),
    wanted=st.integers(1, 40),
    caps=st.sampled_from([XACT, CREATED]),
    probes=st.lists(st.integers(0, 3 * 10**6), max_size=30),
)
def test_key_ranges_come_first_and_cover_every_key_once(
    oldest: int, length: int, since: int | None, wanted: int, caps: Capabilities, probes: list[int]
) -> None:
    """Keys of the known form split the rows evenly whatever each version holds (a bulk
    insert writes thousands of rows in one version), so they are preferred even where the
    server compares versions; the ranges meet, and every key falls in exactly one."""
    key = lambda n: f"p{n:020d}"  # noqa: E731
    newest = oldest + length
    snap = Snapshot(version="1000000000000000005", newest_key=key(newest), oldest_key=key(oldest),
                    oldest_version="1000000000000000001")  # fmt: skip
    last = None if since is None else Since("1000000000000000003", key(min(since, newest)))
    ranges = plan_ranges(snap, wanted, caps, last or Since())
    assert 1 <= len(ranges) <= wanted
    assert all(r.by == "_pagination_key" for r in ranges)
    assert ranges[0].low is None and ranges[-1].high is None
    for before, after in pairwise(ranges):
        assert before.high == after.low and before.high is not None
    for n in [oldest, newest, *probes]:
        holders = [
            r for r in ranges if (r.low is None or key(n) > r.low) and (r.high is None or key(n) <= r.high)
        ]
        assert len(holders) == 1, (n, ranges)


ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-8)),
                         timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(minutes=-1))])  # fmt: skip
TIMES = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC))


def spelled(moment: datetime, zone: timezone, style: int) -> str:
    """``moment`` in ``zone``, in one of the ISO spellings clients write."""
    local = moment.astimezone(zone)
    text = local.isoformat(timespec=("microseconds", "milliseconds", "auto")[style % 3])
    return text.replace("+00:00", "Z") if style % 2 else text


def as_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def in_created(rng: Range, moment: datetime) -> bool:
    return (rng.low is None or as_time(rng.low) <= moment) and (
        rng.high is None or moment < as_time(rng.high)
    )


@settings(max_examples=300, deadline=None)
@given(
    oldest=TIMES,
    span=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=900)),
    zones=st.tuples(ZONES, ZONES, ZONES),
    styles=st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
    wanted=st.integers(1, 40),
    probes=st.lists(TIMES, max_size=20),
)
def test_created_ranges_cover_every_time_once(
    oldest: datetime,
    span: timedelta,
    zones: tuple[timezone, timezone, timezone],
    styles: tuple[int, int, int],
    wanted: int,
    probes: list[datetime],
) -> None:
    newest = oldest + span
    assume(newest.year < 2100)
    snap = Snapshot(
        version=str(FIRST),
        earliest_created=spelled(oldest, zones[0], styles[0]),
        latest_created=spelled(newest, zones[1], styles[1]),
    )
    ranges = plan_ranges(snap, wanted, CREATED, Since())
    assert 1 <= len(ranges) <= wanted
    assert all(r.by == "created" for r in ranges)
    assert ranges[0].low is None and ranges[-1].high is None  # open ends: any created at all
    for before, after in pairwise(ranges):
        assert before.high == after.low is not None
    bounds = [as_time(r.low) for r in ranges[1:] if r.low is not None]
    assert bounds == sorted(set(bounds))  # strictly increasing
    assert all(oldest < b <= newest for b in bounds)
    # Every time falls in one range: the bounds themselves (the range above holds them), a
    # microsecond either side, the oldest and newest rows, anything.
    edge = timedelta(microseconds=1)
    moments = [oldest, newest, *probes, *bounds, *(b - edge for b in bounds), *(b + edge for b in bounds)]
    for moment in moments:
        holders = [r for r in ranges if in_created(r, moment)]
        assert len(holders) == 1, (spelled(moment, zones[2], styles[2]), ranges)
    for bound, rng in zip(bounds, ranges[1:], strict=True):
        assert [r for r in ranges if in_created(r, bound)] == [rng]


def test_created_ranges_without_usable_times_are_one_open_range() -> None:
    for oldest, newest in [(None, None), ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00"),
                           ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"), ("2026-01-01T00:00:00", "soon")]:  # fmt: skip
        snap = Snapshot(version=str(FIRST), earliest_created=oldest, latest_created=newest)
        assert plan_ranges(snap, 8, CREATED, Since()) == [Range("created")]
    assert plan_ranges(Snapshot(version=None), 8, CREATED, Since()) == []


def test_the_server_reads_each_created_range_as_planned(conservative_emulator: Emulator) -> None:
    """Rows whose ``created`` sits on a boundary (in three spellings) or a microsecond either
    side, and far outside, each counted by the server in exactly one planned range."""
    emu = conservative_emulator
    project = post(emu.url, emu.key, "/v1/project", {"name": unique("created-ranges")})
    oldest, newest = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 8, 3, tzinfo=UTC)
    snap = Snapshot(
        version=str(FIRST),
        earliest_created=spelled(oldest, timezone(timedelta(hours=9)), 0),
        latest_created=spelled(newest, timezone(timedelta(hours=-3)), 2),
    )
    ranges = plan_ranges(snap, 6, CREATED, Since())
    assert len(ranges) == 6
    bounds = [as_time(r.low) for r in ranges if r.low is not None]
    edge = timedelta(microseconds=1)
    moments = [datetime(1999, 1, 1, tzinfo=UTC), oldest, newest, datetime(2199, 1, 1, tzinfo=UTC)]
    moments += [m for b in bounds for m in (b - edge, b, b + edge)]
    zones = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-8))]
    events = [
        {"id": f"t{i}-{j}", "created": spelled(moment, zone, j)}
        for i, moment in enumerate(moments)
        for j, zone in enumerate(zones)
    ]
    insert(emu.url, emu.key, "project_logs", project["id"], events)

    async def counts() -> list[int]:
        async with BraintrustClient(ClientSettings(api_url=emu.url, api_key=emu.key)) as client:
            source = from_object("project_logs", project["id"])
            return [
                int((await run_query(client, counted(source, r.expr()))).json()["data"][0]["n"])
                for r in ranges
            ]

    found = anyio.run(counts)
    expected = [sum(1 for m in moments if in_created(r, m)) * len(zones) for r in ranges]
    assert found == expected and sum(found) == len(events)


@pytest.mark.parametrize("caps", [XACT, CREATED])
def test_since_selects_by_what_the_server_serves(caps: Capabilities) -> None:
    since = Since(version="1000000000000000007", key="p00000000000000000042")
    field, value = since.bound(caps)
    assert (field, value) == (
        ("_xact_id", "1000000000000000007")
        if caps.xact_filters
        else ("_pagination_key", "p00000000000000000042")
    )
    assert Since(version="1000000000000000007").bound(CREATED) == (None, None)  # reads everything again
