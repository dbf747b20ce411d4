"""A load stopped at the edges of its work resumes with the same command.

- Killed right after the server created a destination experiment, before the job recorded
  it: the re-run takes that experiment as its own instead of refusing it as someone else's.
- Interrupted while linking dataset versions, after every row was written: the state is still
  there (as Ctrl-C says), and the re-run links them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import Emulator
from tests.helpers import all_rows, insert, post, send, unique
from tests.reliability.support import cli_env

#: ``btpipe ARGS`` that kills itself (SIGKILL) as soon as the server answered its first
#: ``POST /v1/experiment``.
KILLED_AFTER_CREATE = """
import os, signal, sys
from pipeline.api.client import BraintrustClient
from pipeline.cli import main

post_json = BraintrustClient.post_json

async def killing(self, path, *args, **kwargs):
    answer = await post_json(self, path, *args, **kwargs)
    if path == "/v1/experiment":
        os.kill(os.getpid(), signal.SIGKILL)
    return answer

BraintrustClient.post_json = killing
main(sys.argv[1:], prog_name="btpipe")
"""

#: ``btpipe ARGS`` interrupted (SIGINT) as it starts linking dataset versions.
INTERRUPTED_AT_LINKS = """
import os, signal, sys
import anyio
from pipeline.cli import main
from pipeline.load import migrate

async def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    await anyio.sleep(5)

migrate.link_dataset_versions = interrupted
main(sys.argv[1:], prog_name="btpipe")
"""


def source(emulator: Emulator) -> dict[str, Any]:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("stopped")})
    dataset = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    insert(
        emulator.url, emulator.key, "dataset", dataset["id"], [{"id": f"d{i}", "input": i} for i in range(5)]
    )
    version = send("POST", emulator.url, emulator.key, "/btql", {
        "query": {"from": {"op": "function", "name": {"op": "ident", "name": ["dataset"]},
                           "args": [{"op": "literal", "value": dataset["id"]}]},
                  "measures": [{"alias": "v", "expr": {"op": "function", "name": {"op": "ident", "name": ["max"]},
                                                       "args": [{"op": "ident", "name": ["_xact_id"]}]}}]},
        "fmt": "json"})["data"][0]["v"]  # fmt: skip
    experiment = post(emulator.url, emulator.key, "/v1/experiment", {
        "project_id": project["id"], "name": "e1", "dataset_id": dataset["id"], "dataset_version": str(version)})  # fmt: skip
    insert(
        emulator.url,
        emulator.key,
        "experiment",
        experiment["id"],
        [{"id": f"e{i}", "input": i} for i in range(7)],
    )
    return project


def migrate(emulator: Emulator, script: str | None, project: str, target: str, state: Path) -> subprocess.CompletedProcess[str]:  # fmt: skip
    args = ["migrate", "--from-project", project, "--to-project", target, "--create-project",
            "--state-dir", str(state), "--json", "--quiet"]  # fmt: skip
    command = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "pipeline", *args]
    env = cli_env(emulator.url, emulator.key)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def copied(emulator: Emulator, target: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    [project] = send("GET", emulator.url, emulator.key, "/v1/project", params={"project_name": target})[
        "objects"
    ]
    experiments = send(
        "GET", emulator.url, emulator.key, "/v1/experiment", params={"project_id": project["id"]}
    )
    return experiments["objects"], project


def test_killed_right_after_creating_an_experiment_the_rerun_takes_it_as_its_own(
    emulator: Emulator, tmp_path: Path
) -> None:
    project = source(emulator)
    target = unique("stopped-copy")
    killed = migrate(emulator, KILLED_AFTER_CREATE, project["name"], target, tmp_path)
    assert killed.returncode == -9, killed.stderr
    again = migrate(emulator, None, project["name"], target, tmp_path)
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["rows"] == 12
    [experiment], _ = copied(emulator, target)
    assert sorted(all_rows(emulator.url, emulator.key, "experiment", experiment["id"])) == [
        f"e{i}" for i in range(7)
    ]


def test_interrupted_while_linking_dataset_versions_the_rerun_links_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    project = source(emulator)
    target = unique("linked-copy")
    stopped = migrate(emulator, INTERRUPTED_AT_LINKS, project["name"], target, tmp_path)
    assert stopped.returncode == 5 and "state saved" in stopped.stderr, stopped.stderr
    [experiment], _ = copied(emulator, target)
    assert experiment["dataset_version"] is None  # not linked yet
    again = migrate(emulator, None, project["name"], target, tmp_path)
    assert again.returncode == 0, again.stderr
    [experiment], _ = copied(emulator, target)
    assert experiment["dataset_version"] is not None


#: ``btpipe ARGS`` whose first ``POST /v1/dataset`` the server refuses (a 400).
REFUSED_CREATE = """
import sys
from pipeline.api.client import BraintrustClient
from pipeline.cli import main
from pipeline.common.errors import ApiError

post_json = BraintrustClient.post_json
refused = []

async def refusing(self, path, *args, **kwargs):
    if path == "/v1/dataset" and not refused:
        refused.append(path)
        raise ApiError("POST /v1/dataset -> HTTP 400: refused", status=400)
    return await post_json(self, path, *args, **kwargs)

BraintrustClient.post_json = refusing
main(sys.argv[1:], prog_name="btpipe")
"""


def test_a_create_the_server_refused_leaves_nothing_of_that_name_ours(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The mark a load leaves before creating an object does not outlive a refusal: a dataset
    someone else makes under that name afterwards is still refused as theirs."""
    project = source(emulator)
    target = unique("refused-copy")
    refused = migrate(emulator, REFUSED_CREATE, project["name"], target, tmp_path)
    assert refused.returncode != 0, refused.stderr
    _, made = copied(emulator, target)
    theirs = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": made["id"], "name": "golden"})
    again = migrate(emulator, None, project["name"], target, tmp_path)
    assert again.returncode == 2 and "dataset 'golden' already exists" in again.stderr, again.stderr
    assert all_rows(emulator.url, emulator.key, "dataset", theirs["id"]) == {}
