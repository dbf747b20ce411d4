"""The capability probe against both emulator profiles: exact answers, asked once per API URL.

Requests are counted by the client's own statistics (every request it sends, retries
included), so "no probe" means no request at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from pipeline.api import capabilities as caps_module
from pipeline.api.capabilities import Capabilities, capabilities, probe
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.querylang.ast import from_object
from tests.conftest import Emulator
from tests.helpers import insert, post, unique


@pytest.fixture(autouse=True)
def no_cached_answers() -> Iterator[None]:
    caps_module.forget()
    yield
    caps_module.forget()


def logs_of(emu: Emulator) -> dict[str, Any]:
    project = post(emu.url, emu.key, "/v1/project", {"name": unique("probe")})
    insert(emu.url, emu.key, "project_logs", project["id"], [{"id": "a", "input": 1}])
    return from_object("project_logs", project["id"])


def client_of(emu: Emulator) -> BraintrustClient:
    return BraintrustClient(ClientSettings(api_url=emu.url, api_key=emu.key))


def test_the_probe_answers_what_the_profile_serves(profiled_emulator: Emulator) -> None:
    source = logs_of(profiled_emulator)

    async def main() -> tuple[Capabilities, int]:
        async with client_of(profiled_emulator) as client:
            found = await probe(client, source)
            return found, client.statistics().requests

    found, requests = anyio.run(main)
    served = not profiled_emulator.conservative
    assert found == Capabilities(xact_filters=served, count_at_version=served)
    assert requests == 2  # two tiny queries, sent together


async def ask_at_once(emu: Emulator, source: dict[str, Any]) -> tuple[Capabilities, int]:
    """Three questions at once through a new client (the cache outlives it): the answer and
    the requests the client sent."""
    answers: list[Capabilities] = []
    async with client_of(emu) as client:

        async def ask() -> None:
            answers.append(await capabilities(client, source))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(ask)
        assert len(set(answers)) == 1
        return answers[0], client.statistics().requests


def test_answers_are_cached_per_api_url(emulator: Emulator, conservative_emulator: Emulator) -> None:
    """Asked at once, answered by one probe; asked again, by none; another URL, probed apart."""
    default_logs, conservative_logs = logs_of(emulator), logs_of(conservative_emulator)

    async def main() -> list[tuple[Capabilities, int]]:
        order = [(emulator, default_logs), (emulator, default_logs), (conservative_emulator, conservative_logs),
                 (emulator, default_logs), (conservative_emulator, conservative_logs)]  # fmt: skip
        return [await ask_at_once(emu, source) for emu, source in order]

    full, proven = Capabilities(True, True), Capabilities(False, False)
    assert anyio.run(main) == [(full, 2), (full, 0), (proven, 2), (full, 0), (proven, 0)]
