"""The official JavaScript SDK (npm ``braintrust``, pinned in ``js/package.json``) doing its
normal work against the emulator: ``initLogger`` with spans (and a row over the request
limit), ``initDataset`` inserts read back page by page, ``initExperiment`` with
``summarize``, ``Eval``, and ``loadPrompt`` (latest, pinned to a version, by id).

Each scenario is a small script under ``js/`` run by ``node`` with ``js/fence.mjs``
preloaded (any host but loopback is refused); it prints one JSON line of what the SDK
returned, and the test checks that and what the emulator stored. The SDK is installed
once into ``js/node_modules`` (ignored by git) from the committed lock file; the tests
are skipped when node or npm is missing or npm cannot reach its registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.emulator.server import RunningServer, ServerConfig
from tests.conftest import Emulator, unique_name
from tests.emulator.test_prompt_versions import three_versions
from tests.emulator.test_sdk_conformance import SMALL_LIMIT, read_rows

JS_DIR = Path(__file__).parent / "js"
_OFFLINE = re.compile(
    r"E(NOTFOUND|AI_AGAIN|CONNREFUSED|CONNRESET|TIMEDOUT|NETUNREACH)|network", re.IGNORECASE
)


def _installed_version() -> str | None:
    manifest = JS_DIR / "node_modules" / "braintrust" / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the pinned SDK installed beside the scripts."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the JavaScript SDK")
    pinned = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["braintrust"]
    if _installed_version() != pinned:
        # --ignore-scripts: the SDK's install script would download a CLI binary we do not use.
        command = [
            npm,
            "ci",
            "--ignore-scripts",
            "--omit=optional",
            "--no-audit",
            "--no-fund",
            "--prefer-offline",
        ]
        done = subprocess.run(command, cwd=JS_DIR, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["no output"]
            offline = [line for line in lines if _OFFLINE.search(line)]
            if offline:
                pytest.skip(f"npm could not reach its registry to install the JavaScript SDK ({offline[0]})")
            pytest.fail(f"npm ci failed: {lines[0]}")
    return node


def run_js(node: str, script: str, emulator: Emulator, **env: str) -> dict[str, Any]:
    """Run ``js/<script>`` against ``emulator``; the JSON object on its last stdout line."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("BRAINTRUST_") and "proxy" not in k.lower()
    }
    sdk_env = {"BRAINTRUST_APP_URL": emulator.url, "BRAINTRUST_API_URL": emulator.url, "BRAINTRUST_API_KEY": emulator.key}  # fmt: skip
    done = subprocess.run(
        [node, "--import", "./fence.mjs", script], cwd=JS_DIR, env={**base, **sdk_env, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("js-overflow") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), max_request_bytes=SMALL_LIMIT)) as server:
        yield server


def test_logger_spans_and_a_row_over_the_limit(node: str, small_server: RunningServer) -> None:
    emulator = Emulator(url=small_server.url, max_request_bytes=SMALL_LIMIT)
    big_bytes = 2 * SMALL_LIMIT
    out = run_js(
        node, "logger.mjs", emulator, BT_TEST_PROJECT=unique_name("js-logs"), BIG_ROW_BYTES=str(big_bytes)
    )
    rows = {r["id"]: r for r in read_rows(emulator, "project_logs", out["project_id"])}
    root, child, big = (rows[out[name]["id"]] for name in ("root", "child", "big"))
    assert len(rows) == 3
    for name, row in (("root", root), ("child", child), ("big", big)):
        assert (row["span_id"], row["root_span_id"]) == (out[name]["span_id"], out[name]["root_span_id"])
    assert (root["span_parents"], root["is_root"], child["span_parents"], child["is_root"]) == (None, True, [root["span_id"]], False)  # fmt: skip
    assert (root["input"], root["output"], root["metadata"]) == ({"q": "why"}, "answer", {"k": [1, 2]})
    assert (child["input"], child["output"], child["scores"]) == ("sub", "sub answer", {"good": 0.75})
    assert child["metrics"]["tokens"] == 3 and child["span_attributes"]["name"] == "child"
    assert big["input"] == "é" * (big_bytes // 2)
    applied = small_server.store.read_sync(
        lambda c: [r[0] for r in c.execute("SELECT row_ids FROM overflow_uploads")]
    )
    assert any(out["big"]["id"] in json.loads(ids) for ids in applied if ids)


def test_dataset_insert_and_paged_iteration(node: str, emulator: Emulator) -> None:
    out = run_js(
        node, "dataset.mjs", emulator, BT_TEST_PROJECT=unique_name("js-ds"), BT_ROWS="25", BT_PAGE_SIZE="10"
    )
    expected = {
        row_id: {"id": row_id, "input": {"n": n}, "expected": n % 3, "metadata": {"k": f"v{n}"}}
        for n, row_id in enumerate(out["inserted"])
    }
    assert len(out["rows"]) == 25
    assert {r["id"]: r for r in out["rows"]} == expected
    stored = read_rows(emulator, "dataset", out["dataset_id"])
    assert {r["id"]: {k: r[k] for k in ("id", "input", "expected", "metadata")} for r in stored} == expected


def test_experiment_summarize_against_the_previous_one(node: str, emulator: Emulator) -> None:
    out = run_js(node, "experiment.mjs", emulator, BT_TEST_PROJECT=unique_name("js-exp"))
    summary = out["summary"]
    assert (summary["experimentName"], summary["comparisonExperimentName"]) == ("current", "base")
    assert summary["scores"] == {"acc": {"name": "acc", "score": 0.625, "diff": 0.125, "improvements": 1, "regressions": 1}}  # fmt: skip
    assert summary["metrics"] == {
        "duration": {"name": "duration", "metric": 2, "unit": "s", "diff": 0, "improvements": 1, "regressions": 1},
        "tokens": {"name": "tokens", "metric": 12.5, "unit": "tok", "diff": 0.25, "improvements": 0, "regressions": 1},
    }  # fmt: skip
    stored = read_rows(emulator, "experiment", out["experiment_id"])
    assert sorted((r["input"]["case"], r["output"], r["scores"]["acc"]) for r in stored) == [
        ("a", "A", 1), ("b", "B", 0.5), ("c", "C", 0), ("d", "D", 1),
    ]  # fmt: skip


def test_experiment_over_a_dataset_and_feedback_with_a_comment(node: str, emulator: Emulator) -> None:
    """Rows of an experiment over a dataset carry ``datasetRecordId``, a field the spec's events
    do not list; ``logFeedback`` sends its comment as a row of its own. Either refused would
    drop the batch, silently in this SDK."""
    out = run_js(node, "feedback.mjs", emulator, BT_TEST_PROJECT=unique_name("js-feedback"))
    rows = {r["id"]: r for r in read_rows(emulator, "experiment", out["experiment_id"])}
    assert set(rows) == set(out["logged"])
    first, second = (rows[i] for i in out["logged"])
    assert [(r["input"], r["output"], r["expected"]) for r in (first, second)] == [(1, 2, 2), (2, 4, 4)]
    assert (first["scores"], second["scores"]) == ({"exact": 1, "reviewed": 0.5}, {"exact": 1})
    assert "datasetRecordId" not in first and not second.get("comments")
    (comment,) = first["comments"]
    assert (comment["origin"], comment["comment"], comment["source"]) == ({"id": first["id"]}, {"text": "checked by hand"}, "app")  # fmt: skip


def test_open_existing_objects_by_name_and_by_id(node: str, emulator: Emulator) -> None:
    """``initExperiment`` with ``open``, ``initLogger`` with a ``projectId``, ``initDataset``
    with a ``datasetId`` and its ``summarize``: app lookups the SDK makes before anything else; and the connection's ``ping()``, which
    is true only when ``GET /ping`` answers 200."""
    project = unique_name("js-open")
    out = run_js(node, "reopen.mjs", emulator, BT_TEST_PROJECT=project)
    assert out["experimentRows"] == [{"input": 1, "output": 2}]
    assert out["logger_project"] == project
    (span,) = read_rows(emulator, "project_logs", out["project_id"])
    assert (span["id"], span["input"]) == (out["span_id"], "hello")
    assert out["datasetRows"] == [{"id": out["record"], "input": "q", "expected": "a"}]
    assert (out["dataset_name"], out["total_records"]) == ("kept", 1)
    assert out["ping"] is True


def test_eval_runs_a_scorer_end_to_end(node: str, emulator: Emulator) -> None:
    summary = run_js(node, "eval.mjs", emulator, BT_TEST_PROJECT=unique_name("js-eval"))["summary"]
    assert summary["experimentName"] == "doubling"
    assert summary["scores"] == {"exact_match": {"name": "exact_match", "score": 0.8, "improvements": 0, "regressions": 0}}  # fmt: skip
    rows = read_rows(emulator, "experiment", summary["experimentId"])
    roots = {r["root_span_id"]: r for r in rows if r["is_root"]}
    assert sorted((r["input"], r["output"], r["expected"]) for r in roots.values()) == [
        (n, 0 if n == 3 else n * 2, n * 2) for n in range(5)
    ]
    scores: dict[int, dict[str, float]] = {}
    for row in rows:
        if row.get("scores"):
            scores.setdefault(roots[row["root_span_id"]]["input"], {}).update(row["scores"])
    assert scores == {n: {"exact_match": 0 if n == 3 else 1} for n in range(5)}


def test_load_prompt_latest_by_version_and_by_id(node: str, emulator: Emulator) -> None:
    with httpx.Client(base_url=emulator.url, trust_env=False, headers={"Authorization": f"Bearer {emulator.key}"}) as http:  # fmt: skip
        project, made = three_versions(http)
    out = run_js(
        node, "prompt.mjs", emulator, BT_TEST_PROJECT=project["name"], BT_SLUG="greeter",
        BT_VERSION=made[0]["_xact_id"], BT_PROMPT_ID=made[0]["id"],
    )  # fmt: skip
    assert out["latest"] == {"id": made[0]["id"], "version": made[2]["_xact_id"], "messages": [{"role": "system", "content": "three"}]}  # fmt: skip
    assert out["pinned"]["messages"] == [{"role": "system", "content": "one"}]
    assert out["by_id"]["messages"] == [{"role": "system", "content": "one"}]
