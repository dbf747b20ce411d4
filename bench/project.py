"""Benchmark: migrating a whole project, btpipe against a sequential copy.

The project holds 500 functions and 500 prompts (each prompt naming a function as its tool,
so the copy must remap references and write functions first) and 2,000 log rows, each
referring to its own 200 KB attachment. It is seeded into an emulator with no latency (the
attachments and rows straight into its store), then the emulator is restarted on the same
database adding 100 ms to every request. ``btpipe migrate --objects logs,config`` copies it
into a new project of another org. The sequential copy uses the same client
(:class:`pipeline.api.client.BraintrustClient`) one request at a time: it lists the functions
and prompts and creates each in order, remapping its references; then, per row, it copies the
row's attachment (download streamed into the upload, as btpipe does) and inserts the row with
its reference rewritten. Its configuration part runs whole; its attachment part runs on the
first ``--sample`` rows and is extrapolated to all of them, as it is one request pattern
repeated (the whole of it would take about 20 minutes).

Reported: objects/s (prompts, functions and attachments) and MB/s (attachment bytes and
configuration bodies) of both, and btpipe's speed-up, whose target is at least 5x.

    python -m bench.project [--objects 1000] [--attachments 2000] [--attachment-kb 200]
                            [--sample 100] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from pipeline.api import attachments as transfer
from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.api.objects import list_all
from pipeline.common import jsoncodec
from pipeline.common.attachments import Reference
from pipeline.common.config_kinds import BY_NAME, create_body, remap
from pipeline.emulator import attachments as stored
from pipeline.emulator.auth import DEFAULT_KEYS
from pipeline.emulator.rowwrite import Target
from pipeline.emulator.sample import bulk_load
from pipeline.emulator.server import spawn_emulator
from pipeline.emulator.store import Store

KEY = DEFAULT_KEYS[0].key
OTHER_KEY = next(k.key for k in DEFAULT_KEYS if k.org != DEFAULT_KEYS[0].org)
SOURCE = "bench-project-source"
CHAT = {"type": "chat", "messages": [{"role": "system", "content": "You are a careful assistant. " * 8},
                                     {"role": "user", "content": "Answer {{input}} using the tool."}]}  # fmt: skip
MB = 2**20


def _settings(url: str, key: str) -> ClientSettings:
    return ClientSettings.from_options(api_url=url, api_key=key)


async def _seed_config(url: str, objects: int) -> None:
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


def _seed_attachments(db: Path, count: int, size: int) -> None:
    """``count`` log rows, each referring to its own attachment of ``size`` random bytes,
    written straight into the emulator's store (the upload flow is what is measured, not seeded)."""
    rng = random.Random(16)
    store = Store(str(db))
    try:
        org_id, project_id = store.read_sync(lambda c: c.execute(
            "SELECT org_id, id FROM objects WHERE kind = 'project' AND name = ?", (SOURCE,)).fetchone())  # fmt: skip
        events = []
        for i in range(count):
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            data = rng.randbytes(size)
            store.write_sync(
                lambda c, k=key, d=data, n=i: stored.store_bytes(
                    c, org_id, k, f"page-{n}.png", "image/png", d
                )
            )
            ref = {
                "type": "braintrust_attachment",
                "key": key,
                "filename": f"page-{i}.png",
                "content_type": "image/png",
            }
            events.append({"id": f"row-{i:05d}", "input": {"question": f"what is on page {i}?", "page": ref},
                           "output": {"answer": "a chart"}})  # fmt: skip
        bulk_load(store, Target("project_logs", project_id, project_id, org_id), events)
    finally:
        store.close()


async def _sequential(url: str, target: str, sample: int) -> tuple[float, int, int, float, int, int]:
    """The plain copy, one request at a time: (seconds, objects, bytes) of the configuration,
    then of the first ``sample`` attachment-bearing rows."""
    async with (
        BraintrustClient(_settings(url, KEY)) as src,
        BraintrustClient(_settings(url, OTHER_KEY)) as dst,
    ):
        started = time.monotonic()
        project = (await src.get_json("/v1/project", {"project_name": SOURCE}))["objects"][0]
        destination = await dst.post_json("/v1/project", {"name": target})
        id_map = {project["id"]: destination["id"]}
        count = size = 0
        for name in ("function", "prompt"):
            kind = BY_NAME[name]
            assert kind.path is not None
            async for obj in list_all(src, kind.path, {"project_id": project["id"]}):
                body = create_body(kind, remap(obj, id_map), destination["id"])
                written = await dst.put_json(kind.path, body)
                id_map[obj["id"]] = written["id"]
                count += 1
                size += len(jsoncodec.dumps(body))
        config_seconds = time.monotonic() - started
        started = time.monotonic()
        rows = await src.post_json("/btql", {"query": {
            "from": {"op": "function", "name": {"op": "ident", "name": ["project_logs"]},
                     "args": [{"op": "literal", "value": project["id"]}]},
            "select": [{"op": "star"}], "limit": sample}, "fmt": "json"})  # fmt: skip
        copied = copied_bytes = 0
        for row in rows["data"][:sample]:
            page = row["input"]["page"]
            ref = Reference(page["key"], page["filename"], page["content_type"])
            new = Reference(str(uuid.uuid4()), ref.filename, ref.content_type)
            copied_bytes += await transfer.copy(
                src, ref, project["org_id"], dst, new, destination["org_id"], 100 * MB
            )
            event = {k: row[k] for k in ("id", "input", "output")}
            event["input"] = {**event["input"], "page": {**page, "key": new.key}}
            await dst.post_json(f"/v1/project_logs/{destination['id']}/insert", {"events": [event]})
            copied += 1
        return config_seconds, count, size, time.monotonic() - started, copied, copied_bytes


def _btpipe(url: str, target: str) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": KEY, "BENCH_OTHER_KEY": OTHER_KEY}
    args = ["migrate", "--from-project", SOURCE, "--to-project", target, "--create-project",
            "--to-api-key-env", "BENCH_OTHER_KEY", "--objects", "logs,config", "--json", "--quiet"]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"btpipe migrate failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return seconds, summary


def section(
    work: Path,
    targets: list[tuple[str, str, bool]],
    objects: int = 1000,
    attachments: int = 2000,
    attachment_kb: int = 200,
    sample: int = 100,
    latency_ms: float = 100,
) -> list[str]:
    """Seed, then time btpipe and the sequential copy; the report lines, targets appended."""
    db = work / "project-whole.db"
    db.unlink(missing_ok=True)
    with spawn_emulator(db) as url:
        anyio.run(_seed_config, url, objects)
    _seed_attachments(db, attachments, attachment_kb * 1024)
    with spawn_emulator(db, "--latency-ms", str(latency_ms)) as url:
        seconds, summary = _btpipe(url, "bench-project-btpipe")
        plain = anyio.run(_sequential, url, "bench-project-sequential", sample)
    config_seconds, config_count, config_bytes, sample_seconds, sampled, sampled_bytes = plain
    written = sum(c["created"] for c in summary["config"])
    uploaded = summary["attachments"].get("uploaded", 0)
    if written != config_count or uploaded != attachments or summary["rows"] != attachments:
        raise SystemExit(
            f"btpipe copied {written} objects, {uploaded} attachments and {summary['rows']} rows"
        )
    total_objects = config_count + attachments
    total_mb = (config_bytes + attachments * attachment_kb * 1024) / MB
    plain_seconds = config_seconds + sample_seconds * attachments / sampled
    ratio = plain_seconds / seconds
    title = (f"## Migrate of a project with {config_count:,} prompts and functions and {attachments:,} "
             f"attachments of {attachment_kb} KB, emulator latency {latency_ms:g} ms")  # fmt: skip
    lines = [
        title,
        "",
        "| contender | seconds | objects/s | MB/s |",
        "|---|---:|---:|---:|",
        f"| btpipe migrate --objects logs,config | {seconds:.1f} | {total_objects / seconds:,.1f} | {total_mb / seconds:.2f} |",
        f"| sequential copy, same client | {plain_seconds:.1f} | {total_objects / plain_seconds:,.1f} | {total_mb / plain_seconds:.2f} |",
        "",
        f"btpipe: {ratio:.1f}x the sequential copy ({total_mb:,.0f} MB; {summary['rows']:,} rows with them). "
        f"The sequential copy's configuration took {config_seconds:.1f} s ({config_count:,} objects, measured "
        f"whole); its attachments {sample_seconds:.1f} s for the first {sampled:,} rows "
        f"({sampled_bytes / MB:.1f} MB), extrapolated to {attachments:,}.",
        "",
    ]  # fmt: skip
    print("\n".join(lines), flush=True)
    targets.append(
        (f"whole-project migrate at 5x the sequential copy, {latency_ms:g} ms", f"{ratio:.1f}x", ratio >= 5)
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--attachments", type=int, default=2000)
    parser.add_argument("--attachment-kb", type=int, default=200)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=100)
    args = parser.parse_args()
    targets: list[tuple[str, str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="btpipe-bench-project-") as work:
        section(
            Path(work),
            targets,
            args.objects,
            args.attachments,
            args.attachment_kb,
            args.sample,
            args.latency_ms,
        )
    for name, value, ok in targets:
        print(f"{'ok ' if ok else 'MISSED'} {name}: {value}")
    sys.exit(0 if all(ok for _, _, ok in targets) else 1)


if __name__ == "__main__":
    main()
