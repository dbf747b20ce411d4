"""Where an export puts things, relative to the output root.

    object_type=<type>/object_id=<id>/run=<run id>/r<range>-part-<n>.<ext>   data (Hive layout)
    _manifests/<run id>.json                                                one manifest per run
    _tombstones/object_type=<type>/object_id=<id>/run=<run id>/tombstones.jsonl   ids gone since the last run
    _config/kind=<kind>/run=<run id>/<kind>.jsonl                           project configuration objects
    _state/export-<project id>.json                                         resume + incremental state
    delta/<type>/                                                           --format delta: one Delta table per type
    _attachments/sha256=<hex>                                               attachment bytes, once each
    _attachments/keys/<sha256 of the source key>.json                       source key -> sha256, name, type, size

Partition values are ids and generated run ids, never user-chosen names, so a name holding
``/`` or ``..`` cannot steer a write outside the output root. DuckDB reads the data with
``read_parquet('<out>/object_type=*/*/*/*.parquet', hive_partitioning = true)``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final


def new_run_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")


def object_dir(object_type: str, object_id: str, run_id: str) -> str:
    return f"object_type={object_type}/object_id={object_id}/run={run_id}"


#: A run's directory in a path: ``.../run=<run id>/...``.
_RUN_DIR: Final = re.compile(r"(?:^|/)run=([^/]+)/")


def runs_in(path: str) -> list[str]:
    """The run ids of the run directories ``path`` passes through."""
    return _RUN_DIR.findall(path)


def root_above(path: str) -> str | None:
    """The export root holding ``path`` when it lies in the object directories' layout (a
    directory or file below ``object_type=...``), else None."""
    marker = "/object_type="
    return (path[: path.index(marker)] or ".") if marker in path else None


#: Where tombstone files live: apart from the data, so that a glob over ``object_type=*``
#: (or any reader skipping names starting with ``_``) never takes an id to delete for a row.
TOMBSTONE_DIR = "_tombstones"


def tombstone_path(object_type: str, object_id: str, run_id: str) -> str:
    return f"{TOMBSTONE_DIR}/{object_dir(object_type, object_id, run_id)}/tombstones.jsonl"


#: Where ``--format delta`` keeps its tables: ``delta/<object type>/``, each partitioned by object id.
DELTA_DIR = "delta"


#: A Delta table's log directory, inside the table.
DELTA_LOG = "_delta_log"


def delta_table(object_type: str) -> str:
    return f"{DELTA_DIR}/{object_type}"


#: Where the project's configuration objects live: apart from the data, like tombstones.
CONFIG_DIR = "_config"


def config_path(kind: str, run_id: str) -> str:
    """The file of one configuration kind of one run (every object of the kind, a JSON object
    a line)."""
    return f"{CONFIG_DIR}/kind={kind}/run={run_id}/{kind}.jsonl"


def range_prefix(range_index: int) -> str:
    return f"r{range_index:02d}-part"


#: Where each project's export state lives: ``<EXPORT_STATES><project id>.json``.
EXPORT_STATES = "_state/export-"


def state_path(project_id: str) -> str:
    return f"{EXPORT_STATES}{project_id}.json"


#: Where attachments go: each one once, named by the SHA-256 of its bytes, plus one small
#: index file per source key (:mod:`pipeline.common.attachments`).
ATTACHMENT_DIR = "_attachments"


def attachment_path(sha256: str) -> str:
    return f"{ATTACHMENT_DIR}/sha256={sha256}"


def attachment_index_path(key_digest: str) -> str:
    """The index file of one source key; ``key_digest`` is a hash of the key, so a key (which
    the API makes a UUID, but is only a string) never steers a path."""
    return f"{ATTACHMENT_DIR}/keys/{key_digest}.json"
