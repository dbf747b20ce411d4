"""Test helpers that talk to the emulator with plain aiohttp, independently of btpipe's client,
and one that runs the ``btpipe`` command the way a user does (URL and key in the environment)."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import anyio
import orjson
import pyarrow.parquet as pq
from click.testing import CliRunner, Result

from pipeline.cli import main
from pipeline.common.errors import BtpipeError
from pipeline.common.manifest import FileInfo
from pipeline.sinks.base import Sink
from pipeline.sources.decode import table_to_rows


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def _send(method: str, url: str, key: str, path: str, body: Any, params: dict[str, str] | None) -> Any:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session,
        session.request(
            method,
            url + path,
            data=None if body is None else orjson.dumps(body),
            params=params,
            headers={"Content-Type": "application/json"},
        ) as resp,
    ):
        data = await resp.read()
        assert resp.status == 200, f"{method} {path}: HTTP {resp.status}: {data[:300]!r}"
        return orjson.loads(data)


def send(
    method: str, url: str, key: str, path: str, body: Any = None, params: dict[str, str] | None = None
) -> Any:
    """One REST request (``POST``, ``PUT``, ``PATCH``, ``GET``); the decoded 200 answer."""
    return anyio.run(_send, method, url, key, path, body, params)


def post(url: str, key: str, path: str, body: Any) -> Any:
    return send("POST", url, key, path, body)


def btpipe(emulator: Any, *args: str, key: str | None = None) -> Result:
    """``btpipe ARGS`` in process against ``emulator``, with its key unless ``key`` is given."""
    env = {"BRAINTRUST_API_URL": emulator.url, "BRAINTRUST_API_KEY": key or emulator.key}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def insert(
    url: str,
    key: str,
    object_type: str,
    object_id: str,
    events: list[dict[str, Any]],
    max_bytes: int = 900_000,
) -> None:
    """Insert ``events`` in requests below ``max_bytes`` (the test server's limit is 1 MiB)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for event in events:
        n = len(orjson.dumps(event))
        if batch and (size + n > max_bytes or len(batch) >= 500):
            post(url, key, f"/v1/{object_type}/{object_id}/insert", {"events": batch})
            batch, size = [], 0
        batch.append(event)
        size += n
    if batch:
        post(url, key, f"/v1/{object_type}/{object_id}/insert", {"events": batch})


def make_project(
    url: str,
    key: str,
    prefix: str,
    *,
    logs: list[dict[str, Any]],
    dataset_rows: list[dict[str, Any]],
    experiment_name: str,
    experiment_rows: list[dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """A new project holding ``logs``, a dataset "golden" and an experiment, each with its rows;
    returns the three objects under "project", "dataset" and "experiment"."""
    project = post(url, key, "/v1/project", {"name": unique(prefix)})
    insert(url, key, "project_logs", project["id"], logs)
    dataset = post(url, key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    insert(url, key, "dataset", dataset["id"], dataset_rows)
    experiment = post(url, key, "/v1/experiment", {"project_id": project["id"], "name": experiment_name})
    insert(url, key, "experiment", experiment["id"], experiment_rows)
    return {"project": project, "dataset": dataset, "experiment": experiment}


async def _all_rows(
    url: str, key: str, object_type: str, object_id: str, filter_expr: Any
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        while True:
            query: dict[str, Any] = {
                "from": {
                    "op": "function",
                    "name": {"op": "ident", "name": [object_type]},
                    "args": [{"op": "literal", "value": object_id}],
                },
                "select": [{"op": "star"}],
                "limit": 1000,
            }
            if filter_expr is not None:
                query["filter"] = filter_expr
            if cursor:
                query["cursor"] = cursor
            async with session.post(url + "/btql", json={"query": query, "fmt": "json"}) as resp:
                assert resp.status == 200, await resp.text()
                payload = orjson.loads(await resp.read())
            if not payload["data"]:
                return rows
            rows.extend(payload["data"])
            cursor = payload.get("cursor")
            if not cursor:
                return rows


def all_rows(
    url: str, key: str, object_type: str, object_id: str, filter_expr: Any = None
) -> dict[str, dict[str, Any]]:
    """Every visible row of an object, by id, read straight from the server."""
    rows = anyio.run(_all_rows, url, key, object_type, object_id, filter_expr)
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows), "the server returned an id twice"
    return by_id


def read_export_files(root: Path, object_type: str, object_id: str) -> list[dict[str, Any]]:
    """Every row in the published files of one object, read without btpipe's sources."""
    rows: list[dict[str, Any]] = []
    base = root / f"object_type={object_type}" / f"object_id={object_id}"
    for path in sorted(base.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            rows.extend(table_to_rows(pq.read_table(path), object_type))  # type: ignore[arg-type]
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        elif path.name.endswith(".zst"):
            import pyarrow as pa

            data = pa.input_stream(pa.py_buffer(data), compression="zstd").read()
        rows.extend(orjson.loads(line) for line in data.splitlines() if line.strip())
    return rows


def visible_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class FullDiskSink:
    """A sink whose ``fail_at``-th page fails, as a full disk would, part way through a range."""

    def __init__(self, inner: Sink, fail_at: int) -> None:
        self._inner = inner
        self._left = fail_at

    def write_page(self, page: bytes, rows: int | None = None) -> None:
        self._left -= 1
        if self._left == 0:
            raise BtpipeError("cannot write part: No space left on device")
        self._inner.write_page(page, rows)

    def flush(self) -> list[FileInfo]:
        return self._inner.flush()

    def close(self) -> list[FileInfo]:
        return self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def __enter__(self) -> FullDiskSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._inner.__exit__(exc_type, exc, tb)


def s3_client(env: dict[str, str]) -> Any:
    """A boto3 S3 client of the moto server ``env`` names (see :func:`moto_s3`)."""
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])  # fmt: skip


@contextmanager
def moto_s3(*buckets: str) -> Iterator[dict[str, str]]:
    """moto in server mode on a loopback port, holding ``buckets``: the usual AWS variables
    that reach it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}  # fmt: skip
        for bucket in buckets:
            s3_client(env).create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()
