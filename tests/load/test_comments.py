"""Comments on rows (what feedback attaches) survive import and migrate, exactly once, and
``verify`` compares what they say."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from pipeline.api.objects import ObjectRef
from pipeline.common.state import FilePosition
from pipeline.common.storage import open_storage
from pipeline.load.batcher import Item
from pipeline.load.importer import object_runs
from pipeline.load.ordered import CommentLedger
from pipeline.sources.inputs import find_inputs
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, unique


def said(rows: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, Any, Any, Any]]]:
    """Per row with comments: each comment's id, text, source and metadata, in order."""
    return {
        row_id: [(c["id"], c["comment"], c["source"], c["metadata"]) for c in row["comments"]]
        for row_id, row in rows.items()
        if row.get("comments")
    }


@pytest.fixture
def commented(emulator: Emulator) -> dict[str, Any]:
    """A project whose logs and dataset carry comments, one row with two."""
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("commented")})
    dataset = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": "d"})
    insert(
        emulator.url,
        emulator.key,
        "project_logs",
        project["id"],
        [{"id": f"l{i}", "input": i} for i in range(5)],
    )
    insert(emulator.url, emulator.key, "dataset", dataset["id"], [{"id": "d1", "input": 1, "expected": 1}])
    feedback = [
        {"id": "l1", "comment": "looks wrong", "scores": {"human": 0.2}, "source": "app"},
        {"id": "l1", "comment": "fixed now", "metadata": {"ticket": 7}},
        {"id": "l3", "comment": "fine"},
    ]
    post(emulator.url, emulator.key, f"/v1/project_logs/{project['id']}/feedback", {"feedback": feedback})
    post(emulator.url, emulator.key, f"/v1/dataset/{dataset['id']}/feedback", {"feedback": [{"id": "d1", "comment": "note"}]})  # fmt: skip
    return {"project": project, "dataset": dataset}


def get(emulator: Emulator, path: str) -> Any:
    request = urllib.request.Request(emulator.url + path, headers={"Authorization": f"Bearer {emulator.key}"})
    with urllib.request.urlopen(request) as response:
        return orjson.loads(response.read())


def copies(emulator: Emulator, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The logs and dataset rows of project ``name``'s copy."""
    (project,) = get(emulator, f"/v1/project?project_name={name}")["objects"]
    (dataset,) = get(emulator, f"/v1/dataset?project_id={project['id']}&dataset_name=d")["objects"]
    return all_rows(emulator.url, emulator.key, "project_logs", project["id"]), all_rows(
        emulator.url, emulator.key, "dataset", dataset["id"]
    )


def test_import_and_migrate_copy_comments_once_and_verify_compares_them(
    emulator: Emulator, commented: dict[str, Any], tmp_path: Path
) -> None:
    source = commented["project"]
    logs = all_rows(emulator.url, emulator.key, "project_logs", source["id"])
    rows = all_rows(emulator.url, emulator.key, "dataset", commented["dataset"]["id"])
    assert len(said(logs)["l1"]) == 2 and len(said(rows)["d1"]) == 1

    out = str(tmp_path / "out")
    assert btpipe(emulator, "export", "--project", source["name"], "--out", out).exit_code == 0
    restored = unique("restored")
    load = [
        "import",
        "--in",
        out,
        "--to-project",
        restored,
        "--create-project",
        "--state-dir",
        str(tmp_path / "s"),
    ]
    first = btpipe(emulator, *load)
    assert first.exit_code == 0, first.output
    assert "comments: 4 given to the rows written" in first.output
    again = btpipe(emulator, *load, "--restart", "--into-existing")  # sent twice: no comment doubles
    assert again.exit_code == 0, again.output
    copied_logs, copied_rows = copies(emulator, restored)
    assert said(copied_logs) == said(logs) and said(copied_rows) == said(rows)
    check = btpipe(emulator, "verify", "--in", out, "--to-project", restored)
    assert check.exit_code == 0, check.output

    migrated = unique("migrated")
    moved = btpipe(emulator, "migrate", "--from-project", source["name"], "--to-project", migrated,
                   "--create-project", "--state-dir", str(tmp_path / "m"))  # fmt: skip
    assert moved.exit_code == 0, moved.output
    moved_logs, moved_rows = copies(emulator, migrated)
    assert said(moved_logs) == said(logs) and said(moved_rows) == said(rows)
    assert btpipe(emulator, "verify", "--project", source["name"], "--to-project", migrated).exit_code == 0

    # a comment the copy lacks is a difference
    post(emulator.url, emulator.key, f"/v1/project_logs/{source['id']}/feedback", {"feedback": [{"id": "l4", "comment": "late"}]})  # fmt: skip
    late = btpipe(emulator, "verify", "--project", source["name"], "--to-project", migrated)
    assert late.exit_code == 1, late.output


def test_verify_tells_a_comment_of_another_source_or_metadata_apart(
    emulator: Emulator, commented: dict[str, Any], tmp_path: Path
) -> None:
    """A copy keeps each comment's source and metadata, so verify compares them too."""
    source = commented["project"]
    migrated = unique("migrated")
    moved = btpipe(emulator, "migrate", "--from-project", source["name"], "--to-project", migrated,
                   "--create-project", "--objects", "logs", "--state-dir", str(tmp_path / "m"))  # fmt: skip
    assert moved.exit_code == 0, moved.output
    (project,) = get(emulator, f"/v1/project?project_name={migrated}")["objects"]
    [(comment_id, text, _, _)] = said(all_rows(emulator.url, emulator.key, "project_logs", project["id"]))[
        "l3"
    ]
    for audit in ({"_audit_source": "app"}, {"_audit_metadata": {"ticket": 8}}):
        row = {
            "id": comment_id,
            "origin": {"id": "l3"},
            "comment": text,
            "project_id": project["id"],
            "log_id": "g",
        }
        post(emulator.url, emulator.key, "/logs3", {"rows": [{**row, **audit}], "api_version": 2})
        check = btpipe(
            emulator, "verify", "--project", source["name"], "--to-project", migrated, "--objects", "logs"
        )
        assert check.exit_code == 1, (audit, check.output)
        post(
            emulator.url,
            emulator.key,
            "/logs3",
            {"rows": [{**row, "_audit_source": "external"}], "api_version": 2},
        )
        check = btpipe(
            emulator, "verify", "--project", source["name"], "--to-project", migrated, "--objects", "logs"
        )
        assert check.exit_code == 0, (audit, check.output)


def test_a_comment_too_big_for_any_request_stops_the_import_or_is_recorded(
    emulator: Emulator, tmp_path: Path
) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("big-comment")})
    insert(
        emulator.url,
        emulator.key,
        "project_logs",
        project["id"],
        [{"id": f"l{i}", "input": i} for i in range(3)],
    )
    feedback = [{"id": "l1", "comment": "x" * 300_000}, {"id": "l2", "comment": "short"}]
    post(emulator.url, emulator.key, f"/v1/project_logs/{project['id']}/feedback", {"feedback": feedback})
    out = str(tmp_path / "out")
    assert btpipe(emulator, "export", "--project", project["name"], "--out", out).exit_code == 0
    (big,) = said(all_rows(emulator.url, emulator.key, "project_logs", project["id"]))["l1"]

    target = unique("big-comment-copy")
    load = ["import", "--in", out, "--to-project", target, "--create-project", "--max-batch-bytes", "200000"]
    stopped = btpipe(emulator, *load, "--state-dir", str(tmp_path / "a"))
    assert stopped.exit_code == 1
    (line,) = stopped.stderr.strip().splitlines()  # one line, naming the comment, its row and the limit
    assert line.startswith(
        f"btpipe: error: the comment {big[0]!r} on event 'l1' at {out}/object_type=project_logs/"
    )
    assert line.endswith(
        "bytes encoded, more than the request limit of 200,000 bytes; "
        "re-run with --on-error skip to record it in an error file and go on"
    )

    errors = tmp_path / "errors.jsonl"
    skipped = btpipe(emulator, *load, "--state-dir", str(tmp_path / "b"), "--on-error", "skip",
                     "--error-file", str(errors), "--restart", "--into-existing")  # fmt: skip
    assert skipped.exit_code == 1, skipped.output
    assert f"1 comments too big to send were recorded in {errors}" in skipped.output
    (copy,) = get(emulator, f"/v1/project?project_name={target}")["objects"]
    rows = all_rows(emulator.url, emulator.key, "project_logs", copy["id"])
    assert sorted(rows) == ["l0", "l1", "l2"]
    assert {k: [c[1] for c in v] for k, v in said(rows).items()} == {"l2": [{"text": "short"}]}
    (entry,) = [orjson.loads(line) for line in errors.read_bytes().splitlines()]
    assert (entry["id"], entry["event"]["origin"], entry["event"]["comment"]) == (
        big[0],
        {"id": "l1"},
        big[1],
    )


def test_a_chain_restore_gives_a_row_written_again_after_a_delete_only_its_new_comments(
    emulator: Emulator, commented: dict[str, Any], tmp_path: Path
) -> None:
    """A row deleted and written again under its id between two runs of a chain has lost its
    comments at the source; the server keeps a row's comments when it is written again, so a
    restore must delete the copy before writing the new version, or the old comments stay."""
    source, dataset = commented["project"], commented["dataset"]
    out = str(tmp_path / "out")
    assert btpipe(emulator, "export", "--project", source["name"], "--out", out).exit_code == 0

    logs_path, rows_path = f"project_logs/{source['id']}", f"dataset/{dataset['id']}"
    insert(emulator.url, emulator.key, "project_logs", source["id"], [{"id": "l1", "_object_delete": True}])
    insert(emulator.url, emulator.key, "project_logs", source["id"], [{"id": "l1", "input": "again"}])
    insert(emulator.url, emulator.key, "dataset", dataset["id"], [{"id": "d1", "_object_delete": True}])
    insert(emulator.url, emulator.key, "dataset", dataset["id"], [{"id": "d1", "input": 2, "expected": 2}])
    post(emulator.url, emulator.key, f"/v1/{rows_path}/feedback", {"feedback": [{"id": "d1", "comment": "new note"}]})  # fmt: skip
    post(emulator.url, emulator.key, f"/v1/{logs_path}/feedback", {"feedback": [{"id": "l3", "comment": "still fine"}]})  # fmt: skip
    insert(emulator.url, emulator.key, "project_logs", source["id"], [{"id": "l2", "input": "changed"}])
    assert (
        btpipe(emulator, "export", "--project", source["name"], "--out", out, "--incremental").exit_code == 0
    )

    logs = all_rows(emulator.url, emulator.key, "project_logs", source["id"])
    rows = all_rows(emulator.url, emulator.key, "dataset", dataset["id"])
    assert "l1" not in said(logs) and [c[1] for c in said(rows)["d1"]] == [{"text": "new note"}]
    assert len(said(logs)["l3"]) == 2

    restored = unique("restored")
    load = btpipe(emulator, "import", "--in", out, "--to-project", restored, "--create-project",
                  "--state-dir", str(tmp_path / "s"))  # fmt: skip
    assert load.exit_code == 0, load.output
    copied_logs, copied_rows = copies(emulator, restored)
    assert said(copied_logs) == said(logs) and said(copied_rows) == said(rows)
    fields = ("input", "expected")
    assert {k: [v.get(f) for f in fields] for k, v in copied_logs.items()} == {k: [v.get(f) for f in fields] for k, v in logs.items()}  # fmt: skip
    assert {k: [v.get(f) for f in fields] for k, v in copied_rows.items()} == {k: [v.get(f) for f in fields] for k, v in rows.items()}  # fmt: skip
    check = btpipe(emulator, "verify", "--in", out, "--to-project", restored)
    assert check.exit_code == 0, check.output
    for resume in (False, True):  # and a restore resumed right after the base run's last row
        events = restore_events(out, resume)
        assert [row_id for counted, row_id in events if not counted] == ["l1"]
        assert events.index((False, "l1")) < max(i for i, e in enumerate(events) if e == (True, "l1"))


class _Copier:
    async def rewrite(self, items: list[Item]) -> list[Item]:
        return items


def restore_events(out: str, resume: bool) -> list[tuple[bool, str]]:
    """(counted, id) of each event a restore of ``out``'s logs sends, in order; with
    ``resume``, of one resumed right after the base run's last row."""
    storage = open_storage(out)
    (logs,) = [o for o in find_inputs(storage, "") if o.object_type == "project_logs"]
    mark = None
    if resume:
        last = [p for p in logs.files if logs.runs[p] == logs.runs[logs.files[0]]][-1]
        mark = FilePosition(last, logs.listed[last].rows - 1)
    ref = ObjectRef("project_logs", "copy", "copy", "project", {})

    async def read() -> list[tuple[bool, str]]:
        runs = object_runs(storage, logs, ref, mark, _Copier(), {})  # type: ignore[arg-type]
        return [(item.counted, item.id) for run in runs async for chunk in run for item in chunk]

    return anyio.run(read)


def test_a_file_holding_an_id_twice_with_one_comment_imports(emulator: Emulator, tmp_path: Path) -> None:
    """Two versions of a row in one file (two exports joined), each with the same comment: the
    second version wins and the comment is given once."""
    comment = {
        "id": "c-1",
        "created": "2026-01-01T00:00:00.000Z",
        "comment": {"text": "hi"},
        "origin": {"id": "a"},
    }
    lines = [{"id": "a", "input": "v1", "comments": [comment]}, {"id": "b", "input": "b"},
             {"id": "a", "input": "v2", "comments": [comment]}]  # fmt: skip
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    target = unique("twice")
    load = btpipe(emulator, "import", "--in", str(path), "--to-project", target, "--create-project",
                  "--to-object", "logs", "--state-dir", str(tmp_path / "s"))  # fmt: skip
    assert load.exit_code == 0, load.output
    (project,) = get(emulator, f"/v1/project?project_name={target}")["objects"]
    rows = all_rows(emulator.url, emulator.key, "project_logs", project["id"])
    assert {k: v["input"] for k, v in rows.items()} == {"a": "v2", "b": "b"}
    assert {k: [c[:2] for c in v] for k, v in said(rows).items()} == {"a": [("c-1", {"text": "hi"})]}


def test_the_ledger_keeps_the_later_version_of_an_id_given_twice() -> None:
    ledger = CommentLedger()
    try:
        ledger.give([("a", frozenset({"c1"})), ("b", frozenset()), ("a", frozenset({"c1", "c2"}))])
        assert not ledger.empty
        versions = [("a", frozenset({"c1"})), ("b", frozenset()), ("a", frozenset({"c2", "c1"}))]
        assert ledger.lacking(versions) == []
        assert ledger.lacking([("a", frozenset({"c1"})), ("a", frozenset({"c2"}))]) == ["a"]
        ledger.forget(["a"])
        assert ledger.lacking([("a", frozenset())]) == []
    finally:
        ledger.close()
