"""The export's durable state: the unfinished run (to resume) and per-object watermarks.

One JSON file per project under the output root (see :mod:`pipeline.common.layout`). A range's
``cursor`` is the cursor of the last page that is inside a published file, so resuming from
it neither skips nor repeats a row; ``next_part`` keeps file names deterministic across a
crash, so a file published just before a crash is overwritten, not doubled, on resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATE_FORMAT = 1


@dataclass
class RangeState:
    index: int
    low: str | None
    high: str | None
    cursor: str | None = None
    next_part: int = 0
    rows: int = 0
    done: bool = False
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ObjectState:
    object_type: str
    id: str
    name: str
    project_id: str
    version: str | None
    expected_rows: int
    since: str | None
    ranges: list[RangeState]
    pinned: bool = True  # False: read at the server's current state (see Snapshot.read_version)
    info: dict[str, Any] = field(default_factory=dict)  # a dataset's or experiment's REST fields

    @property
    def read_version(self) -> str | None:
        return self.version if self.pinned else None

    @property
    def key(self) -> str:
        return f"{self.object_type}:{self.id}"

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.ranges)


@dataclass
class RunState:
    run_id: str
    started_at: str
    options: dict[str, Any]
    objects: list[ObjectState]


@dataclass
class ExportState:
    project_id: str
    watermarks: dict[str, dict[str, Any]] = field(default_factory=dict)
    run: RunState | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportState:
        run = data.get("run")
        return cls(
            project_id=data["project_id"],
            watermarks=data.get("watermarks", {}),
            run=None
            if run is None
            else RunState(
                run_id=run["run_id"],
                started_at=run["started_at"],
                options=run["options"],
                objects=[
                    ObjectState(
                        **{k: v for k, v in obj.items() if k != "ranges"},
                        ranges=[RangeState(**r) for r in obj["ranges"]],
                    )
                    for obj in run["objects"]
                ],
            ),
        )
