"""Benchmark: migrating a project's configuration objects, btpipe against a sequential copy.

A project of 500 functions and 500 prompts (each prompt naming a function as its tool, so the
copy must remap references and write functions first) is seeded into an emulator with no
latency, then the emulator is restarted on the same database adding 100 ms to every request.
``btpipe migrate --objects config`` copies it into a new project of another org; the
sequential copy does the same with the same client (:class:`pipeline.api.client.BraintrustClient`)
one request at a time: list, then create each object in order, remapping its references.
Reported: objects/s and MB/s (the JSON bodies written) of both, and btpipe's speed-up, whose
target is at least 5x.

    python -m bench.project [--objects 1000] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.api.objects import list_all
from pipeline.common import jsoncodec
from pipeline.common.config_kinds import BY_NAME, create_body, remap
from pipeline.emulator.auth import DEFAULT_KEYS
from pipeline.emulator.server import spawn_emulator

KEY = DEFAULT_KEYS[0].key
OTHER_KEY = next(k.key for k in DEFAULT_KEYS if k.org != DEFAULT_KEYS[0].org)
SOURCE = "bench-config-source"
CHAT = {"type": "chat", "messages": [{"role": "system", "content": "You are a careful assistant. " * 8},
                                     {"role": "user", "content": "Answer {{input}} using the tool."}]}  # fmt: skip


def _settings(url: str, key: str) -> ClientSettings:
    return ClientSettings.from_options(api_url=url, api_key=key)


async def _seed(url: str, objects: int) -> None:
    """``objects`` / 2 functions and as many prompts, each prompt naming one function."""
    async with BraintrustClient(_settings(url, KEY)) as client:
        project = await client.post_json("/v1/project", {"name": SOURCE})
        limiter = anyio.CapacityLimiter(16)

        async def one(i: int) -> None:
            async with limiter:
                function = await client.put_json("/v1/function", {
                    "project_id": project["id"], "name": f"tool {i}", "slug": f"tool-{i}", "function_type": "tool",
                    "function_data": {"type": "code", "data": {"type": "inline", "code": f"def handler(x):\n    return x + {i}",
                                      "runtime_context": {"runtime": "python", "version": "3.11"}}},
                })  # fmt: skip
                await client.put_json("/v1/prompt", {
                    "project_id": project["id"], "name": f"prompt {i}", "slug": f"prompt-{i}",
                    "prompt_data": {"prompt": CHAT, "options": {"model": "gpt-4o"},
                                    "tool_functions": [{"type": "function", "id": function["id"]}]},
                })  # fmt: skip

        async with anyio.create_task_group() as tg:
            for i in range(objects // 2):
                tg.start_soon(one, i)


async def _sequential(url: str, target: str) -> tuple[int, int]:
    """The plain copy: one request at a time. Returns (objects, body bytes)."""
    count = size = 0
    async with (
        BraintrustClient(_settings(url, KEY)) as src,
        BraintrustClient(_settings(url, OTHER_KEY)) as dst,
    ):
        project = (await src.get_json("/v1/project", {"project_name": SOURCE}))["objects"][0]
        destination = await dst.post_json("/v1/project", {"name": target})
        id_map = {project["id"]: destination["id"]}
        for name in ("function", "prompt"):
            kind = BY_NAME[name]
            assert kind.path is not None
            async for obj in list_all(src, kind.path, {"project_id": project["id"]}):
                body = create_body(kind, remap(obj, id_map), destination["id"])
                written = await dst.put_json(kind.path, body)
                id_map[obj["id"]] = written["id"]
                count += 1
                size += len(jsoncodec.dumps(body))
    return count, size


def _btpipe(url: str, target: str) -> dict[str, Any]:
    env = {**os.environ, "BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": KEY, "BENCH_OTHER_KEY": OTHER_KEY}
    args = ["migrate", "--from-project", SOURCE, "--to-project", target, "--create-project",
            "--to-api-key-env", "BENCH_OTHER_KEY", "--objects", "config", "--json", "--quiet"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"btpipe migrate failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def section(
    work: Path, targets: list[tuple[str, str, bool]], objects: int = 1000, latency_ms: float = 100
) -> list[str]:
    """Seed, then time btpipe and the sequential copy; the report lines, targets appended."""
    db = work / "project-config.db"
    db.unlink(missing_ok=True)
    with spawn_emulator(db) as url:
        anyio.run(_seed, url, objects)
    with spawn_emulator(db, "--latency-ms", str(latency_ms)) as url:
        started = time.monotonic()
        summary = _btpipe(url, "bench-config-btpipe")
        btpipe_seconds = time.monotonic() - started
        written = sum(c["created"] for c in summary["config"])
        started = time.monotonic()
        count, size = anyio.run(_sequential, url, "bench-config-sequential")
        plain_seconds = time.monotonic() - started
    if written != count:
        raise SystemExit(f"btpipe created {written} objects, the sequential copy {count}")
    mb = size / 2**20
    ratio = plain_seconds / btpipe_seconds
    title = f"## Migrate of {count:,} prompts and functions, emulator latency {latency_ms:g} ms"
    lines = [
        title,
        "",
        "| contender | seconds | objects/s | MB/s |",
        "|---|---:|---:|---:|",
        f"| btpipe migrate --objects config | {btpipe_seconds:.1f} | {count / btpipe_seconds:,.1f} | {mb / btpipe_seconds:.3f} |",
        f"| sequential copy, same client | {plain_seconds:.1f} | {count / plain_seconds:,.1f} | {mb / plain_seconds:.3f} |",
        "",
        f"btpipe: {ratio:.1f}x the sequential copy ({mb:.1f} MB of request bodies)",
        "",
    ]  # fmt: skip
    print("\n".join(lines), flush=True)
    targets.append(
        (f"configuration migrate at 5x the sequential copy, {latency_ms:g} ms", f"{ratio:.1f}x", ratio >= 5)
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=100)
    args = parser.parse_args()
    targets: list[tuple[str, str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="btpipe-bench-project-") as work:
        section(Path(work), targets, args.objects, args.latency_ms)
    for name, value, ok in targets:
        print(f"{'ok ' if ok else 'MISSED'} {name}: {value}")
    sys.exit(0 if all(ok for _, _, ok in targets) else 1)


if __name__ == "__main__":
    main()
