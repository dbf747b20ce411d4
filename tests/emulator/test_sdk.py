"""The official ``braintrust`` SDK pointed at the emulator: logs, datasets, experiments.

The SDK finds the emulator through ``BRAINTRUST_APP_URL`` / ``BRAINTRUST_API_URL`` /
``BRAINTRUST_API_KEY``; name resolution is fenced to loopback for the test, so any call
that would leave the machine fails the test instead of reaching the internet.
"""

from __future__ import annotations

import socket
from typing import Any

import braintrust
import pytest
import requests

from tests.conftest import Emulator, unique_name

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def point_sdk_at(monkeypatch: pytest.MonkeyPatch, url: str, key: str) -> None:
    """Send the SDK to the emulator at ``url`` and nowhere else: its environment names the
    emulator, and resolving any other host name fails."""
    resolve = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in _LOOPBACK:
            raise OSError(f"test is fenced to loopback: refused to resolve {host!r}")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    for name in ("BRAINTRUST_APP_URL", "BRAINTRUST_API_URL"):
        monkeypatch.setenv(name, url)
    monkeypatch.setenv("BRAINTRUST_API_KEY", key)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "BRAINTRUST_ORG_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sdk_env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    point_sdk_at(monkeypatch, emulator.url, emulator.key)


def btql(emulator: Emulator, query: str) -> list[dict[str, Any]]:
    resp = requests.post(f"{emulator.url}/btql", json={"query": query}, headers={"Authorization": f"Bearer {emulator.key}"}, timeout=30)  # fmt: skip
    assert resp.ok, resp.text
    data: list[dict[str, Any]] = resp.json()["data"]
    return data


@pytest.mark.usefixtures("sdk_env")
def test_sdk_logs_datasets_and_experiments(emulator: Emulator) -> None:
    project = unique_name("sdk")
    logger = braintrust.init_logger(project=project)
    with logger.start_span(name="root", input="question") as root:
        with root.start_span(name="child", input="sub") as child:
            child.log(output="sub answer", scores={"good": 1})
        root.log(output="answer", metadata={"orgName": "qawolf"})
    logger.flush()

    dataset = braintrust.init_dataset(project=project, name="golden")
    records = [
        {"input": {"n": n, "text": "é\u2028"}, "expected": [n, None], "metadata": {"k": n}} for n in range(25)
    ]
    ids = [dataset.insert(**record) for record in records]
    dataset.flush()

    experiment = braintrust.init_experiment(project=project, experiment="baseline")
    experiment.log(input=1, output=2, expected=2, scores={"accuracy": 0.5})
    experiment.flush()

    project_id = logger.project.id
    spans = {r["span_attributes"]["name"]: r for r in btql(emulator, f"select: * | from: project_logs('{project_id}')")}  # fmt: skip
    assert set(spans) == {"root", "child"}
    assert spans["child"]["span_parents"] == [spans["root"]["span_id"]]
    assert spans["child"]["root_span_id"] == spans["root"]["root_span_id"]
    assert spans["root"]["is_root"] and not spans["child"]["is_root"]
    assert (spans["root"]["input"], spans["root"]["output"], spans["root"]["metadata"]) == ("question", "answer", {"orgName": "qawolf"})  # fmt: skip
    assert (spans["child"]["output"], spans["child"]["scores"]) == ("sub answer", {"good": 1})

    reread = braintrust.init_dataset(project=project, name="golden")
    fetched = {r["id"]: r for r in reread.fetch()}
    assert set(fetched) == set(ids)
    for row_id, record in zip(ids, records, strict=True):
        row = fetched[row_id]
        assert (row["input"], row["expected"], row["metadata"]) == (record["input"], record["expected"], record["metadata"])  # fmt: skip

    logged = btql(emulator, f"select: input, output, expected, scores | from: experiment('{experiment.id}')")
    assert logged == [{"input": 1, "output": 2, "expected": 2, "scores": {"accuracy": 0.5}}]
