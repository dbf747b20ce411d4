"""The Braintrust OpenAPI spec the emulator ships, and the row tables it derives from it.

The emulator checks inserts and shapes the rows it stores by what the spec says, never
by the client's own tables, so a mistake in the client's tables shows up against the
emulator instead of agreeing with it by construction. For each object type the tables
come from its operations: ``POST /v1/{type}/{id}/insert`` gives the insert event schema
(``Insert*Event``) and the path parameter naming the object; ``POST /v1/{type}/{id}/fetch``
gives the schema of a row as read back (``*Event``). The spec is read once, on first use.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from pipeline.querylang.ast import OBJECT_TYPES, ObjectType

SPEC_FILE: Final = "openapi.json"

#: The org a row belongs to. The spec lists it among a project log row's required ids, but
#: it comes from the caller's API key and no request names it, so it is no object key.
ORG_FIELD: Final = "org_id"


@dataclass(frozen=True)
class RowFields:
    """What the spec says about the rows of one object type."""

    #: Every field an insert event may carry.
    insert: frozenset[str]
    #: Insert fields that are instructions to the server (``_is_merge``, ...), never stored:
    #: the spec marks them with a leading underscore and does not list them on read rows.
    control: frozenset[str]
    #: The fields of a row as read back, in the spec's order.
    read: tuple[str, ...]
    #: Read fields no event may set: the server stamps them (``_xact_id``, ``is_root``, keys).
    server: frozenset[str]
    #: The fields naming the object a row belongs to: the required ids the server stamps.
    keys: tuple[str, ...]
    #: The key holding the id the insert path names (``project_id`` for project logs).
    object_id_field: str
    #: Keys the spec allows exactly one value for (project logs' ``log_id: "g"``).
    fixed: Mapping[str, str]


@functools.cache
def spec() -> dict[str, Any]:
    """The parsed spec shipped beside this module."""
    loaded: dict[str, Any] = json.loads(resources.files("pipeline.emulator").joinpath(SPEC_FILE).read_bytes())
    return loaded


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` followed and its ``allOf`` parts merged into one schema."""
    while "$ref" in node:
        target: Any = spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    if "allOf" not in node:
        return node
    merged = {k: v for k, v in node.items() if k != "allOf"}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for part in [*map(resolve, node["allOf"]), node]:
        properties.update(part.get("properties", {}))
        required.extend(part.get("required", ()))
    return {**merged, "properties": properties, "required": required}


def _operation(object_type: ObjectType, action: str) -> tuple[str, dict[str, Any]]:
    """The path parameter and the POST operation of ``/v1/{object_type}/{param}/{action}``."""
    for path, item in spec()["paths"].items():
        parts = path.split("/")
        if len(parts) == 5 and parts[1:3] == ["v1", object_type] and parts[4] == action and "post" in item:
            return parts[3].strip("{}"), item["post"]
    raise LookupError(f"the spec has no POST /v1/{object_type}/{{id}}/{action}")


def _event_schema(body: dict[str, Any]) -> dict[str, Any]:
    """The event schema inside an insert request or fetch response body: its ``events`` items."""
    envelope = resolve(body["content"]["application/json"]["schema"])
    return resolve(envelope["properties"]["events"]["items"])


def insert_schema(object_type: ObjectType) -> dict[str, Any]:
    """The schema of one insert event of ``object_type``."""
    return _event_schema(_operation(object_type, "insert")[1]["requestBody"])


def read_schema(object_type: ObjectType) -> dict[str, Any]:
    """The schema of one row of ``object_type`` as read back."""
    return _event_schema(_operation(object_type, "fetch")[1]["responses"]["200"])


#: Row fields the spec's rows carry and its insert events do not list, which the official
#: SDKs write through ``/logs3`` all the same: an ``Eval``'s classifier results go on each root
#: span as ``classifications`` (the Python SDK's ``framework.py``, the JavaScript SDK's
#: ``rootSpan.log({ classifications })``).
LOGS3_FIELDS: Final = ("classifications",)


@functools.cache
def row_fields(object_type: ObjectType) -> RowFields:
    """The tables for ``object_type``, derived once."""
    insert_props = insert_schema(object_type)["properties"]
    read = read_schema(object_type)
    read_props = read["properties"]
    insert = frozenset(insert_props)
    server = frozenset(read_props) - insert
    keys = tuple(
        name
        for name in read_props
        if name in server and name in read.get("required", ()) and name.endswith("_id")
        and not name.startswith("_") and name != ORG_FIELD
    )  # fmt: skip
    fixed: dict[str, str] = {}
    for name in keys:
        values: list[str] = resolve(read_props[name]).get("enum", [])
        if len(values) == 1:
            fixed[name] = values[0]
    object_id_field = _operation(object_type, "insert")[0]
    if object_id_field not in keys:
        raise LookupError(f"the spec's {object_type} rows do not carry {object_id_field}")
    return RowFields(
        insert=insert,
        control=frozenset(name for name in insert if name.startswith("_") and name not in read_props),
        read=tuple(read_props),
        server=server,
        keys=keys,
        object_id_field=object_id_field,
        fixed=fixed,
    )


@functools.cache
def all_key_fields() -> frozenset[str]:
    """The key fields of every object type: what a row names its object with."""
    return frozenset(name for t in OBJECT_TYPES for name in row_fields(t).keys)


def insert_enum(object_type: ObjectType, *path: str) -> frozenset[str]:
    """The non-null values the spec allows at ``path`` inside an insert event of ``object_type``
    (``insert_enum("project_logs", "span_attributes", "type")``)."""
    node = insert_schema(object_type)
    for name in path:
        node = resolve(resolve(node)["properties"][name])
    return frozenset(v for v in node["enum"] if v is not None)
