"""Objects deleted at the source while a run reads them: recorded as gone, not a failure.

A dataset or experiment deleted while a run is unfinished makes every read of it fail (a 400
"unknown dataset id", or a 404), so a scheduled job that resumes the run would fail the same
way night after night, and back up nothing else either. So a read that fails that way asks
the REST API whether the object is still there; only when it is not (404, or marked deleted)
is the object *gone*: its reads stop, the files this run wrote of it are deleted, and the
manifest lists it with ``gone: true`` and no files, while the run finishes the other objects
(and fails, as ever, if any of them is incomplete). Earlier runs keep what they read of it.
Any other failure, or one of an object that is still there, stops the run as before.
"""

from __future__ import annotations

from typing import Any

from pipeline.api.client import BraintrustClient
from pipeline.common import layout
from pipeline.common.errors import ApiError, AuthError, NotFoundError
from pipeline.common.state import ObjectState
from pipeline.common.storage import Storage

#: The failures a read of a deleted object gets (which one depends on the deployment).
_READ_FAILURES = (ApiError, AuthError, NotFoundError)


def leaf(exc: BaseException) -> BaseException:
    """The first error inside (nested) exception groups, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def may_be_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure a read of a deleted object gets."""
    return isinstance(leaf(exc), _READ_FAILURES)


async def deleted_at_source(client: BraintrustClient, obj: ObjectState) -> bool:
    """Whether the object no longer exists at the source (its REST object is not found)."""
    kind = "project" if obj.object_type == "project_logs" else obj.object_type
    try:
        found: Any = await client.get_json(f"/v1/{kind}/{obj.id}")
    except NotFoundError:
        return True
    return isinstance(found, dict) and found.get("deleted_at") is not None


def gone_label(obj: ObjectState) -> str:
    """How a warning names a gone object: its label and id."""
    name = "logs" if obj.object_type == "project_logs" else f"{obj.object_type}:{obj.name}"
    return f"{name} ({obj.id})"


def drop_files(storage: Storage, obj: ObjectState, run_id: str) -> None:
    """Delete every file ``run_id`` wrote of ``obj``, listed in the state or not (one published
    just before a crash is not), and mark its ranges done and empty, so the run holds nothing
    of it: a gone object's, and a discarded run's (``--restart``); its tombstone file too, which
    a stopped run may have written (blocking: run in a thread)."""
    paths = storage.list_files(f"{layout.object_dir(obj.object_type, obj.id, run_id)}/")
    for path in [*paths, layout.tombstone_path(obj.object_type, obj.id, run_id)]:
        try:
            storage.delete(path)
        except FileNotFoundError:
            pass
    for rng in obj.ranges:
        rng.cursor, rng.next_part, rng.rows, rng.done, rng.files = None, 0, 0, True, []
