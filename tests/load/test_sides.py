"""Per-side settings of ``migrate``, ``verify`` and migrate jobs: ``--impersonate`` is the
source's only, ``--to-impersonate`` (``[destination] impersonate``) the destination's, and an
error from one side names it.

Each side reaches the session emulator through its own recording proxy on 127.0.0.1, so the
test sees the headers each side received. The source key is an owner of org ``local`` acting
as that org's member; the destination key is the owner of org ``other``, which may not act as
a user of ``local``: a leaked impersonation would be refused there.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from pipeline.cli import main
from pipeline.cli.jobs import run
from tests.conftest import Emulator
from tests.helpers import all_rows, make_project, unique

IMPERSONATE = "x-bt-impersonate-user"
MEMBER = "member@local.test"  # a member of org "local", the source's org
OTHER_OWNER = "owner@other.test"  # the destination key's own user
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: Hop-by-hop and framing headers the proxy leaves for its own connections to set.
_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-encoding"})


class Proxy:
    """A reverse proxy in front of ``upstream`` that notes the headers of each request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Mapping[str, str]] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="proxy", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> web.AppRunner:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return runner

    async def _forward(self, request: web.Request) -> web.Response:
        self.seen.append(request.headers.copy())
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=await request.read(), headers=headers,
            allow_redirects=False,
        ) as resp:  # fmt: skip
            body = await resp.read()
            kept = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
            return web.Response(status=resp.status, body=body, headers=kept)

    def impersonated(self) -> set[str | None]:
        """The ``x-bt-impersonate-user`` values received (None: a request without one)."""
        return {headers.get(IMPERSONATE) for headers in self.seen}

    async def _stop(self) -> None:
        await self._session.close()
        await self._runner.cleanup()

    def __enter__(self) -> Proxy:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@contextmanager
def sides(emulator: Emulator) -> Iterator[tuple[Proxy, Proxy]]:
    with Proxy(emulator.url) as source, Proxy(emulator.url) as destination:
        yield source, destination


def source_project(emulator: Emulator) -> dict[str, Any]:
    made = make_project(
        emulator.url, emulator.key, "sides", logs=[{"id": f"l{i}", "input": i} for i in range(30)],
        dataset_rows=[{"id": f"d{i}", "input": i, "expected": -i} for i in range(12)],
        experiment_name="exp", experiment_rows=[{"id": f"e{i}", "input": i, "scores": {"s": 0.5}} for i in range(8)],
    )  # fmt: skip
    return made["project"]


def btpipe(source: Proxy, *args: str, dest_key: str) -> Result:
    env = {"BRAINTRUST_API_URL": source.url, "BRAINTRUST_API_KEY": "bt-local-key", "DEST_KEY": dest_key}
    return CliRunner().invoke(main, list(args), env=env)


def two_sided(command: str, destination: Proxy, *args: str) -> list[str]:
    return [command, *args, "--to-api-url", destination.url, "--to-api-key-env", "DEST_KEY"]


def test_migrate_sends_the_source_impersonation_to_the_source_only(
    emulator: Emulator, tmp_path: Path
) -> None:
    project = source_project(emulator)
    dest = unique("sides-dest")
    with sides(emulator) as (source, destination):
        result = btpipe(source, *two_sided("migrate", destination, "--from-project", project["name"],
                        "--to-project", dest, "--create-project", "--impersonate", MEMBER,
                        "--state-dir", str(tmp_path), "--quiet"), dest_key=emulator.other_org_key)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert source.seen and source.impersonated() == {MEMBER}
        assert destination.seen and destination.impersonated() == {None}
        # verify, each side as its own user: the destination acts as the user it is told to
        source.seen.clear()
        destination.seen.clear()
        check = btpipe(source, *two_sided("verify", destination, "--project", project["name"], "--to-project",
                       dest, "--impersonate", MEMBER, "--to-impersonate", OTHER_OWNER), dest_key=emulator.other_org_key)  # fmt: skip
        assert check.exit_code == 0, check.output
        assert source.impersonated() == {MEMBER}
        assert destination.impersonated() == {OTHER_OWNER}
    copied = all_rows(emulator.url, emulator.other_org_key, "project_logs", _project_id(emulator, dest))
    assert sorted(copied) == sorted(f"l{i}" for i in range(30))


def test_migrate_job_keeps_each_tables_impersonation_to_its_side(emulator: Emulator, tmp_path: Path) -> None:
    project = source_project(emulator)
    dest = unique("sides-job")
    with sides(emulator) as (source, destination):
        env = {
            "BRAINTRUST_API_URL": source.url, "BRAINTRUST_API_KEY": emulator.key,
            "DEST_BRAINTRUST_API_URL": destination.url, "DEST_BRAINTRUST_API_KEY": emulator.other_org_key,
        }  # fmt: skip
        args = [str(CONFIGS / "migrate-project.toml"), "--set", f"project={project['name']}", "--set",
                f"to_project={dest}", "--set", f"state_dir={tmp_path}", "--set", f"source.impersonate={MEMBER}"]  # fmt: skip
        result = CliRunner().invoke(run, [*args, "--quiet"], env=env)
        assert result.exit_code == 0, result.output
        assert source.impersonated() == {MEMBER} and destination.impersonated() == {None}
        source.seen.clear()
        destination.seen.clear()
        again = CliRunner().invoke(
            run, [*args, "--set", f"destination.impersonate={OTHER_OWNER}", "--set", "into_existing=true",
                  "--quiet"], env=env,
        )  # fmt: skip
        assert again.exit_code == 0, again.output
        assert source.impersonated() == {MEMBER} and destination.impersonated() == {OTHER_OWNER}


DENIED = "x-bt-impersonate-user: not allowed"


@pytest.mark.parametrize(
    ("extra", "dest_key", "exit_code", "starts", "says"),
    [
        (["--to-impersonate", MEMBER], "bt-other-org-key", 3, "destination: permission denied (", DENIED),
        (["--impersonate", OTHER_OWNER], "bt-other-org-key", 3, "source: permission denied (", DENIED),
        ([], "bt-no-such-key", 3, "destination: the API key was rejected (", "HTTP 401"),
        (["--from-project", "nope"], "bt-other-org-key", 4, "source: project 'nope' not found", ""),
    ],
)
def test_migrate_errors_name_their_side(
    emulator: Emulator,
    tmp_path: Path,
    extra: list[str],
    dest_key: str,
    exit_code: int,
    starts: str,
    says: str,
) -> None:
    project = source_project(emulator)
    # a second --from-project replaces the first
    args = ["--from-project", project["name"], "--to-project", unique("sides-err"), "--create-project",
            "--state-dir", str(tmp_path), *extra]  # fmt: skip
    with sides(emulator) as (source, destination):
        result = btpipe(source, *two_sided("migrate", destination, *args), dest_key=dest_key)
    assert result.exit_code == exit_code, result.output
    assert result.stderr.startswith(f"btpipe: error: {starts}"), result.stderr
    assert says in result.stderr
    assert len(result.stderr.splitlines()) == 1 and dest_key not in result.stderr


def test_verify_errors_name_their_side(emulator: Emulator) -> None:
    project = source_project(emulator)
    with sides(emulator) as (source, destination):
        missing = btpipe(source, *two_sided("verify", destination, "--project", project["name"], "--to-project",
                         "no-such-copy"), dest_key=emulator.other_org_key)  # fmt: skip
        unset = btpipe(source, "verify", "--project", project["name"], "--to-project", "x", "--to-api-key-env",
                       "BTPIPE_NO_SUCH_VAR", dest_key="")  # fmt: skip
    assert missing.exit_code == 4, missing.output
    assert missing.stderr == "btpipe: error: destination: project 'no-such-copy' not found\n"
    assert unset.exit_code == 3, unset.output
    assert unset.stderr == (
        "btpipe: error: destination: environment variable BTPIPE_NO_SUCH_VAR (--to-api-key-env) is not set\n"
    )


def _project_id(emulator: Emulator, name: str) -> str:
    """The id of the destination project ``name``, read with the destination's key."""

    async def get() -> str:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {emulator.other_org_key}"}) as session,
            session.get(emulator.url + "/v1/project", params={"project_name": name}) as resp,
        ):
            assert resp.status == 200
            (project,) = (await resp.json())["objects"]
            return str(project["id"])

    return asyncio.run(get())
