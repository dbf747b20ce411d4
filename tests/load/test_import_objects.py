"""Import recreates datasets and experiments as they were: description, metadata, references."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.helpers import all_rows, btpipe, insert, post, unique


def get(emulator: Any, path: str) -> Any:
    request = urllib.request.Request(emulator.url + path, headers={"Authorization": f"Bearer {emulator.key}"})
    with urllib.request.urlopen(request) as response:
        return orjson.loads(response.read())


def test_import_recreates_objects_with_their_fields(emulator: Any, tmp_path: Path) -> None:
    source = post(emulator.url, emulator.key, "/v1/project", {"name": unique("objects-src")})
    dataset = post(emulator.url, emulator.key, "/v1/dataset", {
        "project_id": source["id"], "name": "golden", "description": "curated ✓", "metadata": {"owner": "qa", "n": 3},
    })  # fmt: skip
    experiment = post(emulator.url, emulator.key, "/v1/experiment", {
        "project_id": source["id"], "name": "run-7", "description": "nightly", "dataset_id": dataset["id"],
        "metadata": {"model": "m-1"},
    })  # fmt: skip
    insert(emulator.url, emulator.key, "dataset", dataset["id"], [{"id": "d1", "input": 1, "expected": 2}])
    insert(
        emulator.url, emulator.key, "experiment", experiment["id"], [{"id": "e1", "input": 1, "output": 2}]
    )

    out = tmp_path / "backup"
    exported = btpipe(emulator, "export", "--project", source["name"], "--objects", "datasets,experiments",
                      "--out", str(out), "--format", "jsonl")  # fmt: skip
    assert exported.exit_code == 0, exported.output
    target = unique("objects-dst")
    imported = btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--create-project",
                      "--state-dir", str(tmp_path / "state"))  # fmt: skip
    assert imported.exit_code == 0, imported.output

    (new_dataset,) = get(emulator, f"/v1/dataset?project_name={target}")["objects"]
    (new_experiment,) = get(emulator, f"/v1/experiment?project_name={target}")["objects"]
    assert (new_dataset["name"], new_dataset["description"], new_dataset["metadata"]) == (
        "golden", "curated ✓", {"owner": "qa", "n": 3},
    )  # fmt: skip
    assert (new_experiment["name"], new_experiment["description"], new_experiment["metadata"]) == (
        "run-7", "nightly", {"model": "m-1"},
    )  # fmt: skip
    assert new_experiment["dataset_id"] == new_dataset["id"] != dataset["id"]
    assert set(all_rows(emulator.url, emulator.key, "dataset", new_dataset["id"])) == {"d1"}
    assert set(all_rows(emulator.url, emulator.key, "experiment", new_experiment["id"])) == {"e1"}
