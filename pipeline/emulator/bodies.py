"""REST request bodies checked by the spec's own request schemas (``CreateProject``, ``PatchRole``,
``AclBatchUpdateRequest``, ``Feedback*Item``, ...).

A field the schema lists must have the type, format and enum the spec gives it (a 400 naming the
field otherwise). A field the schema does not list is accepted and dropped unless the schema
says ``additionalProperties: false``: the spec does not forbid extra properties, and the real
API's validators strip them, so clients that send a newer field keep working. Messages use the
same words as the insert checks (``body.name: expected string, got number``).
"""

from __future__ import annotations

from typing import Any, Final

from pipeline.emulator import spec
from pipeline.emulator.validate import BadRequest, date_time, fail, uuid_string
from pipeline.emulator.validate import _type_name as type_name

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "array": (list,),
    "object": (dict,),
}


def request_schema(method: str, path: str) -> dict[str, Any]:
    """The resolved JSON request schema of ``method path`` (a path as the spec spells it)."""
    operation = spec.spec()["paths"][path][method.lower()]
    return spec.resolve(operation["requestBody"]["content"]["application/json"]["schema"])


def _allows_null(node: dict[str, Any]) -> bool:
    return bool(node.get("nullable")) or None in node.get("enum", ()) or node.get("type") == "null"


def check(node: dict[str, Any], value: Any, where: str) -> None:
    """Raise :class:`BadRequest` unless ``value`` fits schema ``node``."""
    if value is None and _allows_null(node):
        return
    node = spec.resolve(node)
    if value is None and _allows_null(node):
        return
    branches = node.get("anyOf") or node.get("oneOf")
    if branches:
        _check_branches(branches, value, where)
    kind = node.get("type")
    if kind is not None:
        if kind == "null" or value is None:
            raise fail(where, f"expected {kind}, got {type_name(value)}")
        if not isinstance(value, _TYPES[kind]) or (isinstance(value, bool) and kind != "boolean"):
            raise fail(where, f"expected {kind}, got {type_name(value)}")
    if "enum" in node and value not in node["enum"]:
        raise fail(where, f"expected one of {', '.join(str(v) for v in node['enum'] if v is not None)}")
    if isinstance(value, str):
        _check_string(node, value, where)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            raise fail(where, f"must be at least {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            raise fail(where, f"must be at most {node['maximum']}")
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            check(node["items"], item, f"{where}[{i}]")
    elif isinstance(value, dict):
        _check_object(node, value, where)


def _check_branches(branches: list[dict[str, Any]], value: Any, where: str) -> None:
    errors = []
    for branch in branches:
        try:
            check(branch, value, where)
        except BadRequest as exc:
            errors.append(exc)
        else:
            return
    if len(errors) == 1:
        raise errors[0]
    raise fail(where, "does not match any form the spec allows")


def _check_string(node: dict[str, Any], value: str, where: str) -> None:
    if node.get("format") == "uuid":
        uuid_string(value, where)
    elif node.get("format") == "date-time":
        date_time(value, where)
    least = node.get("minLength", 0)
    if len(value) < least:
        raise fail(where, "must not be empty" if least == 1 else f"must be at least {least} characters")


def _check_object(node: dict[str, Any], value: dict[str, Any], where: str) -> None:
    properties = node.get("properties", {})
    for name in node.get("required", ()):
        if name not in value:
            raise fail(f"{where}.{name}", "is required")
    extra = node.get("additionalProperties")
    for name, item in value.items():
        if name in properties:
            check(properties[name], item, f"{where}.{name}")
        elif extra is False:
            raise fail(f"{where}.{name}", "unknown field")
        elif isinstance(extra, dict):
            check(extra, item, f"{where}.{name}")


def checked(schema: dict[str, Any], body: Any) -> dict[str, Any]:
    """``body`` checked against ``schema``, reduced to the fields the schema lists."""
    if not isinstance(body, dict):
        raise BadRequest(f"request body: expected object, got {type_name(body)}")
    check(schema, body, "body")
    properties = spec.resolve(schema).get("properties", {})
    return {k: v for k, v in body.items() if k in properties}


#: Read-schema fields the server sets on every object it creates; a create body's value for one
#: is ignored like any unlisted field.
SERVER_FIELDS: Final = frozenset({"id", "org_id", "project_id", "created", "deleted_at", "user_id", "url_slug", "commit"})  # fmt: skip


def create_body(path: str, raw: Any) -> dict[str, Any]:
    """The body of ``POST path`` (a create): the fields its Create schema lists, plus those
    only the object's read schema lists and a client may give (a project's ``settings``),
    each checked against the schema that lists it."""
    body = checked(request_schema("POST", path), raw)
    operation = spec.spec()["paths"][path]["post"]
    read = spec.resolve(operation["responses"]["200"]["content"]["application/json"]["schema"])
    listed = spec.resolve(request_schema("POST", path)).get("properties", {})
    for name, node in read.get("properties", {}).items():
        if name in raw and name not in listed and name not in SERVER_FIELDS:
            check(node, raw[name], f"body.{name}")
            body[name] = raw[name]
    return body
