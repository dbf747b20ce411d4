"""Exporting a project's configuration objects: one JSONL file per kind per run.

Every run writes the whole current set of each kind it selects (``--incremental`` ones too):
the sets are small, and a restore then takes each kind from the newest run that read it,
without a chain. Objects are written exactly as the API returned them (every field), one a
line, in listing order; the file appears atomically and is listed in the manifest with its
count, size and sha256 (:class:`~pipeline.common.manifest.ConfigManifest`). A kind the
project has none of gets an entry without a file, so a restore knows the set was empty.

A prompt's earlier versions, where the API lists them, go to one more file,
``prompt_version``: each earlier version whole, oldest first per prompt, so that an import can
replay a prompt's history before its current version.
"""

from __future__ import annotations

import hashlib
from typing import Any

import anyio

from pipeline.api.client import BraintrustClient
from pipeline.api.config import fetch_config
from pipeline.common import jsoncodec, layout
from pipeline.common.config_kinds import VERSIONS_OF, ConfigSet
from pipeline.common.manifest import ConfigManifest, FileInfo
from pipeline.common.storage import Storage


def _write_kind(storage: Storage, kind: str, objects: list[dict[str, Any]], run_id: str) -> ConfigManifest:
    """Publish one kind's file (blocking: run in a thread)."""
    if not objects:
        return ConfigManifest(kind, 0, None)
    data = b"".join(jsoncodec.dumps(obj) + b"\n" for obj in objects)
    path = layout.config_path(kind, run_id)
    storage.write_bytes(path, data)
    info = FileInfo(path, len(objects), len(data), hashlib.sha256(data).hexdigest())
    return ConfigManifest(kind, len(objects), info)


async def export_config(
    client: BraintrustClient, storage: Storage, project: dict[str, Any], kinds: list[str], run_id: str
) -> tuple[tuple[ConfigManifest, ...], ConfigSet]:
    """Read and publish ``kinds`` of ``project``; the manifest entries and what was read."""
    found = await fetch_config(client, project, kinds, versions=True)
    entries = []
    for kind, objects in found.objects.items():
        entries.append(await anyio.to_thread.run_sync(_write_kind, storage, kind, objects, run_id))
        history = VERSIONS_OF.get(kind)
        if history is not None and history not in found.unserved:
            versions = [v for obj in objects for v in found.versions.get(str(obj.get("id")), [])]
            entries.append(await anyio.to_thread.run_sync(_write_kind, storage, history, versions, run_id))
    return tuple(entries), found
