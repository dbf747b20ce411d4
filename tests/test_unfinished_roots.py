"""An export root holding only the files of a run its state says is unfinished is refused as an
input (the files hold part of the rows); a state that cannot be read is refused too, since
which runs are unfinished cannot be told; any other root or a directory below it is taken as
its files are."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.common.errors import UsageError
from pipeline.common.state import ExportState, RunState
from pipeline.common.storage import open_storage
from pipeline.sources.inputs import find_inputs

PART = "object_type=project_logs/object_id=P/run=R1/r00-part-00000.jsonl"


def state(run_id: object | None) -> bytes:
    """An export state (as the export writes it) whose unfinished run is ``run_id``, if any."""
    run = None if run_id is None else RunState(run_id, "2026-01-01T00:00:00+00:00", {}, [])  # type: ignore[arg-type]
    return orjson.dumps(ExportState("P", run=run).to_json())


def root_with(tmp_path: Path, saved: bytes | None) -> Path:
    (tmp_path / PART).parent.mkdir(parents=True)
    (tmp_path / PART).write_bytes(b'{"id": "a", "input": 1}\n')
    if saved is not None:
        (tmp_path / "_state").mkdir()
        (tmp_path / "_state" / "export-P.json").write_bytes(saved)
    return tmp_path


def inputs(root: Path, prefix: str = "") -> list[str]:
    return [path for obj in find_inputs(open_storage(str(root)), prefix) for path in obj.files]


def test_the_files_of_an_unfinished_run_are_refused(tmp_path: Path) -> None:
    root = root_with(tmp_path, state("R1"))
    with pytest.raises(UsageError, match="run R1 of this export is unfinished"):
        inputs(root)
    assert inputs(root, "object_type=project_logs/") == [PART]  # a directory below: as its files are


@pytest.mark.parametrize(
    "saved",
    [state(None), state("R0"), None],  # finished, another run, no state at all
)
def test_other_roots_are_taken_as_their_files_are(tmp_path: Path, saved: bytes | None) -> None:
    assert inputs(root_with(tmp_path, saved)) == [PART]


@pytest.mark.parametrize(
    "saved", [b'{"format": 1, "project_id"', b"[1, 2]", b'{"format": 1, "run": {}}', state(["R1"])]
)  # a run id of another type is a damaged file like the others
def test_a_state_that_cannot_be_read_is_refused(tmp_path: Path, saved: bytes) -> None:
    with pytest.raises(UsageError, match=r"corrupt state file.*cannot be told"):
        inputs(root_with(tmp_path, saved))
