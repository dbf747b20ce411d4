"""Sequential reads (migrate, verify, delete) through ``pin_read``, on both profiles.

Deletes leave no visible row, so after deletes the newest row predates them, and a read
pinned at its version brings the deleted rows back: a migrate would copy them into the
destination and a verify would miss them there. A read is pinned only where the server
counts at the version, which shows whether newer deletes happened; anything else is read as
one cursor without a version, which the server pins at its first page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import orjson

from pipeline.api.btql import Pager, build_query
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.api.snapshot import PinnedRead, pin_read
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, unique


def seeded(emu: Emulator, deleted: range) -> dict[str, Any]:
    """A project whose 60 log rows came in three writes, then ``deleted`` rows deleted."""
    project: dict[str, Any] = post(emu.url, emu.key, "/v1/project", {"name": unique("pin")})
    for start in range(0, 60, 20):
        insert(emu.url, emu.key, "project_logs", project["id"],
               [{"id": f"p{i:02d}", "input": i} for i in range(start, start + 20)])  # fmt: skip
    if deleted:
        insert(emu.url, emu.key, "project_logs", project["id"],
               [{"id": f"p{i:02d}", "_object_delete": True} for i in deleted])  # fmt: skip
    return project


def read(emu: Emulator, project: dict[str, Any]) -> tuple[PinnedRead, list[str]]:
    """``pin_read`` of the project's logs, then every row id its read returns, in order."""

    async def main() -> tuple[PinnedRead, list[str]]:
        async with BraintrustClient(ClientSettings(api_url=emu.url, api_key=emu.key)) as client:
            query = build_query("project_logs", project["id"])
            snap = await pin_read(client, query)
            pager = Pager(client, query, version=snap.version, limit=7, max_limit=7)
            ids = [orjson.loads(line)["id"] async for page in pager.pages() for line in page.raw.splitlines()]
            return snap, ids

    return anyio.run(main)


def test_a_read_is_pinned_exactly_where_the_server_counts_at_a_version(profiled_emulator: Emulator) -> None:
    emu = profiled_emulator
    project = seeded(emu, range(0))
    snap, ids = read(emu, project)
    now = all_rows(emu.url, emu.key, "project_logs", project["id"])
    assert sorted(ids) == sorted(now) and len(ids) == 60
    if emu.conservative:
        assert snap == PinnedRead(None, 60, exact=False)
    else:
        assert snap == PinnedRead(max(r["_xact_id"] for r in now.values()), 60, exact=True)


def test_rows_deleted_by_the_newest_writes_stay_deleted(profiled_emulator: Emulator) -> None:
    emu = profiled_emulator
    project = seeded(emu, range(0, 60, 4))
    snap, ids = read(emu, project)
    assert sorted(ids) == [f"p{i:02d}" for i in range(60) if i % 4]
    assert snap == PinnedRead(None, 45, exact=False)


def test_migrate_and_verify_after_deletes(profiled_emulator: Emulator, tmp_path: Path) -> None:
    emu = profiled_emulator
    project = seeded(emu, range(1, 60, 3))
    destination = unique("pin-dst")
    migrated = btpipe(emu, "migrate", "--from-project", project["name"], "--to-project", destination,
                      "--create-project", "--objects", "logs", "--state-dir", str(tmp_path), "--quiet")  # fmt: skip
    assert migrated.exit_code == 0, migrated.output
    copy = post(emu.url, emu.key, "/v1/project", {"name": destination})
    assert sorted(all_rows(emu.url, emu.key, "project_logs", copy["id"])) == [
        f"p{i:02d}" for i in range(60) if i % 3 != 1
    ]
    checked = btpipe(emu, "verify", "--project", project["name"], "--to-project", destination,
                     "--objects", "logs", "--json")  # fmt: skip
    assert checked.exit_code == 0, checked.output
    assert [(o["source_rows"], o["destination_rows"]) for o in orjson.loads(checked.stdout)["objects"]] == [
        (40, 40)
    ]
