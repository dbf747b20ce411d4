"""Attachments an object itself refers to (a dataset's or an experiment's metadata, a prompt's),
not its rows: copied with the object by migrate and by export and import into another org, and
compared by content by verify, which catches a copy naming bytes its org does not hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.attachments.seed import PDF, PNG, read, upload
from tests.conftest import Emulator
from tests.helpers import btpipe, insert, post, send, unique

OTHER = "OTHER_KEY"
CHAT = {"type": "chat", "messages": [{"role": "user", "content": "Describe {{input}}"}]}


@pytest.fixture(scope="module")
def source(emulator: Emulator) -> dict[str, Any]:
    url, key = emulator.url, emulator.key
    project = post(url, key, "/v1/project", {"name": unique("object-attach")})
    png = upload(url, key, PNG, "a.png", "image/png")
    pdf = upload(url, key, PDF, "b.pdf", "application/pdf")
    dataset = post(
        url, key, "/v1/dataset", {"project_id": project["id"], "name": "golden", "metadata": {"cover": png}}
    )
    insert(url, key, "dataset", dataset["id"], [{"id": "d1", "input": 1}])
    post(
        url,
        key,
        "/v1/experiment",
        {"project_id": project["id"], "name": "run", "metadata": {"figure": [pdf]}},
    )
    send("PUT", url, key, "/v1/prompt", {"project_id": project["id"], "name": "img", "slug": "img",
                                         "prompt_data": {"prompt": CHAT}, "metadata": {"example": png}})  # fmt: skip
    return {"project": project, "png": png, "pdf": pdf}


def _copied(emulator: Emulator, name: str, source: dict[str, Any]) -> dict[str, Any]:
    """The copy's objects, each attachment they name read back in the copy's org."""
    url, key = emulator.url, emulator.other_org_key
    (project,) = send("GET", url, key, "/v1/project", params={"project_name": name})["objects"]
    (dataset,) = send("GET", url, key, "/v1/dataset", params={"project_id": project["id"]})["objects"]
    (experiment,) = send("GET", url, key, "/v1/experiment", params={"project_id": project["id"]})["objects"]
    (prompt,) = send("GET", url, key, "/v1/prompt", params={"project_id": project["id"]})["objects"]
    refs = [dataset["metadata"]["cover"], experiment["metadata"]["figure"][0], prompt["metadata"]["example"]]
    assert [read(url, key, ref) for ref in refs] == [PNG, PDF, PNG]
    assert not {ref["key"] for ref in refs} & {source["png"]["key"], source["pdf"]["key"]}
    return {"project": project, "dataset": dataset}


def test_migrate_copies_them(emulator: Emulator, source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv(OTHER, emulator.other_org_key)
    target = unique("object-attach-migrated")
    args = ("migrate", "--from-project", source["project"]["name"], "--to-project", target, "--create-project",
            "--to-api-key-env", OTHER, "--into-existing", "--state-dir", str(tmp_path / "state"))  # fmt: skip
    for _ in range(2):
        migrated = btpipe(emulator, *args)
        assert migrated.exit_code == 0, migrated.output
        copy = _copied(emulator, target, source)
    verify = (
        "verify",
        "--project",
        source["project"]["name"],
        "--to-project",
        target,
        "--to-api-key-env",
        OTHER,
    )
    verified = btpipe(emulator, *verify)
    assert verified.exit_code == 0, verified.output
    # a copy naming the source's key names bytes its org does not hold: a difference
    dataset = copy["dataset"]
    send("PATCH", emulator.url, emulator.other_org_key, f"/v1/dataset/{dataset['id']}", {"metadata": {"cover": source["png"]}})  # fmt: skip
    caught = btpipe(emulator, *verify)
    assert caught.exit_code == 1 and "golden (metadata)" in caught.output, caught.output


def test_export_and_import_copy_them(emulator: Emulator, source: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "backup"
    exported = btpipe(emulator, "export", "--project", source["project"]["name"], "--out", str(out))
    assert exported.exit_code == 0, exported.output
    target = unique("object-attach-imported")
    imported = btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--create-project",
                      "--state-dir", str(tmp_path / "state"), key=emulator.other_org_key)  # fmt: skip
    assert imported.exit_code == 0, imported.output
    _copied(emulator, target, source)
    verified = btpipe(
        emulator, "verify", "--in", str(out), "--to-project", target, key=emulator.other_org_key
    )
    assert verified.exit_code == 0, verified.output


def test_on_error_skip_goes_past_an_object_whose_attachment_was_left_out(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    """An export with ``--attachments skip`` holds none of the bytes: an import stops at the
    first object naming one, and with ``--on-error skip`` goes on, every object copied (the
    reference left as it was), each such object listed and exit 1."""
    out = tmp_path / "backup"
    exported = btpipe(emulator, "export", "--project", source["project"]["name"], "--out", str(out),
                      "--attachments", "skip")  # fmt: skip
    assert exported.exit_code == 0, exported.output
    args = ("import", "--in", str(out), "--create-project")
    stopped = btpipe(emulator, *args, "--to-project", unique("stopped"), "--state-dir", str(tmp_path / "a"),
                     key=emulator.other_org_key)  # fmt: skip
    assert stopped.exit_code == 1 and "is not in the export" in stopped.stderr
    target = unique("skipped-through")
    skipped = btpipe(emulator, *args, "--to-project", target, "--state-dir", str(tmp_path / "b"), "--on-error", "skip",
                     key=emulator.other_org_key)  # fmt: skip
    assert skipped.exit_code == 1, skipped.output
    lines = [line for line in skipped.stderr.splitlines() if "attachment not copied:" in line]
    assert len(lines) == 3 and all("that reference is left as it was" in line for line in lines), lines
    url, key = emulator.url, emulator.other_org_key
    (project,) = send("GET", url, key, "/v1/project", params={"project_name": target})["objects"]
    (dataset,) = send("GET", url, key, "/v1/dataset", params={"project_id": project["id"]})["objects"]
    (prompt,) = send("GET", url, key, "/v1/prompt", params={"project_id": project["id"]})["objects"]
    assert (dataset["metadata"]["cover"], prompt["metadata"]["example"]) == (source["png"], source["png"])
    # the export holds no bytes to compare: a reference naming none in the copy's org differs
    checked = btpipe(emulator, "verify", "--in", str(out), "--to-project", target, key=emulator.other_org_key)
    assert checked.exit_code == 1 and "golden (metadata)" in checked.output, checked.output
