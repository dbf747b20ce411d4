"""Typed keys of a job file: what each accepts, from TOML or from text (environment, flags).

A key's kind checks a TOML value (``check``) or parses the text of an environment variable or
``--set`` flag (``parse``); both raise :class:`~pipeline.common.defaults.BadValue` carrying
what was expected, which the loader turns into ``FILE:job.NAME.key: expected integer, got "x"``.
Keys that are tunable settings take their kind from their record (:func:`setting`), so a job
file and the command line accept exactly the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.common.defaults import BadValue, Setting
from pipeline.common.errors import UsageError


@dataclass(frozen=True)
class Kind:
    """One value type: ``check`` takes a TOML value, ``parse`` takes text."""

    expected: str
    check: Callable[[Any], Any]
    parse: Callable[[str], Any]


def setting(record: Setting[Any]) -> Kind:
    """The kind of a key that is a tunable setting: its type and range are the record's."""
    return Kind(record.expected, record.check, record.parse)


def string() -> Kind:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise BadValue("a non-empty string", value)
        return value

    return Kind("a non-empty string", check, check)


def choice(*allowed: str) -> Kind:
    expected = "one of " + ", ".join(f'"{a}"' for a in allowed)

    def check(value: Any) -> str:
        if value not in allowed:
            raise BadValue(expected, value)
        return str(value)

    return Kind(expected, check, check)


def _commas(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def string_list(split: Callable[[str], list[str]] = _commas) -> Kind:
    """A string or an array of strings; text (``--set``, the environment) is cut into items by
    ``split`` (on commas unless told)."""
    expected = "a string or an array of strings"

    def check(value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
            raise BadValue(expected, value)
        return tuple(items)

    def parse(text: str) -> tuple[str, ...]:
        try:
            parts = split(text)
        except UsageError:
            raise BadValue("a comma-separated list (a name holding a comma quoted as a JSON string)", text) from None  # fmt: skip
        if not all(parts):
            raise BadValue("a comma-separated list of non-empty names", text)
        return check(parts)

    return Kind(expected, check, parse)
