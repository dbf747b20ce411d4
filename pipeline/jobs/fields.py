"""Typed keys of a job file: what each accepts, from TOML or from text (environment, flags).

A key's kind checks a TOML value (``check``) or parses the text of an environment variable or
``--set`` flag (``parse``); both raise :class:`BadValue` carrying what was expected, which
the loader turns into ``FILE:job.NAME.key: expected integer, got "x"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class BadValue(Exception):
    """A value of the wrong type or outside its range; ``expected`` says what would do."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"expected {expected}, got {show(value)}")
        self.expected = expected


def show(value: Any) -> str:
    """A value as a user would write it in TOML: strings quoted, booleans lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@dataclass(frozen=True)
class Kind:
    """One value type: ``check`` takes a TOML value, ``parse`` takes text."""

    expected: str
    check: Callable[[Any], Any]
    parse: Callable[[str], Any]


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


def integer(low: int = 1, high: int | None = None) -> Kind:
    expected = "integer" if high is None else f"integer between {low} and {high}"

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadValue("integer", value)
        if value < low or (high is not None and value > high):
            raise BadValue(expected if high is not None else f"integer >= {low}", value)
        return value

    def parse(text: str) -> int:
        try:
            number = int(text.strip())
        except ValueError:
            raise BadValue("integer", text) from None
        return check(number)

    return Kind(expected, check, parse)


def number(low: float = 0.0) -> Kind:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadValue("number", value)
        if value <= low:
            raise BadValue(f"number > {low:g}", value)
        return float(value)

    def parse(text: str) -> float:
        try:
            parsed = float(text.strip())
        except ValueError:
            raise BadValue("number", text) from None
        return check(parsed)

    return Kind("number", check, parse)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def boolean() -> Kind:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise BadValue("true or false", value)
        return value

    def parse(text: str) -> bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise BadValue("true or false", text)

    return Kind("true or false", check, parse)


def string_list() -> Kind:
    """A string or an array of strings; text is split on commas."""
    expected = "a string or an array of strings"

    def check(value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
            raise BadValue(expected, value)
        return tuple(items)

    def parse(text: str) -> tuple[str, ...]:
        return check([part.strip() for part in text.split(",")])

    return Kind(expected, check, parse)
