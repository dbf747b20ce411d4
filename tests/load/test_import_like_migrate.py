"""Import like migrate: destination objects in dependency order with every reference remapped,
summary exports refused, one source project at a time, and no silent merge into an existing
experiment or dataset."""

from __future__ import annotations

import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, send, unique
from tests.reliability.support import hashes


def get(emulator: Emulator, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    request = urllib.request.Request(
        emulator.url + path + query, headers={"Authorization": f"Bearer {emulator.key}"}
    )
    with urllib.request.urlopen(request) as response:
        return orjson.loads(response.read())


def objects(emulator: Emulator, kind: str, project_name: str) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in get(emulator, f"/v1/{kind}", project_name=project_name)["objects"]}


def project_exists(emulator: Emulator, name: str) -> bool:
    return any(p["name"] == name for p in get(emulator, "/v1/project", project_name=name)["objects"])


def newest_version(emulator: Emulator, kind: str, object_id: str) -> str:
    return max(
        (r["_xact_id"] for r in all_rows(emulator.url, emulator.key, kind, object_id).values()), key=int
    )


def one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("btpipe: error: "), result.stderr
    return str(lines[0].removeprefix("btpipe: error: "))


@pytest.fixture(scope="module")
def linked(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project whose experiments name datasets and base experiments, created so that a
    listing (newest first) gives each derived experiment before its base; and its export."""
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("linked")})
    made: dict[str, dict[str, Any]] = {}
    for name in ("golden", "silver"):
        made[name] = post(url, key, "/v1/dataset", {"project_id": project["id"], "name": name})
        insert(url, key, "dataset", made[name]["id"], [{"id": f"{name}-{i}", "input": i} for i in range(12)])
    golden_version = newest_version(emulator, "dataset", made["golden"]["id"])
    silver_version = newest_version(emulator, "dataset", made["silver"]["id"])
    specs = [
        ("baseline", {"dataset_id": made["golden"]["id"], "dataset_version": golden_version}),
        ("candidate", {"base_exp_id": "baseline", "dataset_id": made["silver"]["id"],
                       "dataset_version": silver_version}),
        ("third", {"base_exp_id": "candidate"}),
    ]  # fmt: skip
    for name, refs in specs:
        if "base_exp_id" in refs:
            refs = {**refs, "base_exp_id": made[refs["base_exp_id"]]["id"]}
        made[name] = post(url, key, "/v1/experiment", {"project_id": project["id"], "name": name, **refs})
        insert(url, key, "experiment", made[name]["id"], [{"id": f"{name}-{i}", "input": i, "scores": {"s": 1}}
                                                          for i in range(7)])  # fmt: skip
    # silver changes after candidate pinned it: the version candidate ran against is not exported
    insert(url, key, "dataset", made["silver"]["id"], [{"id": "silver-late", "input": 99}])
    insert(url, key, "project_logs", project["id"], [{"id": f"log-{i}", "input": i} for i in range(5)])
    out = tmp_path_factory.mktemp("linked") / "backup"
    exported = btpipe(
        emulator, "export", "--project", project["name"], "--out", str(out), "--format", "jsonl"
    )
    assert exported.exit_code == 0, exported.output
    return {"project": project, "made": made, "out": out}


@pytest.mark.parametrize(
    "selection",
    [None, "datasets,experiments", "experiments,datasets", "experiments,logs,datasets",
     "experiment:third,experiment:candidate,dataset:silver,experiment:baseline,dataset:golden"],
)  # fmt: skip
def test_import_keeps_every_reference_whatever_the_objects_order(
    emulator: Emulator, linked: dict[str, Any], selection: str | None, tmp_path: Path
) -> None:
    target = unique("restored")
    args = ["import", "--in", str(linked["out"]), "--to-project", target, "--create-project",
            "--state-dir", str(tmp_path / "state")]  # fmt: skip
    imported = btpipe(emulator, *args, *(["--objects", selection] if selection else []))
    assert imported.exit_code == 0, imported.output
    datasets, experiments = objects(emulator, "dataset", target), objects(emulator, "experiment", target)
    assert set(datasets) == {"golden", "silver"} and set(experiments) == {"baseline", "candidate", "third"}
    baseline, candidate, third = experiments["baseline"], experiments["candidate"], experiments["third"]
    refs = {name: (e["base_exp_id"], e["dataset_id"]) for name, e in experiments.items()}
    assert refs == {
        "baseline": (None, datasets["golden"]["id"]),
        "candidate": (baseline["id"], datasets["silver"]["id"]),
        "third": (candidate["id"], None),
    }
    # the version baseline ran against is golden as exported: the copy's newest version
    assert baseline["dataset_version"] == newest_version(emulator, "dataset", datasets["golden"]["id"])
    # candidate's version of silver predates the export: no version of the copy matches it
    assert candidate["dataset_version"] is None and third["dataset_version"] is None
    assert [line for line in imported.stderr.splitlines() if "warning" in line] == [
        "btpipe: warning: experiment:candidate: its dataset_version "
        f"{linked['made']['candidate']['dataset_version']} is older than the copied dataset:silver; "
        "it links the copy's current version"
    ]
    source = linked["made"]
    for kind, name, found in [("dataset", "golden", datasets), ("dataset", "silver", datasets),
                              ("experiment", "baseline", experiments), ("experiment", "candidate", experiments),
                              ("experiment", "third", experiments)]:  # fmt: skip
        copied = all_rows(emulator.url, emulator.key, kind, found[name]["id"]).values()
        assert hashes(copied) == hashes(
            all_rows(emulator.url, emulator.key, kind, source[name]["id"]).values()
        )


def test_a_summary_export_is_refused_before_anything_is_written(
    emulator: Emulator, linked: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "summary"
    exported = btpipe(emulator, "export", "--project", linked["project"]["name"], "--objects", "experiments",
                      "--shape", "summary", "--out", str(out), "--format", "jsonl")  # fmt: skip
    assert exported.exit_code == 0, exported.output
    (manifest,) = (out / "_manifests").iterdir()
    target = unique("summary-dst")
    result = btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--create-project",
                    "--state-dir", str(tmp_path / "state"))  # fmt: skip
    assert one_line_error(result, 2) == (
        f"{out}: run {manifest.stem} was exported with --shape summary (one row of aggregates per trace "
        "under its root span's id); import reads --shape spans exports only"
    )
    # ... and through a directory inside the root, whose runs the root's manifests name, down
    # to a run's directory and one of its files
    run_dir = sorted(out.glob("object_type=experiment/object_id=*/run=*"))[0]
    data_file = sorted(run_dir.glob("*.jsonl"))[0]
    for inside in (out / "object_type=experiment", run_dir, data_file):
        result = btpipe(emulator, "import", "--in", str(inside), "--to-project", target, "--create-project",
                        "--state-dir", str(tmp_path / "state"))  # fmt: skip
        assert one_line_error(result, 2).startswith(
            f"{inside}: run {manifest.stem} was exported with --shape summary"
        ), inside
    assert not project_exists(emulator, target)


@pytest.fixture(scope="module")
def two_projects(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two projects backed up into one root, each with a dataset ``golden`` whose rows have
    the same ids and different values."""
    out = tmp_path_factory.mktemp("two") / "backup"
    projects = []
    for tag in ("alpha", "beta"):
        project = post(emulator.url, emulator.key, "/v1/project", {"name": unique(tag)})
        dataset = post(
            emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": "golden"}
        )
        insert(emulator.url, emulator.key, "dataset", dataset["id"],
               [{"id": f"g{i}", "input": f"{tag}-{i}"} for i in range(10)])  # fmt: skip
        insert(emulator.url, emulator.key, "project_logs", project["id"],
               [{"id": f"{tag}-log-{i}", "input": i} for i in range(4)])  # fmt: skip
        exported = btpipe(
            emulator, "export", "--project", project["name"], "--out", str(out), "--format", "jsonl"
        )
        assert exported.exit_code == 0, exported.output
        projects.append({"project": project, "dataset": dataset})
    return {"out": out, "projects": projects}


def test_a_root_of_two_projects_needs_from_project(
    emulator: Emulator, two_projects: dict[str, Any], tmp_path: Path
) -> None:
    out = two_projects["out"]
    alpha, beta = (p["project"] for p in two_projects["projects"])
    target = unique("merged")
    args = ["import", "--in", str(out), "--to-project", target, "--create-project",
            "--state-dir", str(tmp_path / "state")]  # fmt: skip
    listing = f"{alpha['name']} ({alpha['id']}), {beta['name']} ({beta['id']})"
    assert one_line_error(btpipe(emulator, *args), 2) == (
        f"{out}: holds the objects of 2 projects: {listing}; pass --from-project NAME_OR_ID to import one"
    )
    assert one_line_error(btpipe(emulator, *args, "--from-project", "nope"), 2) == (
        f"--from-project: {out} holds no project 'nope' (it holds {listing})"
    )
    assert not project_exists(emulator, target)

    for chosen, by in ((alpha, "name"), (beta, "id")):
        into = unique(f"from-{by}")
        done = btpipe(emulator, "import", "--in", str(out), "--to-project", into, "--create-project",
                      "--state-dir", str(tmp_path / "state"), "--from-project", chosen[by])  # fmt: skip
        assert done.exit_code == 0, done.output
        (source,) = [p for p in two_projects["projects"] if p["project"]["id"] == chosen["id"]]
        (copy_project,) = get(emulator, "/v1/project", project_name=into)["objects"]
        golden = objects(emulator, "dataset", into)["golden"]
        assert hashes(all_rows(emulator.url, emulator.key, "dataset", golden["id"]).values()) == hashes(
            all_rows(emulator.url, emulator.key, "dataset", source["dataset"]["id"]).values()
        )
        assert hashes(
            all_rows(emulator.url, emulator.key, "project_logs", copy_project["id"]).values()
        ) == hashes(all_rows(emulator.url, emulator.key, "project_logs", chosen["id"]).values())


def test_importing_into_an_existing_experiment_needs_into_existing(
    emulator: Emulator, linked: dict[str, Any], tmp_path: Path
) -> None:
    target = post(emulator.url, emulator.key, "/v1/project", {"name": unique("existing")})
    unrelated = post(
        emulator.url, emulator.key, "/v1/dataset", {"project_id": target["id"], "name": "unrelated"}
    )
    existing = post(emulator.url, emulator.key, "/v1/experiment",
                    {"project_id": target["id"], "name": "baseline", "dataset_id": unrelated["id"]})  # fmt: skip
    insert(emulator.url, emulator.key, "experiment", existing["id"], [{"id": "already-there", "input": 0}])
    args = ["import", "--in", str(linked["out"]), "--to-project", target["name"], "--objects", "datasets,experiments",
            "--state-dir", str(tmp_path / "state")]  # fmt: skip

    refused = btpipe(emulator, *args)
    assert one_line_error(refused, 2) == (
        f"experiment 'baseline' already exists in project {target['name']!r}; pass --into-existing to "
        "write into it (its rows are merged with the imported ones)"
    )
    assert set(objects(emulator, "dataset", target["name"])) == {"unrelated"}
    assert set(objects(emulator, "experiment", target["name"])) == {"baseline"}
    assert set(all_rows(emulator.url, emulator.key, "experiment", existing["id"])) == {"already-there"}

    done = btpipe(emulator, *args, "--into-existing")
    assert done.exit_code == 0, done.output
    experiments = objects(emulator, "experiment", target["name"])
    golden = objects(emulator, "dataset", target["name"])["golden"]
    assert experiments["baseline"]["id"] == existing["id"]
    assert experiments["baseline"]["dataset_id"] == golden["id"]  # the reference follows the import
    assert experiments["candidate"]["base_exp_id"] == existing["id"]
    source_rows = set(all_rows(emulator.url, emulator.key, "experiment", linked["made"]["baseline"]["id"]))
    assert set(all_rows(emulator.url, emulator.key, "experiment", existing["id"])) == source_rows | {
        "already-there"
    }


def test_migrating_into_an_existing_dataset_needs_into_existing(
    emulator: Emulator, linked: dict[str, Any], tmp_path: Path
) -> None:
    target = post(emulator.url, emulator.key, "/v1/project", {"name": unique("existing-m")})
    existing = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": target["id"], "name": "golden"})
    args = ["migrate", "--from-project", linked["project"]["name"], "--to-project", target["name"],
            "--objects", "datasets", "--state-dir", str(tmp_path / "state")]  # fmt: skip
    assert one_line_error(btpipe(emulator, *args), 2) == (
        f"dataset 'golden' already exists in project {target['name']!r}; pass --into-existing to "
        "write into it (its rows are merged with the migrated ones)"
    )
    assert set(objects(emulator, "dataset", target["name"])) == {"golden"}
    assert all_rows(emulator.url, emulator.key, "dataset", existing["id"]) == {}

    done = btpipe(emulator, *args, "--into-existing")
    assert done.exit_code == 0, done.output
    datasets = objects(emulator, "dataset", target["name"])
    assert datasets["golden"]["id"] == existing["id"] and set(datasets) == {"golden", "silver"}
    assert hashes(all_rows(emulator.url, emulator.key, "dataset", existing["id"]).values()) == hashes(
        all_rows(emulator.url, emulator.key, "dataset", linked["made"]["golden"]["id"]).values()
    )


def test_a_resumed_import_writes_into_the_objects_it_created(
    emulator: Emulator, linked: dict[str, Any], tmp_path: Path
) -> None:
    """The first run creates every destination object, then stops at a row without an id;
    re-run once the row is fixed, it goes on into the objects it created, unasked."""
    loose = tmp_path / "loose"  # the data files without their manifests
    shutil.copytree(linked["out"], loose, ignore=shutil.ignore_patterns("_manifests", "_state"))
    (part,) = (loose / f"object_type=experiment/object_id={linked['made']['third']['id']}").rglob("*.jsonl")
    good = part.read_bytes()
    part.write_bytes(good.replace(b'"id":', b'"no_id":', 1))
    target = unique("resumed")
    args = ["import", "--in", str(loose), "--to-project", target, "--create-project",
            "--objects", "datasets,experiments", "--state-dir", str(tmp_path / "state")]  # fmt: skip
    stopped = btpipe(emulator, *args)
    assert stopped.exit_code == 2 and "row has no string id" in stopped.stderr, stopped.output
    assert len(objects(emulator, "experiment", target)) == 3

    part.write_bytes(good)
    resumed = btpipe(emulator, *args, "--json")
    assert resumed.exit_code == 0, resumed.output
    summary = orjson.loads(resumed.stdout)
    assert summary["resumed"] is True and all(o["created"] for o in summary["objects"])
    third = objects(emulator, "experiment", target)[linked["made"]["third"]["id"]]
    assert hashes(all_rows(emulator.url, emulator.key, "experiment", third["id"]).values()) == hashes(
        all_rows(emulator.url, emulator.key, "experiment", linked["made"]["third"]["id"]).values()
    )
    # another job (a state directory of its own) did not create them: it is refused
    again = btpipe(emulator, *args[:-1], str(tmp_path / "other-state"))
    assert "already exists" in one_line_error(again, 2)


def test_a_dataset_deleted_and_made_again_under_its_name_is_not_merged_into_one(
    emulator: Emulator, tmp_path: Path
) -> None:
    """An export root with runs from before and after a dataset was deleted and created again
    under its old name holds two source datasets of one name: importing both would write the
    old one's rows into the new one's copy. The import refuses before writing anything."""
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("remade")})
    old = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": "d"})
    insert(emulator.url, emulator.key, "dataset", old["id"], [{"id": f"a{i}", "input": i} for i in range(4)])
    out = str(tmp_path / "out")
    export = ["export", "--project", project["name"], "--objects", "datasets", "--out", out]
    assert btpipe(emulator, *export).exit_code == 0
    request = urllib.request.Request(
        f"{emulator.url}/v1/dataset/{old['id']}",
        method="DELETE",
        headers={"Authorization": f"Bearer {emulator.key}"},
    )
    urllib.request.urlopen(request).close()
    new = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": "d"})
    insert(emulator.url, emulator.key, "dataset", new["id"], [{"id": f"n{i}", "input": i} for i in range(2)])
    assert btpipe(emulator, *export).exit_code == 0

    target = unique("remade-copy")
    args = [
        "import",
        "--in",
        out,
        "--to-project",
        target,
        "--create-project",
        "--state-dir",
        str(tmp_path / "s"),
    ]
    assert one_line_error(btpipe(emulator, *args), 2) == (
        f"dataset 'd': two source datasets have that name ({old['id']}, {new['id']}) and would both be "
        "written into one; load them separately (--in one run's manifest, or --until)"
    )
    assert not project_exists(emulator, target) or objects(emulator, "dataset", target) == {}


def test_migrate_links_dataset_versions_as_import_does(emulator: Emulator, linked: dict[str, Any]) -> None:
    """A source transaction id means nothing at the destination: the copy of an experiment that
    pinned its dataset as copied pins the dataset copy's newest version (reading it there gives
    the rows), and one that pinned an older version is left unpinned, with a warning."""
    target = unique("migrated")
    moved = btpipe(emulator, "migrate", "--from-project", linked["project"]["name"], "--to-project", target,
                   "--create-project", "--objects", "datasets,experiments")  # fmt: skip
    assert moved.exit_code == 0, moved.output
    datasets, experiments = objects(emulator, "dataset", target), objects(emulator, "experiment", target)
    golden = datasets["golden"]["id"]
    assert experiments["baseline"]["dataset_version"] == newest_version(emulator, "dataset", golden)
    assert experiments["candidate"]["dataset_version"] is None
    assert [line for line in moved.stderr.splitlines() if "warning" in line] == [
        "btpipe: warning: experiment:candidate: its dataset_version "
        f"{linked['made']['candidate']['dataset_version']} is older than the copied dataset:silver; "
        "it links the copy's current version"
    ]


def test_base_experiments_in_a_cycle_keep_every_link(emulator: Emulator) -> None:
    """Experiments that name each other as base (A -> B -> C -> A, set by PATCH) cannot be
    created bases first: each is created, then its link is set once the other is there."""
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("cycle")})
    made = {name: post(url, key, "/v1/experiment", {"project_id": project["id"], "name": name})
            for name in ("a", "b", "c")}  # fmt: skip
    for name, base in (("a", "b"), ("b", "c"), ("c", "a")):
        send("PATCH", url, key, f"/v1/experiment/{made[name]['id']}", {"base_exp_id": made[base]["id"]})
    target = unique("cycle-copy")
    moved = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", target,
                   "--create-project", "--objects", "experiments")  # fmt: skip
    assert moved.exit_code == 0, moved.output
    assert "warning" not in moved.stderr
    copied = objects(emulator, "experiment", target)
    ids = {e["id"]: name for name, e in copied.items()}
    assert {name: ids.get(e["base_exp_id"]) for name, e in copied.items()} == {"a": "b", "b": "c", "c": "a"}


def test_verify_compares_the_objects_themselves(emulator: Emulator, linked: dict[str, Any]) -> None:
    """Besides their rows, verify compares the datasets and experiments: one the destination
    has that the source does not, and the fields a copy carries (a description, metadata, the
    base experiment and dataset, by name)."""
    target = unique("objects")
    source = linked["project"]["name"]
    moved = btpipe(emulator, "migrate", "--from-project", source, "--to-project", target,
                   "--create-project", "--objects", "datasets,experiments")  # fmt: skip
    assert moved.exit_code == 0, moved.output
    check = ["verify", "--project", source, "--to-project", target, "--objects", "datasets,experiments"]
    same = btpipe(emulator, *check)
    assert same.exit_code == 0, same.output
    assert f"experiments -> {target}/experiments: 3 vs 3 objects: identical" in same.stdout
    assert f"datasets -> {target}/datasets: 2 vs 2 objects: identical" in same.stdout
    url, key = emulator.url, emulator.key
    copied = objects(emulator, "experiment", target)
    send("PATCH", url, key, f"/v1/experiment/{copied['baseline']['id']}", {"metadata": {"deep": {"k": 2}}})
    send("PATCH", url, key, f"/v1/experiment/{copied['candidate']['id']}", {"base_exp_id": None})
    project_id = copied["baseline"]["project_id"]
    post(url, key, "/v1/dataset", {"project_id": project_id, "name": "extra"})
    changed = btpipe(emulator, *check, "--json")
    assert changed.exit_code == 1, changed.output
    diffs = {d["source"]: d for d in orjson.loads(changed.stdout)["objects"]}
    assert diffs["experiments"]["differing_ids"] == ["baseline (metadata)", "candidate (base_exp_id)"]
    assert diffs["experiments"]["extra"] == 0
    assert (diffs["datasets"]["extra_ids"], diffs["datasets"]["differing"]) == (["extra"], 0)
    assert diffs["dataset:golden"]["ok"] and diffs["experiment:baseline"]["ok"]  # the rows are the same
    one = btpipe(
        emulator, "verify", "--project", source, "--to-project", target, "--objects", "dataset:golden"
    )
    assert one.exit_code == 0, one.output  # a named object: other datasets are not its business


def test_a_restore_until_an_earlier_run_links_the_version_that_run_copied(
    emulator: Emulator, tmp_path: Path
) -> None:
    """``--until`` restores the dataset as that run had it, so an experiment that ran against
    the dataset as then exported links the copy's newest version; a later run's newer dataset
    snapshot is not the one restored."""
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("until")})
    dataset = post(url, key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    insert(url, key, "dataset", dataset["id"], [{"id": f"g{i}", "input": i} for i in range(5)])
    pinned = newest_version(emulator, "dataset", dataset["id"])
    post(url, key, "/v1/experiment", {"project_id": project["id"], "name": "exp", "dataset_id": dataset["id"], "dataset_version": pinned})  # fmt: skip
    out = tmp_path / "backup"
    export = ["export", "--project", project["name"], "--out", str(out), "--format", "jsonl", "--objects", "datasets,experiments"]  # fmt: skip
    assert btpipe(emulator, *export).exit_code == 0
    first_run = sorted(p.stem for p in (out / "_manifests").glob("*.json"))[0]
    insert(url, key, "dataset", dataset["id"], [{"id": "late", "input": 99}])
    assert btpipe(emulator, *export, "--incremental").exit_code == 0
    target = unique("until-copy")
    restored = btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--create-project",
                      "--until", first_run, "--state-dir", str(tmp_path / "state"))  # fmt: skip
    assert restored.exit_code == 0, restored.output
    assert "warning" not in restored.stderr, restored.stderr
    copy = objects(emulator, "dataset", target)["golden"]
    assert objects(emulator, "experiment", target)["exp"]["dataset_version"] == newest_version(emulator, "dataset", copy["id"])  # fmt: skip


def test_verify_after_a_copy_of_some_objects_and_a_copy_into_existing_ones(
    emulator: Emulator, linked: dict[str, Any]
) -> None:
    """A copy of the experiments alone drops their links to the datasets it did not copy, and
    verify of that selection does not count them; a copy into objects that were there already
    brings their fields to the source's, so verify agrees after the source's were edited."""
    source = linked["project"]["name"]
    target = unique("some")
    copy = ["migrate", "--from-project", source, "--to-project", target, "--objects", "experiments"]
    assert btpipe(emulator, *copy, "--create-project").exit_code == 0
    check = ["verify", "--project", source, "--to-project", target, "--objects", "experiments"]
    same = btpipe(emulator, *check)
    assert same.exit_code == 0, same.output
    url, key = emulator.url, emulator.key
    # a copy that links another object than the source's, outside the selection, differs
    wrong = post(url, key, "/v1/dataset", {"project_id": objects(emulator, "experiment", target)["baseline"]["project_id"], "name": "golden"})  # fmt: skip
    baseline = objects(emulator, "experiment", target)["baseline"]
    other = post(url, key, "/v1/dataset", {"project_id": baseline["project_id"], "name": "other"})
    send("PATCH", url, key, f"/v1/experiment/{baseline['id']}", {"dataset_id": other["id"]})
    linked_elsewhere = btpipe(emulator, *check)
    assert linked_elsewhere.exit_code == 1 and "baseline (dataset_id)" in linked_elsewhere.stdout
    send("PATCH", url, key, f"/v1/experiment/{baseline['id']}", {"dataset_id": None})
    assert wrong["name"] == "golden"  # a dataset of the source's name does not make a dropped link one
    edited = {"description": "changed", "tags": ["t"], "metadata": {"k": 1}}
    send("PATCH", url, key, f"/v1/experiment/{linked['made']['third']['id']}", edited)
    try:
        assert btpipe(emulator, *check).exit_code == 1
        again = btpipe(emulator, *copy, "--into-existing")
        assert again.exit_code == 0, again.output
        # the destination's own "golden" now stands for the source's dataset, and it says so
        warned = [line for line in again.stderr.splitlines() if "warning" in line]
        assert warned == [
            "btpipe: warning: references to dataset:golden, which this load does not copy, name the "
            "destination's object of the same name"
        ], again.stderr
        third = objects(emulator, "experiment", target)["third"]
        assert {k: third[k] for k in edited} == edited
        after = btpipe(emulator, *check)
        assert after.exit_code == 0, after.output
    finally:
        send("PATCH", url, key, f"/v1/experiment/{linked['made']['third']['id']}",
             {"description": None, "tags": None, "metadata": None})  # fmt: skip


def test_classifications_are_copied_as_the_sdks_write_them(emulator: Emulator, tmp_path: Path) -> None:
    """An ``Eval``'s classifier results (``classifications``, written by the SDKs through
    ``/logs3``; the REST insert does not take them) reach the copy, by migrate and by import."""
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("classify")})
    experiment = post(url, key, "/v1/experiment", {"project_id": project["id"], "name": "parity"})
    found = {"parity": [{"id": "even", "label": "Even", "confidence": 0.9, "metadata": {"k": 1}}]}
    ids = {"project_id": project["id"], "experiment_id": experiment["id"]}
    rows = [{**ids, "id": "c1", "input": 2, "classifications": found}, {**ids, "id": "c2", "input": 3}]
    send("POST", url, key, "/logs3", {"rows": rows, "api_version": 2})
    source = all_rows(url, key, "experiment", experiment["id"])
    assert source["c1"]["classifications"] == found
    out = tmp_path / "backup"
    assert btpipe(emulator, "export", "--project", project["name"], "--out", str(out), "--objects", "experiments").exit_code == 0  # fmt: skip
    for how, args in (
        ("migrate", ["migrate", "--from-project", project["name"]]),
        ("import", ["import", "--in", str(out), "--state-dir", str(tmp_path / "state")]),
    ):
        target = unique(f"classify-{how}")
        copied = btpipe(
            emulator, *args, "--to-project", target, "--create-project", "--objects", "experiments"
        )
        assert copied.exit_code == 0, copied.output
        copy = all_rows(url, key, "experiment", objects(emulator, "experiment", target)["parity"]["id"])
        assert {i: r.get("classifications") for i, r in copy.items()} == {"c1": found, "c2": None}, how
        checked = btpipe(emulator, "verify", "--project", project["name"], "--to-project", target, "--objects", "experiments")  # fmt: skip
        assert checked.exit_code == 0, checked.output


def test_into_an_object_named_for_the_rows_its_fields_stay(emulator: Emulator, tmp_path: Path) -> None:
    """``--to-object`` sends the rows into an object the user names: with ``--into-existing``
    its description, tags and metadata stay its own (they were overwritten by the source's)."""
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("named")})
    source = post(url, key, "/v1/dataset", {"project_id": project["id"], "name": "raw", "description": "src"})
    insert(url, key, "dataset", source["id"], [{"id": "n1", "input": 1}])
    out = tmp_path / "backup"
    assert btpipe(emulator, "export", "--project", project["name"], "--out", str(out), "--objects", "datasets").exit_code == 0  # fmt: skip
    target = post(url, key, "/v1/project", {"name": unique("named-copy")})
    curated = {"description": "hand-written", "tags": ["gold"], "metadata": {"owner": "alice"}}
    made = post(url, key, "/v1/dataset", {"project_id": target["id"], "name": "curated", **curated})
    imported = btpipe(emulator, "import", "--in", str(out), "--to-project", target["name"], "--to-object",
                      "dataset:curated", "--into-existing", "--state-dir", str(tmp_path / "state"))  # fmt: skip
    assert imported.exit_code == 0, imported.output
    now = send("GET", url, key, f"/v1/dataset/{made['id']}")
    assert {k: now[k] for k in curated} == curated
    assert set(all_rows(url, key, "dataset", made["id"])) == {"n1"}


def test_fields_equal_as_json_are_compared_as_json(emulator: Emulator, linked: dict[str, Any]) -> None:
    """``true`` and ``1`` are equal in Python, not in JSON: a copy into an existing object
    updates such a field, verify names it, and a nested key the source dropped goes too."""
    url, key = emulator.url, emulator.key
    source = linked["project"]["name"]
    target = unique("json-equal")
    copy = ["migrate", "--from-project", source, "--to-project", target, "--objects", "datasets"]
    assert btpipe(emulator, *copy, "--create-project").exit_code == 0
    copied = objects(emulator, "dataset", target)["golden"]
    send("PATCH", url, key, f"/v1/dataset/{copied['id']}", {"metadata": {"flag": 1, "a": {"x": 1, "y": 2}}})
    golden = linked["made"]["golden"]["id"]
    send("PATCH", url, key, f"/v1/dataset/{golden}", {"metadata": {"flag": True, "a": {"x": 1}}})
    try:
        check = ["verify", "--project", source, "--to-project", target, "--objects", "datasets", "--json"]
        before = btpipe(emulator, *check)
        assert before.exit_code == 1
        diffs = {d["source"]: d for d in orjson.loads(before.stdout)["objects"]}
        assert diffs["datasets"]["differing_ids"] == ["golden (metadata)"]
        again = btpipe(emulator, *copy, "--into-existing")
        assert again.exit_code == 0, again.output
        assert "warning" not in again.stderr, again.stderr
        assert objects(emulator, "dataset", target)["golden"]["metadata"] == {"flag": True, "a": {"x": 1}}
        assert btpipe(emulator, *check).exit_code == 0
    finally:
        send("PATCH", url, key, f"/v1/dataset/{golden}", {"metadata": None})


def test_verify_in_compares_the_exported_objects_fields_too(
    emulator: Emulator, linked: dict[str, Any], tmp_path: Path
) -> None:
    """``verify --in`` compares each dataset's and experiment's fields as the export recorded
    them (description, metadata, links to datasets and base experiments), not only the rows:
    a restore that lost them is not identical."""
    target = unique("restored-fields")
    imported = btpipe(emulator, "import", "--in", str(linked["out"]), "--to-project", target,
                      "--create-project", "--state-dir", str(tmp_path / "state"))  # fmt: skip
    assert imported.exit_code == 0, imported.output
    check = ["verify", "--in", str(linked["out"]), "--to-project", target, "--json"]
    same = btpipe(emulator, *check)
    assert same.exit_code == 0, same.output
    restored = objects(emulator, "experiment", target)
    url, key = emulator.url, emulator.key
    send(
        "PATCH",
        url,
        key,
        f"/v1/experiment/{restored['third']['id']}",
        {"description": "lost", "base_exp_id": None},
    )
    send(
        "PATCH",
        url,
        key,
        f"/v1/dataset/{objects(emulator, 'dataset', target)['silver']['id']}",
        {"metadata": {"k": 1}},
    )
    changed = btpipe(emulator, *check)
    assert changed.exit_code == 1, changed.output
    diffs = {d["source"]: d for d in orjson.loads(changed.stdout)["objects"]}
    assert diffs["experiments"]["differing_ids"] == ["third (description, base_exp_id)"]
    assert diffs["datasets"]["differing_ids"] == ["silver (metadata)"]
