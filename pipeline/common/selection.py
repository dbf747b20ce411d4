"""The ``--objects`` and ``--to-object`` syntax: the one place that knows it.

``logs`` (or ``project_logs``), ``datasets``, ``experiments`` select every object of a kind;
``dataset:NAME`` and ``experiment:NAME`` select one. ``--objects`` takes a comma list of these;
``--to-object`` takes exactly one object (``logs``, ``dataset:NAME`` or ``experiment:NAME``).
Items are stripped of surrounding blanks; a name holding a comma, or blanks at its ends, is
written as a JSON string: ``dataset:"a, b"``, ``dataset:" padded "``.

``--objects`` also names kinds of project configuration (:mod:`pipeline.common.config_kinds`):
``prompts``, ``functions``, ``project_scores``, ``project_tags``, ``views``, ``span_iframes``,
``automations``, ``settings``, or ``config`` for all of them. Those are not row objects:
:func:`parse_selection` passes over them and :func:`config_selection` returns them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pipeline.common.config_kinds import ALL_CONFIG, BY_SELECTOR, KINDS
from pipeline.common.errors import UsageError
from pipeline.querylang.ast import ObjectType

_KINDS: dict[str, ObjectType] = {"dataset": "dataset", "experiment": "experiment"}
_PLURALS: dict[str, ObjectType] = {"datasets": "dataset", "experiments": "experiment"}
_EXPECTED = (
    "logs, datasets, experiments, dataset:NAME, experiment:NAME, "
    + ", ".join(kind.selector for kind in KINDS)
    + f" or {ALL_CONFIG}"
)


@dataclass(frozen=True)
class Selector:
    """One ``--objects`` item: every object of a kind (``name`` None), or the one called ``name``."""

    object_type: ObjectType
    name: str | None = None


def split_items(text: str, option: str = "--objects") -> list[str]:
    """The items of a comma list, stripped; a comma inside a quoted name (a JSON string right
    after ``dataset:`` or ``experiment:``) does not end its item. A quote elsewhere is a
    character of the name."""
    items: list[str] = []
    start = at = 0
    while at < len(text):
        if text[at] == '"' and _QUOTABLE.fullmatch(text, start, at):
            try:
                _, at = _STRING.raw_decode(text, at)
            except ValueError:
                raise UsageError(
                    f"{option}: unterminated or malformed quoted name in {text[start:]!r}"
                ) from None
            continue
        if text[at] == ",":
            items.append(text[start:at].strip())
            start = at + 1
        at += 1
    items.append(text[start:].strip())
    return items


_STRING = json.JSONDecoder()
#: What comes before a quoted name in an item: its kind and the colon (blanks before them).
_QUOTABLE = re.compile(r"\s*(?:dataset|experiment):")


def _name(text: str, option: str) -> str:
    """A name as written: a JSON string is decoded, anything else taken as it is."""
    if not text.startswith('"'):
        return text
    try:
        name, end = _STRING.raw_decode(text)
    except ValueError:
        end = -1
    if end != len(text) or not isinstance(name, str):
        raise UsageError(f"{option}: {text!r} is not one quoted name (write it as a JSON string)")
    return name


def parse_selector(item: str, option: str = "--objects") -> Selector | None:
    """One item, or None when it is not of the syntax."""
    kind, _, name = item.partition(":")
    name = _name(name, option)
    if item in ("logs", "project_logs"):
        return Selector("project_logs")
    if item in _PLURALS:
        return Selector(_PLURALS[item])
    if kind in _KINDS and name:
        return Selector(_KINDS[kind], name)
    return None


def _is_config(item: str) -> bool:
    return item == ALL_CONFIG or item in BY_SELECTOR


def parse_selection(text: str, option: str = "--objects") -> list[Selector]:
    """Parse a comma list of row selectors; blank items and configuration kinds are passed
    over (:func:`config_selection` reads those)."""
    selectors: list[Selector] = []
    for item in split_items(text, option):
        if not item or _is_config(item):
            continue
        selector = parse_selector(item, option)
        if selector is None:
            raise UsageError(f"{option}: cannot understand {item!r} (expected {_EXPECTED})")
        selectors.append(selector)
    return selectors


def parse_one_object(text: str, option: str = "--to-object") -> tuple[ObjectType, str | None]:
    """One named destination: ``logs`` | ``dataset:NAME`` | ``experiment:NAME``."""
    selector = parse_selector(text.strip(), option)
    if selector is None or (selector.object_type != "project_logs" and selector.name is None):
        raise UsageError(f"{option}: expected logs, dataset:NAME or experiment:NAME, got {text!r}")
    return selector.object_type, selector.name


def config_selection(text: str | None) -> list[str]:
    """The configuration kinds (API names, in recreation order) a comma list names; no list
    (an import's default: everything) names them all."""
    items = set(split_items(text or ""))
    if text is None or ALL_CONFIG in items:
        return [kind.name for kind in KINDS]
    return [kind.name for kind in KINDS if kind.selector in items]
