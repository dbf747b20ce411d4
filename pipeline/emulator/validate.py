"""Request validation: insert events (by the spec's Insert*Event schemas) and REST bodies.

Every check raises :class:`BadRequest` with a message naming the field path and the
problem (``events[3].scores.accuracy: expected number between 0 and 1 or null``), which
the app turns into a 400. Checks run before anything is written, so a bad request
writes nothing.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from typing import Any, Final

from pipeline.emulator import spec
from pipeline.emulator.timestamps import parse_time
from pipeline.querylang.ast import ObjectType


class BadRequest(ValueError):
    """A malformed request; the message is the 400 body."""


Check = Callable[[Any, str], None]

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def fail(where: str, problem: str) -> BadRequest:
    return BadRequest(f"{where}: {problem}")


def any_value(value: Any, where: str) -> None:
    """Arbitrary JSON."""


def nullable(check: Check) -> Check:
    def run(value: Any, where: str) -> None:
        if value is not None:
            check(value, where)

    return run


def string(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise fail(where, f"expected string, got {_type_name(value)}")


def boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise fail(where, f"expected boolean, got {_type_name(value)}")


def number(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(where, f"expected number, got {_type_name(value)}")


def date_time(value: Any, where: str) -> None:
    string(value, where)
    if not _DATE_TIME.match(value):
        raise fail(where, "expected an ISO-8601 date-time")
    try:
        parse_time(value)  # also refuses times that leave the calendar once moved to UTC
    except ValueError:
        raise fail(where, "expected an ISO-8601 date-time") from None


def uuid_string(value: Any, where: str) -> None:
    string(value, where)
    try:
        uuid.UUID(value)
    except ValueError:
        raise fail(where, "expected a uuid") from None


def score(value: Any, where: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise fail(where, "expected number between 0 and 1 or null")


def array_of(item: Check) -> Check:
    def run(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise fail(where, f"expected array, got {_type_name(value)}")
        for i, v in enumerate(value):
            item(v, f"{where}[{i}]")

    return run


def object_of(
    known: dict[str, Check] | None = None, extra: Check | None = any_value, required: tuple[str, ...] = ()
) -> Check:
    """An object whose ``known`` fields pass their checks and other fields pass ``extra``
    (``None`` forbids other fields)."""

    def run(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise fail(where, f"expected object, got {_type_name(value)}")
        for name in required:
            if name not in value:
                raise fail(f"{where}.{name}", "is required")
        for name, v in value.items():
            check = (known or {}).get(name, extra)
            if check is None:
                raise fail(f"{where}.{name}", "unknown field")
            check(v, f"{where}.{name}")

    return run


def one_of(choices: frozenset[str]) -> Check:
    def run(value: Any, where: str) -> None:
        if value not in choices:
            raise fail(where, f"expected one of {', '.join(sorted(choices))}")

    return run


#: Span types the official SDKs write that the spec's ``SpanType`` does not list yet: their
#: generated ``SpanType`` has them, and the Python SDK's ``logger.info()`` writes ``log``.
SDK_SPAN_TYPES: Final = frozenset({"decision", "question", "log"})


def _field_checks() -> dict[str, Check]:
    """The value check of every field an insert event of some object type may carry; the
    enums (span types and purposes, origin object types) are the spec's, span types with the
    SDKs' own."""
    span_types = spec.insert_enum("project_logs", "span_attributes", "type") | SDK_SPAN_TYPES
    origin_types = spec.insert_enum("project_logs", "origin", "object_type")
    purposes = spec.insert_enum("project_logs", "span_attributes", "purpose")
    return {
        "id": nullable(string),
        "created": nullable(date_time),
        "span_id": nullable(string),
        "root_span_id": nullable(string),
        "span_parents": nullable(array_of(string)),
        "input": any_value,
        "output": any_value,
        "expected": any_value,
        "error": any_value,
        "scores": nullable(object_of(extra=score)),
        "metadata": nullable(object_of({"model": nullable(string)})),
        "metrics": nullable(object_of(extra=nullable(number))),
        "tags": nullable(array_of(string)),
        "context": nullable(object_of()),
        "span_attributes": nullable(
            object_of(
                {
                    "name": nullable(string),
                    "type": nullable(one_of(span_types)),
                    "purpose": nullable(one_of(purposes)),
                }
            )
        ),
        "origin": nullable(
            object_of(
                {
                    "object_type": one_of(origin_types),
                    "object_id": uuid_string,
                    "id": string,
                    "_xact_id": nullable(string),
                    "created": nullable(string),
                },
                extra=None,
                required=("object_type", "object_id", "id"),
            )
        ),
        "facets": nullable(object_of(extra=nullable(string))),
        "_object_delete": nullable(boolean),
        "_is_merge": nullable(boolean),
        "_merge_paths": nullable(array_of(array_of(string))),
        "_array_delete": nullable(
            array_of(object_of({"path": array_of(string), "delete": array_of(any_value)}, extra=None))
        ),
        "_parent_id": nullable(string),
        "classifications": nullable(
            object_of(
                extra=array_of(
                    object_of(
                        {
                            "id": string,
                            "label": string,
                            "confidence": nullable(number),
                            "metadata": nullable(object_of()),
                        },
                        required=("id",),
                    )
                )
            )
        ),
    }


@functools.cache
def event_checks(object_type: ObjectType, *, logs3: bool = False) -> dict[str, Check]:
    """The check of each field the spec lets an insert event of ``object_type`` carry; any
    other field is unknown. ``logs3``: also the row fields the SDKs write through ``/logs3``
    that the spec's insert events do not list (``spec.LOGS3_FIELDS``)."""
    checks = _field_checks()
    fields = spec.row_fields(object_type)
    extra = [name for name in spec.LOGS3_FIELDS if name in fields.read] if logs3 else []
    return {name: checks[name] for name in (*fields.insert, *extra)}


def listed_event(object_type: ObjectType, event: Any, where: str, *, logs3: bool = False) -> dict[str, Any]:
    """One insert event of ``object_type`` (``logs3``: as ``/logs3`` takes it, see
    :func:`event_checks`), checked, with only the fields the spec's events list.

    The spec's insert events allow properties they do not list (no ``additionalProperties:
    false``), and clients send some (the generated client an experiment event's
    ``dataset_record_id``, the JavaScript SDK a ``/logs3`` row's ``datasetRecordId``): they are
    accepted and not stored."""
    if not isinstance(event, dict):
        raise fail(where, f"expected object, got {_type_name(event)}")
    checks = event_checks(object_type, logs3=logs3)
    listed = {name: value for name, value in event.items() if name in checks}
    for name, value in listed.items():
        checks[name](value, f"{where}.{name}")
    return listed


def events_list(body: Any, key: str = "events") -> list[Any]:
    """``body[key]`` as a list, or a 400 explaining why not."""
    if not isinstance(body, dict):
        raise BadRequest(f"request body: expected object, got {_type_name(body)}")
    events = body.get(key)
    if not isinstance(events, list):
        raise fail(key, f"expected array, got {_type_name(events)}")
    return events


def check_body(body: Any, fields: dict[str, Check], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validate a REST body: known fields only, each of the right type."""
    object_of(fields, extra=None, required=required)(body, "body")
    result: dict[str, Any] = body
    return result
