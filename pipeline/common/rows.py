"""The one place that knows the shape of a Braintrust row.

Every stage asks this module which fields a row of an object type carries, which of
them the server owns (and a writer must therefore drop), and which keys tie a row to
its object. Keeping it in one module means the emulator, the Parquet schema and the
import transform cannot drift apart.
"""

from __future__ import annotations

from typing import Final

from pipeline.querylang.ast import OBJECT_TYPES, ObjectType

__all__ = ["OBJECT_TYPES", "ObjectType"]

#: Fields the server assigns on every write; a writer must not send them back.
READ_ONLY_FIELDS: Final[frozenset[str]] = frozenset(
    {"_xact_id", "_pagination_key", "org_id", "is_root", "comments", "audit_data", "_async_scoring_state"}
)

#: Keys that name the object a row belongs to, per object type.
OBJECT_KEY_FIELDS: Final[dict[ObjectType, tuple[str, ...]]] = {
    "project_logs": ("project_id", "log_id"),
    "dataset": ("project_id", "dataset_id"),
    "experiment": ("project_id", "experiment_id"),
}
ALL_OBJECT_KEY_FIELDS: Final[frozenset[str]] = frozenset(
    {"project_id", "log_id", "dataset_id", "experiment_id"}
)

#: Identity and trace-structure fields a copy must keep so traces and timestamps survive.
IDENTITY_FIELDS: Final[tuple[str, ...]] = ("id", "span_id", "root_span_id", "span_parents", "created")

#: Free-form data fields a user writes, per object type (from the spec's insert schemas).
DATA_FIELDS: Final[dict[ObjectType, tuple[str, ...]]] = {
    "project_logs": (
        "input", "output", "expected", "error", "scores", "metadata", "metrics", "tags",
        "context", "span_attributes", "origin", "facets",
    ),
    "experiment": (
        "input", "output", "expected", "error", "scores", "metadata", "metrics", "tags",
        "context", "span_attributes", "origin", "facets", "dataset_record_id",
    ),
    "dataset": ("input", "expected", "metadata", "tags", "origin", "facets"),
}  # fmt: skip

#: Write-control fields: instructions to the server, never stored in a row.
CONTROL_FIELDS: Final[frozenset[str]] = frozenset(
    {"_object_delete", "_is_merge", "_merge_paths", "_array_delete", "_parent_id"}
)

#: Fields a migration legitimately changes; verify ignores them.
DESTINATION_FIELDS: Final[frozenset[str]] = READ_ONLY_FIELDS | ALL_OBJECT_KEY_FIELDS | frozenset({"origin"})
