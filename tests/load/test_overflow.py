"""Events over the request limit go through the overflow route, as the official SDKs send them.

A dedicated emulator with a 64 KiB request limit holds a source project whose logs, dataset
and experiment mix normal rows with rows several times over the limit. Import and migrate
run through :class:`Proxy`, a reverse proxy in front of that emulator that records every
request (so the upload can be shown to carry no credential) and can play a server without
the route, an object store answering with a form POST, or a connection lost between the
write of an uploaded event and its answer. Every copy is read back through ``/btql`` and
compared byte for byte with its source. The payload and its row description are checked
against the official Python SDK's own functions.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web
from braintrust.logger import construct_logs3_data, stringify_with_overflow_meta

from pipeline.common.rows import DESTINATION_FIELDS
from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.overflow import UPLOAD_PREFIX
from pipeline.emulator.rowwrite import Target, write_events
from pipeline.emulator.server import RunningServer, ServerConfig
from pipeline.load.overflow import build_payload, object_ids
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, post, read_export_files, unique

LIMIT = 64 * 1024
KEY = Emulator("").key
#: Where the proxy, playing an object store that takes form POSTs, receives uploads.
FORM_PREFIX = "/_form/"
_HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})
_DROPPED_ANSWER_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding", "connection",
                                     "date", "server"})  # fmt: skip


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Proxy:
    """A recording reverse proxy on its own thread. ``mode``: ``pass`` (signed URLs rewritten
    to come back through the proxy), ``form`` (overflow answers turned into form POSTs to
    the proxy, which PUTs the ``file`` part to the emulator), ``missing`` (404 on the route).
    ``hold_apply`` > 0 forwards that overflow apply (``POST /logs3`` naming a key) and then
    keeps its answer back until :meth:`release`."""

    upstream: str
    mode: str = "pass"
    hold_apply: int = 0
    seen: list[Seen] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # every key /logs3/overflow answered
    forms: list[dict[str, Any]] = field(default_factory=list)
    held_key: str | None = None
    holding: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession()
        self._released = asyncio.Event()
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def reset(self, mode: str = "pass", hold_apply: int = 0) -> None:
        self.mode, self.hold_apply, self.applies = mode, hold_apply, 0
        self.seen.clear()
        self.keys.clear()
        self.forms.clear()

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._released.set)

    def stop(self) -> None:
        self.release()
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _close(self) -> None:
        await self._session.close()
        await self._runner.cleanup()

    def uploads(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith((UPLOAD_PREFIX, FORM_PREFIX))]

    def asked_overflow(self) -> int:
        return sum(s.path == "/logs3/overflow" for s in self.seen)

    async def _forward(self, method: str, path: str, headers: Any, body: bytes) -> web.Response:
        sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(method, self.upstream + path, data=body or None, headers=sent,
                                         allow_redirects=False) as resp:  # fmt: skip
            data = await resp.read()
            kept = {k: v for k, v in resp.headers.items() if k.lower() not in _DROPPED_ANSWER_HEADERS}
            return web.Response(status=resp.status, body=data, headers=kept)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, dict(request.headers)))
        if request.path.startswith(FORM_PREFIX):
            return await self._form_upload(request)
        body = await request.read()
        if request.path == "/logs3/overflow" and self.mode == "missing":
            return web.Response(status=404, text="/logs3/overflow: no such endpoint")
        answer = await self._forward(request.method, request.path_qs, request.headers, body)
        if request.path == "/logs3/overflow" and answer.status == 200:
            assert isinstance(answer.body, bytes)
            return web.json_response(self._rewrite(orjson.loads(answer.body)))
        if request.path == "/logs3" and b'"logs3_overflow"' in body:
            self.applies += 1
            if self.applies == self.hold_apply:
                self.held_key = orjson.loads(body)["rows"]["key"]
                self.holding.set()
                await self._released.wait()
        return answer

    def _rewrite(self, upload: dict[str, Any]) -> dict[str, Any]:
        self.keys.append(upload["key"])
        path = urlsplit(upload["signedUrl"]).path
        if self.mode == "form":
            fields = {"key": "uploads/abc", "policy": "cG9saWN5", "Content-Type": "application/json"}
            return {"method": "POST", "signedUrl": self.url + FORM_PREFIX + path.removeprefix(UPLOAD_PREFIX),
                    "fields": fields, "key": upload["key"]}  # fmt: skip
        return {**upload, "signedUrl": self.url + path}

    async def _form_upload(self, request: web.Request) -> web.Response:
        """An object store taking a form POST: the fields, then the payload as ``file``."""
        form = await request.post()
        part = form["file"]
        assert isinstance(part, web.FileField)
        self.forms.append({"fields": {k: v for k, v in form.items() if k != "file"},
                           "filename": part.filename, "content_type": part.content_type})  # fmt: skip
        token = request.path.removeprefix(FORM_PREFIX)
        answer = await self._forward("PUT", UPLOAD_PREFIX + token, {"Content-Type": part.content_type},
                                     part.file.read())  # fmt: skip
        return web.Response(status=204 if answer.status == 200 else answer.status)


def cli_env(url: str) -> dict[str, str]:
    return {**os.environ, "BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": KEY}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


# -- the source ------------------------------------------------------------------------------


def big(n: int, seed: int) -> dict[str, Any]:
    """About ``n`` bytes of JSON with everything an encoder may get wrong: 2- to 4-byte UTF-8,
    line separators, quotes, backslashes, control characters, floats and nesting."""
    unit = 'é"\\\u2028\U0001f600\t<>&\x01 ' + str(seed)
    return {"text": unit * (n // 24), "floats": [i / 7 for i in range(300)],
            "deep": {"a": [None, True, False, 1e-7, 1.5e300, 2**53 + 1, {"b": ["x" * 10]}]}}  # fmt: skip


def size(row: dict[str, Any]) -> str:
    return "big" if len(orjson.dumps(row)) > LIMIT else "small"


def source_rows(prefix: str) -> dict[str, list[dict[str, Any]]]:
    logs: list[dict[str, Any]] = [{"id": f"{prefix}L{i}", "input": big(4 * LIMIT, i) if i in (2, 6, 7) else {"q": i},
             "output": [i, None, 0.5], "span_id": f"{prefix}s{i}", "root_span_id": f"{prefix}s{i - i % 3}",
             "span_parents": None if i % 3 == 0 else [f"{prefix}s{i - i % 3}"]}
            for i in range(10)]  # fmt: skip
    dataset: list[dict[str, Any]] = [{"id": f"{prefix}D{i}", "input": i, "expected": big(5 * LIMIT, i) if i in (0, 5) else i * 2}
               for i in range(6)]  # fmt: skip
    experiment: list[dict[str, Any]] = [{"id": f"{prefix}E{i}", "input": i, "output": big(3 * LIMIT, i) if i == 3 else i,
                   "metadata": big(6 * LIMIT, i) if i == 4 else {"k": i}, "scores": {"s": i / 10}}
                  for i in range(6)]  # fmt: skip
    for rows in (logs, dataset, experiment):
        for row in rows:
            row["metadata"] = {**row.get("metadata", {}), "size": size(row)}
    return {"project_logs": logs, "dataset": dataset, "experiment": experiment}


@dataclass(frozen=True)
class Source:
    project: dict[str, Any]
    ids: dict[str, str]  # object type -> object id
    labels: dict[str, str]  # object type -> import/migrate label
    big_ids: set[str]
    rows: int


def seed(server: RunningServer, name: str, only_logs: list[dict[str, Any]] | None = None) -> Source:
    """A project holding the rows straight in the store (the insert route would refuse the big ones)."""
    project = post(server.url, KEY, "/v1/project", {"name": unique(name)})
    rows = {"project_logs": only_logs} if only_logs is not None else source_rows(project["id"][:6])
    ids = {"project_logs": project["id"]}
    labels = {"project_logs": "logs"}
    for kind, object_name in (("dataset", "golden"), ("experiment", "run-1")):
        if kind in rows:
            made = post(server.url, KEY, f"/v1/{kind}", {"project_id": project["id"], "name": object_name})
            ids[kind], labels[kind] = made["id"], f"{kind}:{object_name}"
    for kind, events in rows.items():
        target = Target(kind, ids[kind], project["id"], project["org_id"])  # type: ignore[arg-type]
        server.store.write_sync(lambda c, t=target, e=events: write_events(c, [(t, e)]))  # type: ignore[misc]
    big_ids = {r["id"] for events in rows.values() for r in events if r["metadata"]["size"] == "big"}
    return Source(project, ids, labels, big_ids, sum(len(e) for e in rows.values()))


def content(rows: dict[str, dict[str, Any]]) -> dict[str, bytes]:
    """Each row's own fields, encoded with sorted keys: equal means byte for byte the same."""
    return {i: orjson.dumps({k: v for k, v in r.items() if k not in DESTINATION_FIELDS} | {"created": r["created"]},
                            option=orjson.OPT_SORT_KEYS) for i, r in rows.items()}  # fmt: skip


def assert_copied(server: RunningServer, source: Source, summary: dict[str, Any], key: str = KEY) -> None:
    """Every object of ``source`` has its copy (from the load's JSON summary), equal byte for byte."""
    dest = {o["source"]: o["destination_id"] for o in summary["objects"]}
    for kind, object_id in source.ids.items():
        original = all_rows(server.url, KEY, kind, object_id)
        copied = all_rows(server.url, key, kind, dest[source.labels[kind]])
        assert content(copied) == content(original), kind
    assert summary["rows"] == source.rows and summary["skipped"] == 0


def uploads_asked(server: RunningServer) -> int:
    """How many upload URLs the emulator has handed out (its own record)."""
    count: int = server.store.read_sync(
        lambda c: c.execute("SELECT count(*) FROM overflow_uploads").fetchone()[0]
    )
    return count


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("overflow") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), max_request_bytes=LIMIT)) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(server: RunningServer) -> Iterator[Proxy]:
    running = Proxy(server.url)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def source(server: RunningServer) -> Source:
    made = seed(server, "ovf-src")
    assert len(made.big_ids) == 7
    return made


@pytest.fixture(scope="module")
def backup(server: RunningServer, source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("backup")
    done = btpipe(Emulator(server.url), "export", "--project", source.project["name"], "--out", str(out),
                  "--format", "jsonl", "--quiet")  # fmt: skip
    assert done.exit_code == 0, done.output
    return out


def through(proxy: Proxy, mode: str = "pass") -> Emulator:
    proxy.reset(mode)
    return Emulator(proxy.url)


def load(
    via: Emulator, verb: str, source: Source, backup: Path, tmp: Path, *more: str, dest: str = ""
) -> Any:
    frm = ["--in", str(backup)] if verb == "import" else ["--from-project", source.project["name"]]
    return btpipe(via, verb, *frm, "--to-project", dest or unique("ovf-dst"), "--create-project", "--state-dir",
                  str(tmp / "state"), "--quiet", "--json", *more)  # fmt: skip


def assert_uploads_carry_no_credential(proxy: Proxy, count: int) -> None:
    uploads = proxy.uploads()
    assert len(uploads) == count and len(proxy.keys) == count
    for upload in uploads:
        assert not {"authorization", "cookie", "x-bt-org-name"} & {h.lower() for h in upload.headers}
        text = upload.path + repr(upload.headers)
        assert KEY not in text and not any(key in text for key in proxy.keys)
    assert all(s.headers.get("Authorization") == f"Bearer {KEY}" for s in proxy.seen if s not in uploads)


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["project_logs", "dataset", "experiment"])
@pytest.mark.parametrize("event", [{"id": "x", "input": {"q": "é\u2028\"\\", "n": [1, 2.5, None]}},
                                   {"id": "y", "comment": "c", "_object_delete": True}])  # fmt: skip
def test_the_payload_and_its_row_description_are_the_official_sdks(kind: str, event: dict[str, Any]) -> None:
    payload = build_payload(orjson.dumps(event), object_ids(f"/v1/{kind}/O-1"))
    ids = {"project_logs": {"project_id": "O-1", "log_id": "g"}}.get(kind, {f"{kind}_id": "O-1"})
    sdk = stringify_with_overflow_meta({**ids, **event})
    assert orjson.loads(payload.body) == orjson.loads(construct_logs3_data([sdk]))
    meta = sdk.overflow_meta
    assert payload.row == {"object_ids": meta.object_ids, "has_comment": meta.has_comment,
                           "is_delete": meta.is_delete, "input_row": {"byte_size": meta.byte_size}}  # fmt: skip


@pytest.mark.parametrize("verb", ["import", "migrate"])
def test_rows_over_the_limit_are_restored_byte_for_byte_and_uploaded_without_credentials(
    server: RunningServer, proxy: Proxy, source: Source, backup: Path, tmp_path: Path, verb: str
) -> None:
    done = load(through(proxy), verb, source, backup, tmp_path, "--batch-rows", "3", "--workers", "3")
    assert done.exit_code == 0, done.output
    summary = orjson.loads(done.stdout)
    assert summary["overflowed"] == len(source.big_ids) and summary["request_limit"] == LIMIT
    assert_copied(server, source, summary)
    assert_uploads_carry_no_credential(proxy, len(source.big_ids))
    assert list((tmp_path / "state").iterdir()) == []


def test_an_object_store_answering_with_a_form_post_gets_the_sdks_form(
    server: RunningServer, proxy: Proxy, source: Source, backup: Path, tmp_path: Path
) -> None:
    done = load(through(proxy, "form"), "import", source, backup, tmp_path)
    assert done.exit_code == 0, done.output
    assert_copied(server, source, orjson.loads(done.stdout))
    assert_uploads_carry_no_credential(proxy, len(source.big_ids))
    expected = {"fields": {"key": "uploads/abc", "policy": "cG9saWN5", "Content-Type": "application/json"},
                "filename": "logs3.json", "content_type": "application/json"}  # fmt: skip
    assert proxy.forms == [expected] * len(source.big_ids)


def test_an_upload_lost_on_the_way_is_sent_again_under_a_fresh_url(
    server: RunningServer, source: Source, backup: Path, tmp_path: Path
) -> None:
    """Half the uploads fail (a 503, or stored and then the connection dropped, which uses the
    URL up): each event still lands once, under a URL asked for afresh when needed."""
    asked_before = uploads_asked(server)
    server.faults.replace(FaultConfig(rate=0.5, kinds=("drop", "503"), seed=3,
                                      exempt=("/v1", "/btql", "/logs3", "/version", "/api")))  # fmt: skip
    try:
        done = load(Emulator(server.url), "import", source, backup, tmp_path, "--workers", "1",
                    "--max-retries", "10", "--max-backoff", "0.01")  # fmt: skip
        faults = server.faults.statistics().faults
    finally:
        server.faults.replace(FaultConfig())
    assert done.exit_code == 0, done.output
    assert faults.get("drop", 0) > 0 and faults.get("503", 0) > 0, faults
    summary = orjson.loads(done.stdout)
    assert summary["overflowed"] == len(source.big_ids)
    assert uploads_asked(server) - asked_before > len(source.big_ids)  # used-up URLs were replaced
    assert_copied(server, source, summary)


def test_a_run_killed_between_an_overflow_write_and_its_answer_resumes_without_doubling(
    server: RunningServer, proxy: Proxy, tmp_path: Path
) -> None:
    logs = [{"id": f"k{i}", "input": big(2 * LIMIT, i) if i % 5 == 4 else i} for i in range(30)]
    for row in logs:
        row["metadata"] = {"size": size(row)}
    src = seed(server, "ovf-kill", only_logs=logs)
    out = tmp_path / "backup"
    exported = btpipe(Emulator(server.url), "export", "--project", src.project["name"], "--out", str(out),
                      "--format", "jsonl", "--quiet")  # fmt: skip
    assert exported.exit_code == 0, exported.output
    order = [row["id"] for row in read_export_files(out, "project_logs", src.project["id"])]
    proxy.reset(hold_apply=3)
    proxy.holding.clear()
    dest, state = unique("ovf-kill-dst"), tmp_path / "state"
    cmd = command("import", "--in", str(out), "--to-project", dest, "--create-project", "--state-dir", str(state),
                  "--workers", "1", "--batch-rows", "3", "--quiet", "--json")  # fmt: skip
    env = cli_env(proxy.url)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proxy.holding.wait(120), "the third overflow apply never came"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        proxy.release()
    assert proc.returncode == -signal.SIGKILL

    def applied() -> dict[str, list[str]]:
        found = server.store.read_sync(
            lambda c: c.execute(
                "SELECT key, row_ids FROM overflow_uploads WHERE row_ids IS NOT NULL"
            ).fetchall()
        )
        return {key: orjson.loads(ids) for key, ids in found}

    before = applied()
    assert proxy.held_key is not None
    [held_id] = before[proxy.held_key]  # written, but its answer never reached the killed run
    state_files = list(state.glob("import-*.json"))
    assert len(state_files) == 1, sorted(p.name for p in state.iterdir())
    [state_file] = state_files
    [progress] = orjson.loads(state_file.read_bytes())["objects"].values()
    assert progress["rows"] == order.index(held_id) > 0  # the checkpoint stops right before it

    proxy.reset()
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = orjson.loads(resumed.stdout)
    assert summary["resumed"] and summary["rows"] == len(logs)
    again = [i for key, ids in applied().items() if key not in before for i in ids]
    assert not set(again) & set(order[: progress["rows"]])  # nothing in the checkpoint was sent again
    assert sorted(again) == sorted(i for i in order[progress["rows"] :] if i in src.big_ids)
    assert held_id in again  # sent again after the lost answer: written over, not doubled
    assert_copied(server, src, summary)


def test_without_the_route_an_event_over_the_limit_fails_the_run_naming_it(
    proxy: Proxy, source: Source, backup: Path, tmp_path: Path
) -> None:
    for verb in ("import", "migrate"):
        failed = load(through(proxy, "missing"), verb, source, backup, tmp_path / verb, "--workers", "1")
        assert failed.exit_code == 1
        [line] = failed.stderr.strip().splitlines()
        found = re.search(r"event '([^']+)' at .* is ([\d,]+) bytes encoded, more than the request limit of "
                          r"65,536 bytes, and the server has no overflow route \(.*HTTP 404.*\)", line)  # fmt: skip
        assert found, line
        assert found[1] in source.big_ids and int(found[2].replace(",", "")) > LIMIT
        assert "--on-error skip" in line and KEY not in failed.output
        assert proxy.asked_overflow() == 1 and proxy.uploads() == []


def test_without_the_route_on_error_skip_records_each_event_over_the_limit_and_loads_the_rest(
    server: RunningServer, proxy: Proxy, source: Source, backup: Path, tmp_path: Path
) -> None:
    errors = tmp_path / "errors.jsonl"
    done = load(through(proxy, "missing"), "import", source, backup, tmp_path, "--on-error", "skip",
                "--error-file", str(errors))  # fmt: skip
    assert done.exit_code == 1, done.output
    summary = orjson.loads(done.stdout)
    assert (summary["skipped"], summary["overflowed"], summary["rows"]) == (7, 0, source.rows)
    recorded = {r["id"]: r for r in map(orjson.loads, errors.read_bytes().splitlines())}
    assert set(recorded) == source.big_ids
    assert all("no overflow route" in r["error"] and r["bytes"] > LIMIT for r in recorded.values())
    assert proxy.asked_overflow() == 1  # the missing route is remembered, not asked for each event
    dest = {o["source"]: o["destination_id"] for o in summary["objects"]}
    for kind, object_id in source.ids.items():
        original = all_rows(server.url, KEY, kind, object_id)
        for row_id in original.keys() & source.big_ids:
            kept = {k: v for k, v in original[row_id].items() if k not in DESTINATION_FIELDS}
            event = recorded[row_id]["event"]
            assert {k: event[k] for k in kept if k != "created"} == {
                k: v for k, v in kept.items() if k != "created"
            }
        copied = all_rows(server.url, KEY, kind, dest[source.labels[kind]])
        assert content(copied) == {i: c for i, c in content(original).items() if i not in source.big_ids}


def test_without_the_route_an_error_file_that_cannot_be_written_stops_the_run(
    proxy: Proxy, source: Source, backup: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    failed = load(through(proxy, "missing"), "import", source, backup, tmp_path, "--on-error", "skip",
                  "--error-file", str(blocker / "e.jsonl"))  # fmt: skip
    assert failed.exit_code == 2
    [line] = failed.stderr.strip().splitlines()
    assert "cannot open error file" in line and "e.jsonl" in line


def test_delete_is_unaffected(server: RunningServer, proxy: Proxy, source: Source, backup: Path, tmp_path: Path) -> None:  # fmt: skip
    name = unique("ovf-del")
    restored = load(through(proxy), "import", source, backup, tmp_path, dest=name)
    assert restored.exit_code == 0, restored.output
    dest = {o["source"]: o["destination_id"] for o in orjson.loads(restored.stdout)["objects"]}
    deleted = btpipe(through(proxy), "delete", "--project", name, "--objects", "logs,datasets,experiments",
                     "--filter", "metadata.size = 'big'", "--yes", "--json", "--batch-rows", "2")  # fmt: skip
    assert deleted.exit_code == 0, deleted.output
    assert orjson.loads(deleted.stdout)["deleted"] == len(source.big_ids)
    assert proxy.asked_overflow() == 0 and proxy.uploads() == []
    for kind, object_id in source.ids.items():
        left = all_rows(server.url, KEY, kind, dest[source.labels[kind]])
        assert set(left) == set(all_rows(server.url, KEY, kind, object_id)) - source.big_ids
