"""What the copy of a dataset or experiment carries over from its source object.

Import and migrate create copies with these fields; verify compares them. References name
other objects by id, so a copy remaps them (and drops one to an object not copied), and verify
compares them by the name of what they point at.
"""

from __future__ import annotations

from typing import Final

from pipeline.querylang.ast import ObjectType

#: The kinds of object copied whole (the project logs are the project's own).
COPIED_KINDS: Final[tuple[ObjectType, ...]] = ("dataset", "experiment")
COPIED_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "dataset": ("description", "metadata", "tags"),
    "experiment": ("description", "metadata", "tags", "public", "repo_info", "internal_metadata"),
}
#: Fields of an experiment holding the id of another object of its project.
REFERENCES: Final = ("base_exp_id", "dataset_id")
#: The field of an experiment naming the function (of ``function_type`` parameters) it ran
#: with; a copy names the function's copy, set once the configuration is written.
PARAMETERS: Final = "parameters_id"
